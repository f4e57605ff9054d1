"""REST API for broadcasts: drafts, previews and test sends, schedule, start, pause/resume/cancel, reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from scrm.db.models import utcnow
from scrm.db.models_marketing import Broadcast
from scrm.serializers import iso
from scrm.services.agents.accounts import Principal
from scrm.services.marketing import broadcast_preview, broadcasts
from scrm.services.marketing.broadcast_report import recipients_csv, report
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.marketing_http import MARKETING, csv_response, service_error
from scrm.web.routing import ApiError, api, ok, path_int


class BroadcastIn(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=120)
    segment_id: int | None = None
    rules: dict[str, Any] | None = None
    inbox_ids: list[int] | None = Field(None, max_length=20)
    template: str | None = Field(None, max_length=20000)
    subject: str | None = Field(None, max_length=255)
    reply_window_days: int | None = Field(None, ge=0, le=30)
    delivery_mode: Literal["standard", "mass", "subscribe"] | None = Field(
        None, description="WeChat OA: standard (48 h window, 订阅通知 outside it with consent), mass (群发), subscribe")
    delivery_options: dict[str, Any] | None = Field(
        None, description='mass: {"target": "list"|"tag"|"all", "tag_id"}; subscribe: {"template_id", "fields", "url"}')


class ContactIn(BaseModel):
    contact_id: int | None = None


class ScheduleIn(BaseModel):
    at: datetime


def _broadcast_json(b: Broadcast) -> dict[str, Any]:
    return {"id": b.id, "name": b.name, "status": b.status, "segment_id": b.segment_id, "rules": b.rules,
            "inbox_ids": b.inbox_ids, "template": b.template, "subject": b.subject,
            "scheduled_at": iso(b.scheduled_at), "started_at": iso(b.started_at), "finished_at": iso(b.finished_at),
            "reply_window_days": b.reply_window_days, "last_error": b.last_error, "created_at": iso(b.created_at),
            "delivery_mode": b.delivery_mode, "delivery_options": b.delivery_options or {}}


@api("GET", "/broadcasts", roles=MARKETING, tag="broadcasts", summary="Broadcasts, newest first")
async def list_broadcasts(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(200))).all()
    return ok({"broadcasts": [_broadcast_json(b) for b in rows]})


@api("POST", "/broadcasts", roles=MARKETING, body=BroadcastIn, tag="broadcasts", summary="Create a draft broadcast")
async def create_broadcast(request: web.Request, principal: Principal, body: BroadcastIn) -> web.Response:
    if not body.name or not body.template or not body.inbox_ids:
        raise ApiError(400, "name, template and inbox_ids are required", "invalid_request")
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            b = await broadcasts.save(tx, principal.agent_id, body.model_dump())
            return ok(_broadcast_json(b), 201)
    except broadcasts.BroadcastError as exc:
        raise service_error(exc) from None


async def _verb(request: web.Request, fn: Any, *args: Any) -> Any:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            b = await broadcasts.load(tx, path_int(request, "id"))
            out = await fn(tx, b, *args)
            return b, out
    except broadcasts.BroadcastError as exc:
        raise service_error(exc) from None


@api("GET", "/broadcasts/{id}", roles=MARKETING, tag="broadcasts", summary="A broadcast with its progress")
async def get_broadcast(request: web.Request, principal: Principal) -> web.Response:
    b, rep = await _verb(request, lambda tx, b: report(tx.session, b))
    return ok(_broadcast_json(b) | {"report": rep})


@api("PATCH", "/broadcasts/{id}", roles=MARKETING, body=BroadcastIn, tag="broadcasts", summary="Edit a draft")
async def update_broadcast(request: web.Request, principal: Principal, body: BroadcastIn) -> web.Response:
    b, _ = await _verb(request, lambda tx, b: broadcasts.save(tx, principal.agent_id,
                                                              body.model_dump(exclude_unset=True), b))
    return ok(_broadcast_json(b))


@api("DELETE", "/broadcasts/{id}", roles=MARKETING, tag="broadcasts", summary="Delete a draft or scheduled broadcast")
async def delete_broadcast(request: web.Request, principal: Principal) -> web.Response:
    await _verb(request, lambda tx, b: broadcasts.delete_draft(tx, b, principal.agent_id))
    return ok({"deleted": True})


@api("POST", "/broadcasts/{id}/preview", roles=MARKETING, body=ContactIn, tag="broadcasts",
     summary="The message as each channel will show it (for one contact, or with fallbacks)")
async def preview_broadcast(request: web.Request, principal: Principal, body: ContactIn) -> web.Response:
    _, out = await _verb(request, lambda tx, b: broadcast_preview.preview(request.app[CTX], tx, b, body.contact_id))
    return ok({"channels": out})


@api("POST", "/broadcasts/{id}/test", roles=MARKETING, body=ContactIn, tag="broadcasts",
     summary="Send the message to one contact you name (yourself), under the channel rules")
async def test_broadcast(request: web.Request, principal: Principal, body: ContactIn) -> web.Response:
    if body.contact_id is None:
        raise ApiError(400, "contact_id is required", "invalid_request")
    _, out = await _verb(request, lambda tx, b: broadcast_preview.send_test(request.app[CTX], b, body.contact_id, tx))
    return ok(out, 202)


@api("POST", "/broadcasts/{id}/schedule", roles=MARKETING, body=ScheduleIn, tag="broadcasts",
     summary="Start automatically at a time")
async def schedule_broadcast(request: web.Request, principal: Principal, body: ScheduleIn) -> web.Response:
    if body.at.tzinfo is not None and body.at <= utcnow():
        raise ApiError(400, "the time is in the past; use start to send now", "bad_time")
    b, _ = await _verb(request, lambda tx, b: broadcasts.schedule(tx, b, body.at, principal.agent_id))
    return ok(_broadcast_json(b))


@api("POST", "/broadcasts/{id}/start", roles=MARKETING, tag="broadcasts",
     summary="Send now: materialize the recipients and queue their deliveries")
async def start_broadcast(request: web.Request, principal: Principal) -> web.Response:
    try:
        result = await broadcasts.start(request.app[CTX], path_int(request, "id"), principal.agent_id)
    except broadcasts.BroadcastError as exc:
        raise service_error(exc) from None
    return ok(result, 202)


def _simple(verb: str) -> Any:
    fn = getattr(broadcasts, verb)

    async def handler(request: web.Request, principal: Principal) -> web.Response:
        b, n = await _verb(request, lambda tx, b: fn(tx, b, principal.agent_id))
        return ok(_broadcast_json(b) | {"deliveries": n})

    handler.__name__ = f"{verb}_broadcast"
    return handler


for _name, _summary in (("pause", "Hold the deliveries not yet claimed"), ("resume", "Queue held deliveries again"),
                        ("cancel", "Stop for good; unsent deliveries are cancelled")):
    api("POST", f"/broadcasts/{{id}}/{_name}", roles=MARKETING, tag="broadcasts", summary=_summary)(_simple(_name))


@api("GET", "/broadcasts/{id}/report", roles=MARKETING, tag="broadcasts",
     summary="Targeted, skipped by reason, sent, delivered, failed by reason, replied, opted out")
async def broadcast_report(request: web.Request, principal: Principal) -> web.Response:
    _, rep = await _verb(request, lambda tx, b: report(tx.session, b))
    return ok(rep)


@api("GET", "/broadcasts/{id}/recipients.csv", roles=MARKETING, tag="broadcasts",
     summary="Every recipient with status and reason, as CSV")
async def broadcast_recipients(request: web.Request, principal: Principal) -> web.Response:
    _, body = await _verb(request, lambda tx, b: recipients_csv(tx.session, b.id))
    return csv_response(body, f"broadcast-{path_int(request, 'id')}-recipients.csv")

