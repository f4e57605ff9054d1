"""REST API for segments: saved contact rules, with a live count and sample."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm.db.models_marketing import Segment
from scrm.serializers import iso
from scrm.services.agents.accounts import Principal
from scrm.services.marketing import saved_segments, segments
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.marketing_http import MARKETING
from scrm.web.routing import ApiError, api, ok, path_int


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    rules: dict[str, Any]


class RulesIn(BaseModel):
    rules: dict[str, Any]
    sample: int = Field(10, ge=0, le=100)


def _segment_json(sg: Segment) -> dict[str, Any]:
    return {"id": sg.id, "name": sg.name, "rules": sg.rules, "created_at": iso(sg.created_at),
            "updated_at": iso(sg.updated_at)}


@api("POST", "/segments/preview", roles=MARKETING, body=RulesIn, tag="segments",
     summary="Live count and a sample of the contacts matching rules")
async def preview_rules(request: web.Request, principal: Principal, body: RulesIn) -> web.Response:
    async with request.app[CTX].db.session() as s:
        try:
            return ok(await segments.preview(s, body.rules, body.sample))
        except segments.SegmentError as exc:
            raise ApiError(400, str(exc), "bad_rules") from None


@api("GET", "/segments", roles=MARKETING, tag="segments", summary="Saved segments")
async def list_segments(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Segment).order_by(Segment.id))).all()
    return ok({"segments": [_segment_json(x) for x in rows]})


@api("POST", "/segments", roles=MARKETING, body=SegmentIn, tag="segments", summary="Save a segment")
async def create_segment(request: web.Request, principal: Principal, body: SegmentIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            sg = await saved_segments.save(tx, principal.agent_id, body.name, body.rules)
            return ok(_segment_json(sg), 201)
    except segments.SegmentError as exc:
        raise ApiError(400, str(exc), "bad_rules") from None


async def _segment(session: Any, request: web.Request) -> Segment:
    sg = await session.get(Segment, path_int(request, "id"))
    if sg is None:
        raise ApiError(404, "segment not found", "not_found")
    return sg  # type: ignore[no-any-return]


@api("GET", "/segments/{id}", roles=MARKETING, tag="segments", summary="A segment with its live count and sample")
async def get_segment(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        sg = await _segment(s, request)
        try:
            live = await segments.preview(s, sg.rules)
        except segments.SegmentError as exc:  # an attribute it uses was deleted since
            live = {"error": str(exc)}
        return ok(_segment_json(sg) | live)


@api("PUT", "/segments/{id}", roles=MARKETING, body=SegmentIn, tag="segments", summary="Replace a segment's rules")
async def update_segment(request: web.Request, principal: Principal, body: SegmentIn) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            sg = await saved_segments.save(tx, principal.agent_id, body.name, body.rules, await _segment(tx.session, request))
            return ok(_segment_json(sg))
    except segments.SegmentError as exc:
        raise ApiError(400, str(exc), "bad_rules") from None


@api("DELETE", "/segments/{id}", roles=MARKETING, tag="segments", summary="Delete a segment")
async def delete_segment(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        await saved_segments.delete(tx, principal.agent_id, await _segment(tx.session, request))
    return ok({"deleted": True})

