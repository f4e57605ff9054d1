"""Ticket state machine: new -> open -> pending (waiting on the customer) -> solved -> closed.

A customer writing on a solved ticket's conversation within the reopen window reopens it (and a
pending ticket goes back to open: the customer answered); past the window the ticket is closed by
the periodic job. State changes are told to the customer on the channel they used: an e-mail
carries "[#1042]" in the subject so replies thread back; outside WeChat's 48 h customer-service
window a template message is sent when the desk settings name one for the inbox
(tickets.wechat_templates); otherwise, and on any other closed channel, the change is noted in the
thread instead of sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from scrm.db.models import ContactIdentity, Conversation, Inbox, Ticket, utcnow
from scrm.db.models_desk import TicketComment
from scrm.services.agents import audit
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk.settings import TEMPLATE_CHANNELS, get_section
from scrm.services.outbox import enqueue_message
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

TICKET_UPDATED = "ticket.updated"
STATES = ("new", "open", "pending", "solved", "closed")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open", "pending", "solved", "closed"),
    "open": ("pending", "solved", "closed"),
    "pending": ("open", "solved", "closed"),
    "solved": ("open", "closed"),
    "closed": (),
}
NOTICE = {
    "open": ("您的工单 #{n} 正在处理中。", "Your ticket #{n} is being worked on."),
    "pending": ("您的工单 #{n} 需要您的回复，请直接回复本消息。", "Your ticket #{n} needs your reply: just answer this message."),
    "solved": ("您的工单 #{n} 已解决。如仍有问题，请直接回复。", "Your ticket #{n} has been solved. Reply if anything is still wrong."),
    "closed": ("您的工单 #{n} 已关闭。", "Your ticket #{n} is closed."),
}
STATUS_ZH = {"new": "新建", "open": "处理中", "pending": "待您回复", "solved": "已解决", "closed": "已关闭"}


class TicketError(ValueError):
    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def _ticket(tx: Tx, ticket_id: int) -> Ticket:
    ticket = await tx.session.get(Ticket, ticket_id, with_for_update=True)
    if ticket is None:
        raise TicketError("ticket not found", 404, "not_found")
    return ticket


async def do_set_ticket_status(tx: Tx, ticket_id: int, agent_id: int | None, status: str, *,
                               by: str = "agent", notify: bool | None = None) -> Ticket:
    """Move a ticket to `status` if the state machine allows it; tells the customer when configured."""
    if status not in STATES:
        raise TicketError(f"status must be one of {', '.join(STATES)}", 400, "bad_status")
    ticket = await _ticket(tx, ticket_id)
    previous = ticket.status
    if status == previous:
        return ticket
    if status not in TRANSITIONS[previous]:
        allowed = ", ".join(TRANSITIONS[previous]) or "nothing (closed tickets are final; open a new one)"
        raise TicketError(f"a {previous} ticket can move to {allowed}, not {status}", 409, "bad_transition")
    ticket.status = status
    ticket.updated_at = utcnow()
    fields = dict(ticket.fields or {})
    if status == "solved":
        fields["solved_at"] = utcnow().isoformat()
    ticket.fields = fields
    tx.emit(TICKET_UPDATED, ticket_id=ticket.id, number=ticket.number, status=status, previous=previous, by=by,
            conversation_id=ticket.conversation_id, agent_id=agent_id)
    audit.record(tx, agent_id, "ticket.status", "ticket", ticket.id, status=status, previous=previous)
    cfg = await get_section(tx.session, "tickets")
    if (cfg["notify_customer"] if notify is None else notify) and by != "customer":
        await notify_customer(tx, ticket)
    return ticket


async def notify_customer(tx: Tx, ticket: Ticket) -> str:
    """Tell the customer about the ticket's state on its conversation's channel; returns what happened."""
    if ticket.conversation_id is None or ticket.status not in NOTICE:
        return "no conversation"
    conv, inbox, identity = await conv_svc.load(tx, ticket.conversation_id, lock=False)
    zh, en = NOTICE[ticket.status]
    text = zh.format(n=ticket.number) + "\n" + en.format(n=ticket.number)
    window = await conv_svc.reply_window_counted(tx, inbox, identity)
    if not window["open"]:
        template = await _template_for(tx, inbox, identity)
        if template is not None:
            zone = ZoneInfo((await get_section(tx.session, "business_hours")).get("timezone") or "Asia/Shanghai")
            metadata: dict[str, Any] = {
                "template_id": template["template_id"], "data": template_values(ticket, template["fields"], zone),
                "ticket_number": ticket.number}
            if template.get("url"):
                metadata["url"] = template["url"]
            await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="system",
                                  text=text, content_type="template", automatic=True, metadata=metadata)
            return "notified by template message"
        await conv_svc.add_system_note(tx, conv, f"未通知客户工单 #{ticket.number} 状态：{window['reason']}",
                                       ticket={"id": ticket.id, "notified": False})
        return f"not notified: {window['reason']}"
    metadata = {"subject": f"[#{ticket.number}] {ticket.subject}", "ticket_number": ticket.number}
    await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="system", text=text,
                          automatic=True, metadata=metadata)
    return "notified"


async def _template_for(tx: Tx, inbox: Inbox, identity: ContactIdentity) -> dict[str, Any] | None:
    """The inbox's ticket-update template, when only the reply window stands in the way: a template
    message may go out after 48 h, but not to a contact who unsubscribed or blocked the account."""
    if inbox.channel_type not in TEMPLATE_CHANNELS or not inbox.active:
        return None
    if not identity.subscribed or not identity.reachable:
        return None
    templates = (await get_section(tx.session, "tickets")).get("wechat_templates") or {}
    found = templates.get(str(inbox.id))
    return dict(found) if found else None


def template_values(ticket: Ticket, fields: dict[str, str], zone: ZoneInfo) -> dict[str, dict[str, str]]:
    """Fill the template's fields (WeChat field -> ticket value name) for the ticket's current state."""
    zh, en = NOTICE.get(ticket.status, ("工单 #{n} 已更新。", "Ticket #{n} was updated."))
    values = {
        "text": zh.format(n=ticket.number), "text_en": en.format(n=ticket.number), "number": f"#{ticket.number}",
        "subject": ticket.subject, "status": STATUS_ZH.get(ticket.status, ticket.status), "status_en": ticket.status,
        "updated_at": (ticket.updated_at or utcnow()).astimezone(zone).strftime("%Y-%m-%d %H:%M"),
    }
    # WeChat cuts long values; keep them short enough to read on a phone's lock screen.
    return {name: {"value": values[source][:200]} for name, source in fields.items() if source in values}


async def do_add_comment(tx: Tx, ticket_id: int, agent_id: int, text: str) -> TicketComment:
    """An internal comment (agents only; never sent to the customer)."""
    if not text or not text.strip():
        raise TicketError("comment text is empty", 400, "empty_comment")
    ticket = await _ticket(tx, ticket_id)
    comment = TicketComment(ticket_id=ticket.id, agent_id=agent_id, text=text.strip(), created_at=utcnow())
    tx.session.add(comment)
    await tx.session.flush()
    tx.emit(TICKET_UPDATED, ticket_id=ticket.id, number=ticket.number, comment_id=comment.id,
            conversation_id=ticket.conversation_id, agent_id=agent_id)
    return comment


async def on_customer_message(tx: Tx, conv: Conversation) -> list[int]:
    """The customer wrote: pending tickets go back to open; solved ones reopen within the window."""
    cfg = await get_section(tx.session, "tickets")
    tickets = list((await tx.session.scalars(
        select(Ticket).where(Ticket.conversation_id == conv.id, Ticket.status.in_(("pending", "solved")))
        .with_for_update())).all())
    moved = []
    for ticket in tickets:
        if ticket.status == "solved":
            solved_at = (ticket.fields or {}).get("solved_at")
            if not solved_at or datetime.fromisoformat(solved_at) < utcnow() - timedelta(hours=cfg["reopen_hours"]):
                continue
        await do_set_ticket_status(tx, ticket.id, None, "open", by="customer")
        moved.append(ticket.id)
    return moved


async def close_stale_tickets(ctx: AppContext) -> int:
    """Close solved tickets whose reopen window has passed (periodic)."""
    async with unit_of_work(ctx) as tx:
        cfg = await get_section(tx.session, "tickets")
        cutoff = utcnow() - timedelta(hours=cfg["reopen_hours"])
        solved = list((await tx.session.scalars(select(Ticket).where(Ticket.status == "solved").limit(500))).all())
        stale = [t.id for t in solved
                 if (t.fields or {}).get("solved_at") and (t.fields or {})["solved_at"] < cutoff.isoformat()]
        if stale:
            await tx.session.execute(update(Ticket).where(Ticket.id.in_(stale)).values(status="closed", updated_at=utcnow()))
            for tid in stale:
                tx.emit(TICKET_UPDATED, ticket_id=tid, status="closed", previous="solved", by="system")
    return len(stale)
