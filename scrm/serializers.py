"""Turn rows into the JSON the REST API and the live pushes answer (one place, so the UI and integrators see the same)."""

from __future__ import annotations

from typing import Any

from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, Inbox, Message, Ticket


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def agent_json(a: Agent) -> dict[str, Any]:
    return {"id": a.id, "login": a.login, "display_name": a.display_name, "role": a.role, "email": a.email,
            "active": a.active, "availability": a.availability, "last_seen_at": iso(a.last_seen_at)}


MASK = "••••"


def _mask(value: Any) -> str:
    """What the API shows of a stored secret: that it is set, and its last 4 characters when it is long."""
    s = str(value)
    return MASK + s[-4:] if len(s) > 8 else MASK


def mask_secret(value: Any) -> str | None:
    return None if value is None else _mask(value)


def is_masked(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MASK)


WEBHOOK_SEGMENTS = {"wechat_oa": "wechat", "wecom_kf": "wecom", "wecom_contacts": "wecom-contacts"}


def inbox_json(i: Inbox, *, public_url: str | None = None, reveal: bool = False) -> dict[str, Any]:
    path = f"/webhooks/{WEBHOOK_SEGMENTS.get(i.channel_type, i.channel_type)}/{i.id}"
    return {
        "id": i.id, "name": i.name, "channel_type": i.channel_type, "settings": i.settings,
        # Secrets are shown once, in the answer to the creation (`reveal`), and masked ever after.
        "secrets": dict(i.secrets) if reveal else {k: _mask(v) for k, v in (i.secrets or {}).items() if v is not None},
        "reopen_policy": i.reopen_policy, "active": i.active, "created_at": iso(i.created_at),
        "webhook_path": path, "webhook_url": (public_url + path) if public_url else None,
    }


def identity_json(ident: ContactIdentity, inbox: Inbox | None = None) -> dict[str, Any]:
    return {
        "id": ident.id, "inbox_id": ident.inbox_id, "external_id": ident.external_id, "username": ident.username,
        "channel_type": inbox.channel_type if inbox else None, "inbox_name": inbox.name if inbox else None,
        "reachable": ident.reachable, "unreachable_reason": ident.unreachable_reason,
        "subscribed": ident.subscribed, "source": ident.source, "last_inbound_at": iso(ident.last_inbound_at),
        "blocked": bool((ident.attributes or {}).get("blocked")),  # web chat visitors an agent blocked
    }


def contact_json(c: Contact, tags: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": c.id, "name": c.name, "email": c.email, "phone": c.phone, "language": c.language,
        "avatar_url": c.avatar_url, "attributes": c.attributes or {}, "opt_outs": c.opt_outs or {},
        "tags": tags or [], "first_seen_at": iso(c.first_seen_at), "last_seen_at": iso(c.last_seen_at),
    }


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id, "conversation_id": m.conversation_id, "direction": m.direction, "sender_kind": m.sender_kind,
        "sender_agent_id": m.sender_agent_id, "content_type": m.content_type, "text": m.text,
        "attachments": m.attachments or [], "private": m.private, "external_id": m.external_id,
        "reply_to_id": m.reply_to_id, "delivery_status": m.delivery_status, "delivery_error": m.delivery_error,
        "edited": bool(m.edit_history), "edit_history": m.edit_history or [],
        "choices": (m.payload or {}).get("choices", []), "created_at": iso(m.created_at), "sent_at": iso(m.sent_at),
        **_mail_details(m.payload or {}),
    }


def _mail_details(payload: dict[str, Any]) -> dict[str, Any]:
    """What an agent needs to judge a message the channel could not fully read: an email's HTML version
    (viewed sandboxed, by URL), decoding warnings, the From header as written when it was invalid or
    missing, the raw update of a partly unreadable Telegram message."""
    details: dict[str, Any] = {}
    if isinstance(payload.get("html"), str):
        details["has_html"] = True
    for key in ("warnings", "raw_from", "invalid_addresses", "sender_header", "raw_update"):
        if payload.get(key):
            details[key] = payload[key]
    return details


def conversation_json(
    c: Conversation, *, contact: Contact | None = None, inbox: Inbox | None = None, assignee: Agent | None = None,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "id": c.id, "inbox_id": c.inbox_id, "contact_id": c.contact_id, "status": c.status, "handler": c.handler,
        "assignee_id": c.assignee_id, "priority": c.priority, "subject": c.subject,
        "waiting_since": iso(c.waiting_since), "first_reply_at": iso(c.first_reply_at),
        "last_activity_at": iso(c.last_activity_at), "last_message_preview": c.last_message_preview,
        "unread_count": c.unread_count, "snoozed_until": iso(c.snoozed_until), "created_at": iso(c.created_at),
        "labels": labels or [],
        "contact": {"id": contact.id, "name": contact.name, "email": contact.email, "phone": contact.phone,
                    "avatar_url": contact.avatar_url} if contact else None,
        "channel_type": inbox.channel_type if inbox else None,
        "inbox_name": inbox.name if inbox else None,
        "assignee": {"id": assignee.id, "display_name": assignee.display_name} if assignee else None,
    }


def ticket_json(t: Ticket) -> dict[str, Any]:
    return {"id": t.id, "number": t.number, "subject": t.subject, "status": t.status, "priority": t.priority,
            "conversation_id": t.conversation_id, "contact_id": t.contact_id, "assignee_id": t.assignee_id,
            "created_at": iso(t.created_at), "updated_at": iso(t.updated_at)}
