"""Composing a broadcast: its error, its inboxes, template and delivery-mode checks, one delivery's payload.

Shared by the lifecycle (broadcasts), the bulk start and the previews; no state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from scrm.db.models import Inbox
from scrm.db.models_marketing import Broadcast
from scrm.domain import ContentType
from scrm.services.contacts.attributes import attribute_types
from scrm.services.marketing import wechat_mass
from scrm.services.marketing.broadcast_rules import (
    VAR_RE,
    Decision,
    InboxInfo,
    TemplateError,
    render,
    template_variables,
)
from scrm.services.uow import Tx


class BroadcastError(ValueError):
    """The broadcast cannot do that; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def unsubscribe_url(base: str | None, token: str) -> str:
    return f"{(base or '').rstrip('/')}/unsubscribe/{token}"


async def load_inboxes(tx: Tx, inbox_ids: Sequence[int]) -> list[InboxInfo]:
    if not inbox_ids:
        raise BroadcastError("pick at least one inbox (channel)", 400, "no_channel")
    rows = {i.id: i for i in (await tx.session.scalars(select(Inbox).where(Inbox.id.in_(inbox_ids)))).all()}
    missing = [i for i in inbox_ids if i not in rows]
    if missing:
        raise BroadcastError(f"inbox {missing[0]} not found", 400, "bad_inbox")
    return [InboxInfo(i, rows[i].channel_type, rows[i].active, dict(rows[i].settings or {})) for i in inbox_ids]


async def check_template(tx: Tx, template: str, subject: str | None = None) -> None:
    """Reject unknown variables before anything is stored or sent."""
    keys = list((await attribute_types(tx.session)).keys())
    try:
        template_variables(template, keys)
        if subject:
            template_variables(subject, keys)
    except TemplateError as exc:
        raise BroadcastError(str(exc), 400, "bad_template") from None


async def check_mode(b: Broadcast, inboxes: list[InboxInfo]) -> None:
    """The WeChat delivery mode (群发 / 订阅通知) must suit the inboxes and the message."""
    if not isinstance(b.delivery_options or {}, dict):
        raise BroadcastError("delivery_options must be an object", 400, "bad_mode")
    try:
        wechat_mass.validate(b.delivery_mode or "standard", b.delivery_options or {}, inboxes,
                             [m.group(1) for m in VAR_RE.finditer(b.template)])
    except wechat_mass.MassSendError as exc:
        raise BroadcastError(str(exc), exc.status, exc.code) from None


def contact_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "email": row.email, "phone": row.phone, "language": row.language,
            "attributes": row.attributes or {}, "opt_outs": row.opt_outs or {}}


def delivery_payload(b: Broadcast, d: Decision, contact: dict[str, Any], token: str | None, public_url: str | None,
             text: str) -> tuple[str, str, dict[str, Any]]:
    """(text, content_type, metadata) for one recipient's delivery."""
    assert d.inbox is not None
    meta: dict[str, Any] = {"broadcast_id": b.id}
    content_type = ContentType.TEXT.value
    if d.inbox.channel_type == "email":
        assert token is not None
        url = unsubscribe_url(public_url, token)
        text = f"{text}\n\n--\n退订 / Unsubscribe: {url}"
        meta["subject"] = render(b.subject or b.name, contact)
        meta["unsubscribe_url"] = url
        # RFC 2369 + RFC 8058 one-click: mail clients show an unsubscribe button.
        meta["headers"] = {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    if d.mode == "template":
        content_type = ContentType.TEMPLATE.value
    elif d.mode == "subscribe":  # 订阅通知: the template's fields, filled for this follower
        options = b.delivery_options or {}
        fields = options.get("fields") or {"thing1": "text"}
        meta["wechat"] = {"op": "subscribe", "template_id": options.get("template_id"), "url": options.get("url"),
                          "data": {k: text if v == "text" else render(str(v), contact) for k, v in fields.items()}}
    return text, content_type, meta
