"""IMAP polling against a minimal in-process IMAP4rev1 server: exactly-once import across restarts."""

from __future__ import annotations

import asyncio
import re

import pytest

from scrm.domain import InboundMessage


class TinyImapServer:
    """Just enough IMAP4rev1 for a poller: LOGIN, SELECT, UID SEARCH/FETCH/STORE, LOGOUT."""

    def __init__(self, user: str = "support@example.com", password: str = "imap-secret") -> None:
        self.user, self.password = user, password
        self.uidvalidity = 1
        self.next_uid = 1
        self.mails: list[dict] = []  # {"uid", "raw", "flags"}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.logins = 0

    def add(self, raw: bytes) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.mails.append({"uid": uid, "raw": raw, "flags": set()})
        return uid

    def seen(self, uid: int) -> bool:
        return next("\\Seen" in m["flags"] for m in self.mails if m["uid"] == uid)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(line: str | bytes) -> None:
            writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")

        send("* OK [CAPABILITY IMAP4rev1] tiny ready")
        authed = False
        try:
            while line := await reader.readline():
                parts = line.decode().strip().split(" ")
                tag, cmd, args = parts[0], parts[1].upper(), parts[2:]
                if cmd == "CAPABILITY":
                    send("* CAPABILITY IMAP4rev1 UIDPLUS")
                    send(f"{tag} OK CAPABILITY completed")
                elif cmd == "LOGIN":
                    authed = args[0].strip('"') == self.user and args[1].strip('"') == self.password
                    self.logins += authed
                    send(f"{tag} OK LOGIN completed" if authed else f"{tag} NO [AUTHENTICATIONFAILED] bad")
                elif not authed:
                    send(f"{tag} BAD not authenticated")
                elif cmd == "SELECT":
                    send(f"* {len(self.mails)} EXISTS")
                    send(f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid")
                    send(f"* OK [UIDNEXT {self.next_uid}] next")
                    send(f"{tag} OK [READ-WRITE] SELECT completed")
                elif cmd == "UID":
                    self._uid(tag, args[0].upper(), args[1:], send)
                elif cmd == "LOGOUT":
                    send("* BYE bye")
                    send(f"{tag} OK LOGOUT completed")
                    break
                else:
                    send(f"{tag} BAD unknown command")
                await writer.drain()
        finally:
            writer.close()

    def _uid(self, tag: str, sub: str, args: list[str], send) -> None:
        if sub == "SEARCH":
            args = [a for a in args if a.upper() not in ("CHARSET", "UTF-8")]
            if args[0].upper() == "UNSEEN":
                uids = [m["uid"] for m in self.mails if "\\Seen" not in m["flags"]]
            else:  # UID n:*  -- like real servers, always includes the newest mail
                start = int(re.match(r"(\d+):\*", args[1]).group(1))
                uids = [m["uid"] for m in self.mails if m["uid"] >= start] or [m["uid"] for m in self.mails[-1:]]
            send("* SEARCH " + " ".join(map(str, uids)))
            send(f"{tag} OK SEARCH completed")
        elif sub == "FETCH":
            for seq, m in enumerate(self.mails, 1):
                if m["uid"] == int(args[0]):
                    send(f"* {seq} FETCH (UID {m['uid']} BODY[] {{{len(m['raw'])}}}".encode() + b"\r\n" + m["raw"] + b")")
            send(f"{tag} OK FETCH completed")
        elif sub == "STORE":
            for m in self.mails:
                if m["uid"] == int(args[0]):
                    m["flags"].add("\\Seen")
            send(f"{tag} OK STORE completed")
        else:
            send(f"{tag} BAD unsupported")


@pytest.fixture
async def imap():
    server = TinyImapServer()
    await server.start()
    yield server
    await server.stop()


def mail(n: int) -> bytes:
    return (f"From: Ann <ann@example.com>\r\nTo: support@example.com\r\nMessage-ID: <m{n}@example.com>\r\n"
            f"Subject: 问题 {n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n第{n}封邮件\r\n").encode()


def imap_adapter(adapter_factory, runtime, server):
    return adapter_factory(runtime, imap_host="127.0.0.1", imap_port=server.port, imap_ssl=False,
                           imap_poll_interval=0.01)


async def poll_once(adapter, sink) -> None:
    gen = adapter.poll(sink)
    await anext(gen)
    await gen.aclose()


async def test_imap_imports_unread_mail_and_survives_restart(adapter_factory, runtime, sink, imap):
    imap.add(mail(1))
    imap.add(mail(2))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert [i.external_id for i in sink.items] == ["m1@example.com", "m2@example.com"]
    assert isinstance(sink.items[0], InboundMessage) and sink.items[0].text == "第1封邮件"
    assert imap.seen(1) and imap.seen(2)
    state = runtime.state.values["imap:INBOX"]
    assert state["uidvalidity"] == 1 and state["last_uid"] == 2

    # A restarted process (new adapter, same durable state) neither re-imports nor skips.
    imap.add(mail(3))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert [i.external_id for i in sink.items] == ["m1@example.com", "m2@example.com", "m3@example.com"]
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert len(sink.items) == 3


async def test_already_read_mail_is_not_imported_on_first_run(adapter_factory, runtime, sink, imap):
    imap.add(mail(1))
    imap.mails[0]["flags"].add("\\Seen")
    imap.add(mail(2))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert [i.external_id for i in sink.items] == ["m2@example.com"]


async def test_failed_import_stays_unread_and_is_retried(adapter_factory, runtime, sink, imap):
    imap.add(mail(1))
    imap.add(mail(2))
    sink.fail = 1  # the first mail fails once
    adapter = imap_adapter(adapter_factory, runtime, imap)
    await poll_once(adapter, sink)
    assert [i.external_id for i in sink.items] == ["m2@example.com"]
    assert not imap.seen(1) and runtime.state.values["imap:INBOX"]["retry"] == {"1": 1}
    await poll_once(adapter, sink)
    assert [i.external_id for i in sink.items] == ["m2@example.com", "m1@example.com"]
    assert imap.seen(1) and runtime.state.values["imap:INBOX"]["retry"] == {}


async def test_mail_failing_three_times_is_skipped_and_reported(adapter_factory, runtime, sink, imap, caplog):
    imap.add(mail(1))
    sink.fail = 3
    adapter = imap_adapter(adapter_factory, runtime, imap)
    for _ in range(4):
        await poll_once(adapter, sink)
    state = runtime.state.values["imap:INBOX"]
    assert state["failed"] == {"1": 3} and state["retry"] == {}
    assert sink.items == [] and not imap.seen(1)
    assert "failed to import 3 times" in caplog.text


async def test_uidvalidity_change_rereads_unread_mail(adapter_factory, runtime, sink, imap):
    imap.add(mail(1))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    imap.uidvalidity = 2
    imap.add(mail(2))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert [i.external_id for i in sink.items] == ["m1@example.com", "m2@example.com"]
    assert runtime.state.values["imap:INBOX"]["uidvalidity"] == 2


async def test_bad_login_does_not_crash_the_poller(adapter_factory, runtime, sink, imap, caplog):
    imap.password = "other"
    imap.add(mail(1))
    await poll_once(imap_adapter(adapter_factory, runtime, imap), sink)
    assert sink.items == [] and "LOGIN failed" in caplog.text
    assert "imap-secret" not in caplog.text
