"""Acquisition links: a 微信客服 link per source (kf/add_contact_way scene) or a 渠道活码 per campaign
(externalcontact/add_contact_way state), and how many customers each one brought."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from channels.wecom.api import WeComAPIError, WeComNetworkError
from scrm.db.models import ContactIdentity, Conversation, Inbox
from scrm.db.models_wecom import WeComContactWay
from scrm.services.agents import audit
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

_KF_SCENE = re.compile(r"^[0-9A-Za-z_-]{1,32}$")  # kf scene: at most 32 bytes of [0-9a-zA-Z_-]


class WayError(ValueError):
    def __init__(self, message: str, status: int = 400, code: str = "bad_contact_way") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def create_way(ctx: AppContext, inbox: Inbox, agent_id: int | None, *, name: str, scene: str,
                     users: list[str], welcome_text: str | None) -> WeComContactWay:
    """Create the link in WeCom, then remember it (WeCom's own lists miss older ways: we keep config_id)."""
    adapter = ctx.adapters.for_inbox(inbox)
    scene = scene.strip()
    if inbox.channel_type == "wecom_kf":
        if not _KF_SCENE.match(scene):
            raise WayError("scene: 1-32 characters of 0-9, a-z, A-Z, _ and -")
    elif inbox.channel_type == "wecom_contacts":
        if not 1 <= len(scene) <= 30:
            raise WayError("state: 1-30 characters")
        if not users:
            raise WayError("name at least one staff member (WeCom userid) for the 渠道活码")
    else:
        raise WayError("contact ways are for WeCom inboxes", 404, "not_found")
    async with ctx.db.session() as s:
        if await s.scalar(select(WeComContactWay.id).where(WeComContactWay.inbox_id == inbox.id,
                                                           WeComContactWay.scene == scene)) is not None:
            raise WayError(f"this inbox already has a link for {scene!r}", 409, "duplicate_scene")
    try:
        if inbox.channel_type == "wecom_kf":
            url = await adapter.add_contact_way(scene)  # type: ignore[attr-defined]
            fields: dict[str, Any] = {"url": url}
        else:
            data = await adapter.add_contact_way(scene, users, name)  # type: ignore[attr-defined]
            fields = {"config_id": data.get("config_id"), "qr_code": data.get("qr_code")}
    except (WeComAPIError, WeComNetworkError) as exc:
        raise WayError(f"WeCom refused the link: {exc}", 502, "wecom_error") from None
    async with unit_of_work(ctx) as tx:
        way = WeComContactWay(inbox_id=inbox.id, kind="kf" if inbox.channel_type == "wecom_kf" else "contact",
                              name=name[:120], scene=scene, created_by=agent_id,
                              settings={"users": users, "welcome_text": welcome_text}, **fields)
        tx.session.add(way)
        await tx.session.flush()
        audit.record(tx, agent_id, "wecom.contact_way", "inbox", inbox.id, scene=scene, way_id=way.id)
    return way


async def list_ways(ctx: AppContext, inbox: Inbox) -> list[dict[str, Any]]:
    """The inbox's links with how many customers and conversations each source brought."""
    async with ctx.db.session() as s:
        ways = (await s.scalars(select(WeComContactWay).where(WeComContactWay.inbox_id == inbox.id)
                                .order_by(WeComContactWay.id))).all()
        customers = dict((await s.execute(select(ContactIdentity.source, func.count()).where(
            ContactIdentity.inbox_id == inbox.id, ContactIdentity.source.is_not(None))
            .group_by(ContactIdentity.source))).all())
        conversations = dict((await s.execute(select(ContactIdentity.source, func.count(Conversation.id))
                                              .join(Conversation, Conversation.identity_id == ContactIdentity.id)
                                              .where(ContactIdentity.inbox_id == inbox.id,
                                                     ContactIdentity.source.is_not(None))
                                              .group_by(ContactIdentity.source))).all())
    return [{"id": w.id, "kind": w.kind, "name": w.name, "scene": w.scene, "url": w.url, "qr_code": w.qr_code,
             "config_id": w.config_id, "welcome_text": (w.settings or {}).get("welcome_text"),
             "users": (w.settings or {}).get("users") or [], "customers": int(customers.get(w.scene, 0)),
             "conversations": int(conversations.get(w.scene, 0)), "created_at": w.created_at.isoformat()}
            for w in ways]
