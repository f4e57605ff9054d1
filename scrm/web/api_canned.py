"""Canned responses: agents search them by shortcut; admins manage them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from scrm.db.models_ui import CannedResponse
from scrm.serializers import iso
from scrm.services.agents.accounts import Principal
from scrm.services.desk import canned
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int, query_int

SHORTCUT = r"^[^\s/]{1,64}$"


def canned_json(c: CannedResponse) -> dict[str, Any]:
    return {"id": c.id, "shortcut": c.shortcut, "title": c.title, "text": c.text,
            "created_at": iso(c.created_at), "updated_at": iso(c.updated_at)}


class CannedIn(BaseModel):
    shortcut: str = Field(pattern=SHORTCUT, description="typed after / in the reply box; no spaces")
    title: str = Field(min_length=1, max_length=120)
    text: str = Field(min_length=1, max_length=5000, description="may use {{name}}, {{email}}, {{phone}}, {{agent}}")


class CannedPatch(BaseModel):
    shortcut: str | None = Field(None, pattern=SHORTCUT)
    title: str | None = Field(None, min_length=1, max_length=120)
    text: str | None = Field(None, min_length=1, max_length=5000)


@api("GET", "/canned_responses", roles=SUPPORT, summary="List or search canned responses (shortcut, title, text)",
     query={"q": "search text", "limit": "1-200 (default 100)"}, tag="canned")
async def list_canned(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    stmt = select(CannedResponse)
    q = (request.query.get("q") or "").strip().lstrip("/")
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(CannedResponse.shortcut.ilike(like, escape="\\"), CannedResponse.title.ilike(like, escape="\\"),
                              CannedResponse.text.ilike(like, escape="\\")))
    stmt = stmt.order_by(CannedResponse.shortcut).limit(query_int(request, "limit", 100, 1, 200))
    async with ctx.db.session() as s:
        rows = (await s.scalars(stmt)).all()
    return ok({"items": [canned_json(c) for c in rows]})


async def _save(request: web.Request, fn: Any) -> CannedResponse:
    ctx = request.app[CTX]
    try:
        async with unit_of_work(ctx) as tx:
            return await fn(tx)  # type: ignore[no-any-return]
    except IntegrityError:
        raise ApiError(409, "a canned response with this shortcut exists already", "duplicate_shortcut") from None


@api("POST", "/canned_responses", roles=ADMIN, body=CannedIn, summary="Create a canned response", tag="canned")
async def create_canned(request: web.Request, principal: Principal, body: CannedIn) -> web.Response:
    async def do(tx: Any) -> CannedResponse:
        return await canned.create(tx, principal.agent_id, body.shortcut, body.title, body.text)

    return ok(canned_json(await _save(request, do)), 201)


@api("PATCH", "/canned_responses/{id}", roles=ADMIN, body=CannedPatch, summary="Update a canned response", tag="canned")
async def update_canned(request: web.Request, principal: Principal, body: CannedPatch) -> web.Response:
    cid = path_int(request, "id")

    async def do(tx: Any) -> CannedResponse:
        row = await canned.update(tx, principal.agent_id, cid, body.model_dump(exclude_unset=True))
        if row is None:
            raise ApiError(404, "canned response not found", "not_found")
        return row

    return ok(canned_json(await _save(request, do)))


@api("DELETE", "/canned_responses/{id}", roles=ADMIN, summary="Delete a canned response", tag="canned")
async def delete_canned(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    cid = path_int(request, "id")
    async with unit_of_work(ctx) as tx:
        if not await canned.delete(tx, principal.agent_id, cid):
            raise ApiError(404, "canned response not found", "not_found")
    return ok({"ok": True})
