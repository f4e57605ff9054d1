"""Email end to end: SMTP in -> conversation -> agent reply over SMTP -> customer replies thread back."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import aiosmtplib
import pytest

from channels.email.smtp_server import SmtpReceiver
from scrm.context import AppContext
from scrm.db.models import Inbox
from scrm.pollers import PollerManager
from tests.conftest import free_port, make_inbox, wait_for
from tests.integration.helpers_integration import (
    agent_reply,
    conversations,
    deliver_all,
    deliveries,
    drop_bot_answers,
    identity,
    inbound,
    take_over,
    wait_inbound,
)

SUPPORT = "support@example.com"
ALICE = "alice@customer.example"


class Mailbox:
    """The customers' mail server: records every mail our inbox sends."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.receiver = SmtpReceiver(self._record, host="127.0.0.1", port=0, max_message_bytes=10_000_000,
                                     allowed_recipients=["@customer.example", "@partner.example"])

    async def _record(self, raw: bytes) -> None:
        self.mails.append(email.message_from_bytes(raw, _class=EmailMessage, policy=default_policy))


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    await box.receiver.start()
    yield box
    await box.receiver.stop()


@pytest.fixture
async def inbox(ctx: AppContext, mailbox: Mailbox) -> AsyncIterator[Inbox]:
    """An email inbox receiving over SMTP (started by the poller manager) and sending to `mailbox`."""
    box = await make_inbox(ctx, "email", name="Support 客服", secrets={}, settings={
        "address": SUPPORT, "from_name": "客服 Support", "smtp_host": "127.0.0.1", "smtp_port": mailbox.receiver.port,
        "smtp_starttls": False, "receive_smtp": True, "smtp_listen_port": free_port(),
    })
    manager = PollerManager(ctx, interval=60)
    await manager.tick()
    yield box
    await manager.stop_all()


async def mail_in(inbox: Inbox, raw: bytes | EmailMessage, sender: str = ALICE) -> None:
    """Hand a mail to the inbox's SMTP listener like a forwarding MTA (retrying until it listens)."""
    port = inbox.settings["smtp_listen_port"]
    data = raw.as_bytes() if isinstance(raw, EmailMessage) else raw
    for _ in range(50):
        try:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=5) as smtp:
                await smtp.sendmail(sender, [SUPPORT], data)  # sender "" is the null return path of a DSN
            return
        except aiosmtplib.SMTPConnectError:
            await asyncio.sleep(0.05)
    raise AssertionError("the inbox's SMTP listener did not start")


def customer_mail(subject: str, body: str, *, sender: str = ALICE, msg_id: str, cc: str | None = None,
                  references: list[str] | None = None, extra: dict[str, str] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{msg_id}>"
    if references:
        msg["In-Reply-To"] = f"<{references[-1]}>"
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body, charset="utf-8")
    return msg


def dsn(original_message_id: str, recipient: str = ALICE) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\nTo: support@example.com\r\n"
        f"Message-ID: <dsn-{original_message_id}>\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="RPT"\r\n\r\n'
        "--RPT\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
        "--RPT\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown\r\n\r\n"
        "--RPT\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: {recipient}\r\nMessage-ID: <{original_message_id}>\r\n\r\n--RPT--\r\n"
    ).encode()


async def first_exchange(ctx: AppContext, client: Any, headers: dict[str, str], inbox: Inbox,
                         mailbox: Mailbox, cc: str | None = None) -> tuple[int, EmailMessage]:
    """Alice writes; the agent answers; returns (conversation id, the mail Alice received)."""
    await mail_in(inbox, customer_mail("退款问题 Refund", "我的订单还没有退款。", msg_id="a1@customer.example", cc=cc))
    (msg,) = await wait_inbound(ctx, inbox.id)
    cid = msg.conversation_id
    await drop_bot_answers(ctx, cid)
    await take_over(client, headers, cid)
    await agent_reply(client, headers, cid, "您好，退款已在处理中。")
    await deliver_all(ctx)
    answers = [m for m in mailbox.mails if m["To"] == ALICE]
    assert len(answers) == 1
    return cid, answers[0]


async def test_reply_goes_out_threaded_and_the_answer_comes_back(client, ctx, inbox, mailbox, admin_headers) -> None:
    cid, sent = await first_exchange(ctx, client, admin_headers, inbox, mailbox)
    assert sent["In-Reply-To"] == "<a1@customer.example>"
    assert "<a1@customer.example>" in sent["References"]
    assert f"[#{cid}]" in sent["Subject"] and sent["Subject"].startswith("Re:")
    assert sent["From"].addresses[0].addr_spec == SUPPORT and sent["From"].addresses[0].display_name == "客服 Support"
    assert "退款已在处理中" in sent.get_content()
    ours = sent["Message-ID"].strip("<>")

    # Alice answers from a client that drops the subject token but keeps References.
    await mail_in(inbox, customer_mail("Re: 退款", "收到，谢谢！\n\n> 您好，退款已在处理中。", msg_id="a2@customer.example",
                                       references=["a1@customer.example", ours]))
    msgs = await wait_inbound(ctx, inbox.id, 2)
    assert {m.conversation_id for m in msgs} == {cid}
    assert msgs[-1].text == "收到，谢谢！"
    assert len(await conversations(ctx, inbox.id)) == 1


async def test_unreferenced_mail_opens_a_new_conversation(client, ctx, inbox, mailbox, admin_headers) -> None:
    await mail_in(inbox, customer_mail("问题一", "第一个问题", msg_id="q1@customer.example"))
    await mail_in(inbox, customer_mail("问题二", "另一个问题", msg_id="q2@customer.example"))
    msgs = await wait_inbound(ctx, inbox.id, 2)
    assert msgs[0].conversation_id != msgs[1].conversation_id


async def test_stranger_replying_to_the_thread_gets_own_conversation(client, ctx, inbox, mailbox,
                                                                    admin_headers) -> None:
    cid, sent = await first_exchange(ctx, client, admin_headers, inbox, mailbox)
    ours = sent["Message-ID"].strip("<>")
    await mail_in(inbox, customer_mail(sent["Subject"], "我也有同样的问题", sender="mallory@partner.example",
                                       msg_id="m1@partner.example", references=[ours]), sender="mallory@partner.example")
    msgs = await wait_inbound(ctx, inbox.id, 2)
    assert msgs[-1].conversation_id != cid
    assert len(await conversations(ctx, inbox.id)) == 2


async def test_cc_participant_joins_the_conversation(client, ctx, inbox, mailbox, admin_headers) -> None:
    cid, sent = await first_exchange(ctx, client, admin_headers, inbox, mailbox, cc="bob@partner.example")
    ours = sent["Message-ID"].strip("<>")
    await mail_in(inbox, customer_mail(sent["Subject"], "补充一下订单号：1024", sender="bob@partner.example",
                                       msg_id="b1@partner.example", references=["a1@customer.example", ours]),
                  sender="bob@partner.example")
    msgs = await wait_inbound(ctx, inbox.id, 2)
    assert msgs[-1].conversation_id == cid
    assert len(await conversations(ctx, inbox.id)) == 1


async def test_bounces_fail_the_delivery_and_twice_make_the_address_unreachable(client, ctx, inbox, mailbox,
                                                                                admin_headers) -> None:
    cid, sent = await first_exchange(ctx, client, admin_headers, inbox, mailbox)
    await agent_reply(client, admin_headers, cid, "还需要其他帮助吗？")
    await deliver_all(ctx)
    first_id, second_id = [m["Message-ID"].strip("<>") for m in mailbox.mails if m["To"] == ALICE]

    await mail_in(inbox, dsn(first_id), sender="")

    async def failed() -> list[Any]:
        return [d for d in await deliveries(ctx, conversation_id=cid) if d.status == "failed"]

    (bounced,) = await wait_for(failed)
    assert bounced.external_id == first_id and "5.1.1" in bounced.last_error
    assert (await identity(ctx, inbox.id, ALICE)).reachable  # one bounce may be a fluke

    await mail_in(inbox, dsn(second_id), sender="")
    await wait_for(lambda: _unreachable(ctx, inbox.id))
    assert len(await inbound(ctx, inbox.id)) == 1  # bounces never become messages or conversations
    assert len(await conversations(ctx, inbox.id)) == 1


async def _unreachable(ctx: AppContext, inbox_id: int) -> bool:
    return not (await identity(ctx, inbox_id, ALICE)).reachable


async def test_auto_reply_is_stored_but_never_answered_by_the_bot(client, ctx, inbox, mailbox) -> None:
    await mail_in(inbox, customer_mail("自动回复: 我正在休假", "我正在休假，8 月 1 日回来。", msg_id="ooo@customer.example",
                                       extra={"Auto-Submitted": "auto-replied"}))
    (msg,) = await wait_inbound(ctx, inbox.id)
    assert msg.payload["auto_submitted"] is True
    await ctx.bus.drain(5)
    assert await deliveries(ctx) == []
    assert await deliver_all(ctx) == 0 and mailbox.mails == []
