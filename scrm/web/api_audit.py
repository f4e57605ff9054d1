"""The audit log for admins: who did what, when, to which object; filterable, exportable as CSV."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from scrm.services.agents import audit_query
from scrm.services.agents.accounts import Principal
from scrm.services.desk.settings import get_section
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, query_int

EXPORT_LIMIT = 50_000
QUERY = {"agent_id": "only this agent's actions", "action": "an action (ticket.status) or a prefix ending in '.' (ticket.)",
         "target_type": "conversation, ticket, faq_entry, ...", "target_id": "the object's id",
         "from": "first day YYYY-MM-DD (desk time zone)", "to": "last day YYYY-MM-DD, inclusive"}


async def _filter(request: web.Request) -> audit_query.AuditFilter:
    q = request.query
    async with request.app[CTX].db.session() as s:
        zone = ZoneInfo((await get_section(s, "business_hours")).get("timezone") or "Asia/Shanghai")
    try:
        since = datetime.combine(date.fromisoformat(q["from"]), time(0), tzinfo=zone) if q.get("from") else None
        until = (datetime.combine(date.fromisoformat(q["to"]) + timedelta(days=1), time(0), tzinfo=zone)
                 if q.get("to") else None)
    except ValueError:
        raise ApiError(400, "from and to must be dates like 2025-01-31", "bad_query") from None
    return audit_query.AuditFilter(
        agent_id=query_int(request, "agent_id", 0, 1, 2**62) if q.get("agent_id") else None,
        action=(q.get("action") or "").strip() or None, target_type=(q.get("target_type") or "").strip() or None,
        target_id=query_int(request, "target_id", 0, 0, 2**62) if q.get("target_id") else None,
        since=since, until=until)


@api("GET", "/audit", roles=ADMIN, tag="audit", summary="The audit log, newest first",
     query={**QUERY, "before_id": "paging", "limit": "1-500 (default 50)"})
async def list_audit(request: web.Request, principal: Principal) -> web.Response:
    f = await _filter(request)
    limit = query_int(request, "limit", 50, 1, 500)
    before = query_int(request, "before_id", 0, 0, 2**62)
    async with request.app[CTX].db.session() as s:
        rows = await audit_query.query(s, f, before_id=before or None, limit=limit)
        names = await audit_query.actions(s)
    return ok({"items": rows, "actions": names, "next_before_id": rows[-1]["id"] if len(rows) == limit else None})


@api("GET", "/audit.csv", roles=ADMIN, tag="audit", query=QUERY,
     summary=f"The audit log as CSV (the newest {EXPORT_LIMIT:,} entries matching the filter)")
async def audit_csv(request: web.Request, principal: Principal) -> web.Response:
    f = await _filter(request)
    async with request.app[CTX].db.session() as s:
        rows = await audit_query.query(s, f, limit=EXPORT_LIMIT)
    body = ("\ufeff" + audit_query.to_csv(rows)).encode("utf-8")  # the BOM makes Excel read UTF-8 Chinese
    return web.Response(body=body, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'})
