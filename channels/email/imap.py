"""IMAP polling with aioimaplib: import each new mail exactly once, across restarts.

State per folder (in the inbox's DurableState, written after the sink returned):
{"uidvalidity", "last_uid", "retry": {uid: failures}, "failed": {uid: failures}}. A mail whose
import raises stays unread and is retried on the next polls; after MAX_FAILURES it is skipped and
reported. A changed UIDVALIDITY (mailbox rebuilt) restarts from the unread mail; ingest dedups
by Message-ID, so nothing is doubled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aioimaplib

from channels.base import DurableState
from channels.email.config import EmailSecrets, EmailSettings

log = logging.getLogger(__name__)

MAX_FAILURES = 3
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UIDNEXT = re.compile(rb"UIDNEXT (\d+)")


class ImapError(Exception):
    """The IMAP server refused a command (login, select, ...)."""


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        detail = b" ".join(x for x in response.lines if isinstance(x, bytes)).decode("utf-8", "replace")
        raise ImapError(f"IMAP {what} failed: {detail[:200]}")
    return response


def _numbers(response: Any) -> list[int]:
    uids: list[int] = []
    for line in response.lines:
        if isinstance(line, bytes) and line.upper().startswith(b"SEARCH"):
            uids += [int(x) for x in line.split()[1:] if x.isdigit()]
        elif isinstance(line, bytes) and line.split()[:1] and all(x.isdigit() for x in line.split()):
            uids += [int(x) for x in line.split()]
    return uids


class ImapPoller:
    """One mailbox folder; call `poll_once` repeatedly."""

    def __init__(
        self,
        settings: EmailSettings,
        secrets: EmailSecrets,
        state: DurableState,
        import_mail: Callable[[bytes], Awaitable[object]],
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.state = state
        self.import_mail = import_mail
        self.client: aioimaplib.IMAP4 | None = None
        self.state_key = f"imap:{settings.imap_folder}"

    async def connect(self) -> aioimaplib.IMAP4:
        """Open the connection (SSL or STARTTLS) and log in."""
        s = self.settings
        host = s.imap_host or "localhost"
        if s.imap_ssl:
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                host, s.imap_port or 993, ssl_context=ssl.create_default_context(), timeout=30
            )
        else:
            client = aioimaplib.IMAP4(host, s.imap_port or 143, timeout=30)
        await client.wait_hello_from_server()
        if s.imap_starttls and not s.imap_ssl:
            await self._starttls(client, host)
        _check(await client.login(s.imap_username or s.address, self.secrets.imap_password or ""), "LOGIN")
        self.client = client
        return client

    async def _starttls(self, client: aioimaplib.IMAP4, host: str) -> None:
        # aioimaplib has no STARTTLS: issue the command, then upgrade the transport in place.
        _check(await client.protocol.simple_command("STARTTLS"), "STARTTLS")
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            client.protocol.transport, client.protocol, ssl.create_default_context(), server_hostname=host
        )
        client.protocol.transport = transport

    async def close(self) -> None:
        """Log out (best effort)."""
        client, self.client = self.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.logout(), 5)
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass

    async def _fetch(self, client: aioimaplib.IMAP4, uid: int) -> bytes | None:
        # BODY.PEEK leaves the mail unread until it is imported.
        response = _check(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), "FETCH")
        for line in response.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None

    async def poll_once(self) -> int:
        """Import new (and retry failed) mail once; returns how many mails were imported."""
        client = self.client if self.client is not None else await self.connect()
        select = _check(await client.select(self.settings.imap_folder), "SELECT")
        head = b" ".join(x for x in select.lines if isinstance(x, bytes))
        match = _UIDVALIDITY.search(head)
        uidvalidity = int(match.group(1)) if match else 0
        st: dict[str, Any] = dict(await self.state.get(self.state_key) or {})
        if st.get("uidvalidity") != uidvalidity:
            if "uidvalidity" in st:
                log.warning("IMAP UIDVALIDITY of %s changed; re-reading unread mail", self.settings.imap_folder)
            unseen = _numbers(_check(await client.uid_search("UNSEEN"), "SEARCH"))
            nxt = _UIDNEXT.search(head)
            high = int(nxt.group(1)) - 1 if nxt else max(unseen, default=0)
            st = {"uidvalidity": uidvalidity, "last_uid": high,
                  "retry": {str(u): 0 for u in unseen if u <= high}, "failed": {}}
            await self.state.set(self.state_key, st)
        last = int(st["last_uid"])
        retry: dict[str, int] = dict(st.get("retry", {}))
        failed: dict[str, int] = dict(st.get("failed", {}))
        # "UID n:*" always returns the newest mail, even below n: filter.
        new = [u for u in _numbers(_check(await client.uid_search(f"UID {last + 1}:*"), "SEARCH")) if u > last]
        todo = sorted({int(u) for u in retry} | set(new))[: self.settings.imap_batch_size]
        imported = 0
        for uid in todo:
            raw = await self._fetch(client, uid)
            if raw is not None:
                try:
                    await self.import_mail(raw)
                except Exception:  # noqa: BLE001 - one bad mail must not stop the poller
                    count = retry.get(str(uid), 0) + 1
                    if count >= MAX_FAILURES:
                        log.error("IMAP mail UID %s in %s failed to import %d times; skipped",
                                  uid, self.settings.imap_folder, count, exc_info=True)
                        retry.pop(str(uid), None)
                        failed[str(uid)] = count
                    else:
                        log.warning("IMAP mail UID %s failed to import (attempt %d); will retry",
                                    uid, count, exc_info=True)
                        retry[str(uid)] = count
                else:
                    imported += 1
                    retry.pop(str(uid), None)
                    await client.uid("store", str(uid), "+FLAGS", r"(\Seen)")
            else:
                retry.pop(str(uid), None)  # expunged meanwhile
            last = max(last, uid)
            st = {"uidvalidity": uidvalidity, "last_uid": last, "retry": retry, "failed": failed}
            await self.state.set(self.state_key, st)
        return imported
