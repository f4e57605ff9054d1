"""Unroutable mail: a received mail with no usable sender is kept for an admin, once, with its raw
source (in file storage), instead of being refused and lost."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from scrm.db.models import Inbox
from scrm.db.models_mail import UnroutableMail
from scrm.domain import ChannelEvent, IngestOutcome
from scrm.services.uow import Tx


async def store_unroutable(tx: Tx, inbox: Inbox, event: ChannelEvent) -> IngestOutcome:
    """Record the mail (a retried fetch of the same mail is stored once)."""
    external_id = (event.external_id or "")[:255]
    known = await tx.session.scalar(select(UnroutableMail.id).where(
        UnroutableMail.inbox_id == inbox.id, UnroutableMail.external_id == external_id))
    if known is not None:
        return IngestOutcome(duplicate=True, ignored_reason="unroutable mail already kept")
    data: dict[str, Any] = dict(event.data)
    row = UnroutableMail(
        inbox_id=inbox.id, external_id=external_id, reason=str(data.get("reason") or "no sender"),
        subject=str(data.get("subject") or "")[:500], headers=dict(data.get("headers") or {}),
        warnings=list(data.get("warnings") or []), raw_storage_key=data.get("raw_storage_key"),
        size=int(data.get("size") or 0), sent_at=event.occurred_at,
    )
    tx.session.add(row)
    await tx.session.flush()
    return IngestOutcome(duplicate=False, ignored_reason="kept as unroutable mail")


def unroutable_json(row: UnroutableMail) -> dict[str, Any]:
    """The admin list's view of one kept mail."""
    from scrm.serializers import iso

    return {"id": row.id, "inbox_id": row.inbox_id, "external_id": row.external_id, "reason": row.reason,
            "subject": row.subject, "headers": row.headers or {}, "warnings": row.warnings or [],
            "size": row.size, "has_raw": bool(row.raw_storage_key), "sent_at": iso(row.sent_at),
            "received_at": iso(row.received_at)}


async def discard(s: Any, mail_id: int) -> None:
    """An admin dismissed an unroutable mail (its raw source stays in file storage until pruned)."""
    await s.execute(delete(UnroutableMail).where(UnroutableMail.id == mail_id))
