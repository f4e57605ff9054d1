"""Inbox endpoints (admin): create, list, update, delete; secrets generated and validated per channel."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from channels.registry import available_channel_types, get_adapter_class
from scrm.db.models import Inbox
from scrm.serializers import inbox_json, is_masked
from scrm.services import inboxes
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.uow import unit_of_work
from scrm.settings import Settings
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int

SIMULATOR = "memory"  # the customer simulator's channel type (channels/memory.py)


class InboxIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    channel_type: str
    settings: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    reopen_policy: Literal["reopen", "new"] = "reopen"


class InboxPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=120)
    settings: dict[str, Any] | None = None
    secrets: dict[str, Any] | None = None  # merged: only given keys change
    reopen_policy: Literal["reopen", "new"] | None = None
    active: bool | None = None


def validate_inbox_config(
    channel_type: str, settings: dict[str, Any], secrets: dict[str, Any], *, check_secrets: bool = True
) -> None:
    """Raise ApiError(400) naming the bad setting, using the adapter's own models."""
    try:
        cls = get_adapter_class(channel_type)
    except KeyError:
        raise ApiError(400, f"unknown channel_type {channel_type!r}; available: {', '.join(available_channel_types())}",
                       "bad_channel") from None
    checks = [("settings", cls.settings_model, settings)]
    if check_secrets:
        checks.append(("secrets", cls.secrets_model, secrets))
    for label, model, data in checks:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ApiError(400, f"{label}.{where}: {err['msg']}", "bad_inbox_config") from None


@api("GET", "/inboxes", roles=SUPPORT | {"marketer"}, summary="List inboxes (secrets masked)", tag="inboxes")
async def list_inboxes(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        # Agents list only the inboxes they see; marketers pick broadcast inboxes among all of them.
        mine = [Inbox.id.in_(inbox_access.visible_inbox_ids(principal.agent_id))] if principal.role == "agent" else []
        rows = (await s.scalars(select(Inbox).where(*mine).order_by(Inbox.id))).all()
    public = ctx.settings.server.public_url
    return ok({"items": [inbox_json(i, public_url=public) for i in rows], "channel_types": channel_types_for(ctx.settings)})


def channel_types_for(settings: Settings) -> list[str]:
    """The channel types an admin may connect here (the simulator only in demo mode)."""
    return [t for t in available_channel_types() if t != SIMULATOR or settings.server.demo]


@api("POST", "/inboxes", roles=ADMIN, body=InboxIn, summary="Connect a channel account (secrets are shown once)",
     tag="inboxes")
async def create_inbox(request: web.Request, principal: Principal, body: InboxIn) -> web.Response:
    ctx = request.app[CTX]
    if body.channel_type == SIMULATOR and not ctx.settings.server.demo:
        # Its webhook takes messages from anyone: only the demo (server.demo) has simulator inboxes.
        raise ApiError(400, "the simulator channel (memory) is available in demo mode only", "demo_only")
    validate_inbox_config(body.channel_type, body.settings, body.secrets, check_secrets=False)
    secrets = get_adapter_class(body.channel_type).init_secrets(body.secrets)  # generated once, stored as checked
    validate_inbox_config(body.channel_type, body.settings, secrets)
    async with unit_of_work(ctx) as tx:
        inbox = await inboxes.create(tx, principal.agent_id, name=body.name, channel_type=body.channel_type,
                                     settings=body.settings, secrets=secrets, reopen_policy=body.reopen_policy)
    ctx.adapters.forget(inbox.id)  # the active inboxes this process cached do not hold it yet
    await _setup(request, inbox)
    return ok(inbox_json(inbox, public_url=ctx.settings.server.public_url, reveal=True), 201)


async def _setup(request: web.Request, inbox: Inbox) -> None:
    ctx = request.app[CTX]
    try:
        await ctx.adapters.for_inbox(inbox).setup()
    except Exception as exc:  # noqa: BLE001 - platform down: the inbox exists, setup is retried at start
        raise ApiError(502, f"inbox saved, but registering with the platform failed: {exc}", "setup_failed",
                       inbox_id=inbox.id) from None


@api("GET", "/inboxes/{id}", roles=ADMIN, summary="One inbox (secrets masked: they are shown only when created)",
     tag="inboxes")
async def get_inbox(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, path_int(request, "id"))
    if inbox is None:
        raise ApiError(404, "inbox not found", "not_found")
    return ok(inbox_json(inbox, public_url=ctx.settings.server.public_url))


@api("PATCH", "/inboxes/{id}", roles=ADMIN, body=InboxPatch, summary="Update an inbox", tag="inboxes")
async def update_inbox(request: web.Request, principal: Principal, body: InboxPatch) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        inbox = await inboxes.lock(tx, path_int(request, "id"))
        if inbox is None:
            raise ApiError(404, "inbox not found", "not_found")
        settings = body.settings if body.settings is not None else inbox.settings
        # A masked value sent back unchanged (a form filled from GET) keeps the stored secret.
        given = {k: v for k, v in (body.secrets or {}).items() if not is_masked(v)}
        secrets = dict(inbox.secrets) | given
        validate_inbox_config(inbox.channel_type, settings, secrets)
        inboxes.update(tx, principal.agent_id, inbox, settings=settings, secrets=secrets,
                       changes=body.model_dump(include={"name", "reopen_policy", "active"}),
                       fields=sorted(body.model_dump(exclude_unset=True)))
    ctx.adapters.forget(inbox.id)  # this process's webhooks and widgets use the change at once
    return ok(inbox_json(inbox, public_url=ctx.settings.server.public_url))


@api("DELETE", "/inboxes/{id}", roles=ADMIN, summary="Disable an inbox (history is kept)", tag="inboxes")
async def delete_inbox(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        if not await inboxes.disable(tx, principal.agent_id, path_int(request, "id")):
            raise ApiError(404, "inbox not found", "not_found")
    ctx.adapters.forget(path_int(request, "id"))
    return ok({"ok": True})


@api("POST", "/inboxes/{id}/test", roles=ADMIN, summary="Test the channel credentials", tag="inboxes")
async def test_inbox(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        inbox = await s.get(Inbox, path_int(request, "id"))
    if inbox is None:
        raise ApiError(404, "inbox not found", "not_found")
    try:
        status = await ctx.adapters.for_inbox(inbox).test_connection()
    except Exception as exc:  # noqa: BLE001
        return ok({"ok": False, "message": str(exc)})
    return ok({"ok": True, "message": status})
