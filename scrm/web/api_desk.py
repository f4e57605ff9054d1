"""Service-desk REST API: settings, teams, SLA policies, automation rules, outgoing webhooks,
CSAT results, reports (JSON and CSV), ticket workflow. Admins configure; agents read reports."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from scrm.db.models import Conversation, Ticket
from scrm.db.models_desk import (
    AutomationLog,
    AutomationRule,
    ConversationStats,
    CsatSurvey,
    SlaPolicy,
    Team,
    WebhookDelivery,
    WebhookSubscription,
)
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.desk import assignment, automation, reports, sla, webhooks_out
from scrm.services.desk import config as desk_config
from scrm.services.desk import settings as settings_svc
from scrm.services.tickets import workflow as ticket_workflow
from scrm.services.uow import unit_of_work
from scrm.web.access import require_ticket
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, path_int, query_int

TAG = "desk"


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _row(obj: Any, *names: str) -> dict[str, Any]:
    return {n: (_iso(v) if isinstance(v := getattr(obj, n), datetime) else v) for n in names}


# --- settings ------------------------------------------------------------------------------------

@api("GET", "/desk/settings/{section}", roles=SUPPORT, summary="Read a desk settings section", tag=TAG)
async def get_settings(request: web.Request, principal: Principal) -> web.Response:
    section = request.match_info["section"]
    if section not in settings_svc.SECTIONS:
        raise ApiError(404, f"unknown settings section {section!r}", "not_found")
    async with request.app[CTX].db.session() as s:
        return ok({section: await settings_svc.get_section(s, section)})


@api("PUT", "/desk/settings/{section}", roles=ADMIN,
     summary="Replace a desk settings section (business_hours, csat, tickets)", tag=TAG)
async def put_settings(request: web.Request, principal: Principal) -> web.Response:
    section = request.match_info["section"]
    body = await _json(request)
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            value = await settings_svc.set_section(tx.session, section, body)
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_settings") from None
    return ok({section: value})


async def _json(request: web.Request) -> Any:
    from channels import safejson

    try:
        return safejson.loads(await request.read() or b"{}")
    except safejson.UnsafeJSON as exc:
        raise ApiError(400, str(exc), "malformed_json") from None


# --- teams ---------------------------------------------------------------------------------------

async def _team_json(tx: Any, t: Team) -> dict[str, Any]:
    return {**_row(t, "id", "name", "inbox_id", "auto_assign", "max_open_per_agent", "reassign_on_offline"),
            "members": await assignment.team_members(tx, t.id)}


@api("GET", "/desk/teams", roles=SUPPORT, summary="List teams with their members", tag=TAG)
async def list_teams(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        teams = (await tx.session.scalars(select(Team).order_by(Team.name))).all()
        return ok({"teams": [await _team_json(tx, t) for t in teams]})


@api("POST", "/desk/teams", roles=ADMIN, body=assignment.TeamIn, summary="Create a team", tag=TAG)
async def create_team(request: web.Request, principal: Principal, body: assignment.TeamIn) -> web.Response:
    return await _save_team(request, principal, body, None)


@api("PUT", "/desk/teams/{id}", roles=ADMIN, body=assignment.TeamIn, summary="Update a team", tag=TAG)
async def update_team(request: web.Request, principal: Principal, body: assignment.TeamIn) -> web.Response:
    return await _save_team(request, principal, body, path_int(request, "id"))


async def _save_team(request: web.Request, principal: Principal, body: assignment.TeamIn,
                     team_id: int | None) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            team = await desk_config.save_team(tx, principal.agent_id, body, team_id)
            data = await _team_json(tx, team)
    except assignment.AssignmentError as exc:
        raise ApiError(404 if "not found" in str(exc) else 400, str(exc), "invalid_team") from None
    return ok({"team": data}, 200 if team_id else 201)


@api("DELETE", "/desk/teams/{id}", roles=ADMIN, summary="Delete a team", tag=TAG)
async def delete_team(request: web.Request, principal: Principal) -> web.Response:
    return await _delete(request, principal, "team")


async def _delete(request: web.Request, principal: Principal, kind: str) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        deleted = await desk_config.delete_row(tx, principal.agent_id, kind, path_int(request, "id"))
    if not deleted:
        raise ApiError(404, "not found", "not_found")
    desk_config.invalidate_caches()
    return ok({"deleted": True})


# --- SLA -----------------------------------------------------------------------------------------

SLA_FIELDS = ("id", "name", "priority", "inbox_id", "first_response_minutes", "next_response_minutes",
              "resolution_minutes", "warn_before_minutes", "business_hours", "active")


@api("GET", "/desk/sla-policies", roles=SUPPORT, summary="List SLA policies", tag=TAG)
async def list_sla(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(SlaPolicy).order_by(SlaPolicy.id))).all()
    return ok({"policies": [_row(p, *SLA_FIELDS) for p in rows]})


@api("POST", "/desk/sla-policies", roles=ADMIN, body=sla.SlaPolicyIn, summary="Create an SLA policy", tag=TAG)
async def create_sla(request: web.Request, principal: Principal, body: sla.SlaPolicyIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        policy = await desk_config.save_sla_policy(tx, body, None)
        return ok({"policy": _row(policy, *SLA_FIELDS)}, 201)


@api("PUT", "/desk/sla-policies/{id}", roles=ADMIN, body=sla.SlaPolicyIn, summary="Update an SLA policy", tag=TAG)
async def update_sla(request: web.Request, principal: Principal, body: sla.SlaPolicyIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        policy = await desk_config.save_sla_policy(tx, body, path_int(request, "id"))
        if policy is None:
            raise ApiError(404, "SLA policy not found", "not_found")
        return ok({"policy": _row(policy, *SLA_FIELDS)})


@api("DELETE", "/desk/sla-policies/{id}", roles=ADMIN, summary="Delete an SLA policy", tag=TAG)
async def delete_sla(request: web.Request, principal: Principal) -> web.Response:
    return await _delete(request, principal, "sla_policy")


@api("GET", "/desk/sla/conversations", roles=SUPPORT, query={"ids": "comma-separated conversation ids (max 200)"},
     summary="SLA state of conversations (for the inbox list: next due time, warning, breached)", tag=TAG)
async def sla_status(request: web.Request, principal: Principal) -> web.Response:
    try:
        ids = [int(x) for x in request.query.get("ids", "").split(",") if x.strip()][:200]
    except ValueError:
        raise ApiError(400, "ids must be comma-separated integers", "bad_query") from None
    async with request.app[CTX].db.session() as s:
        rows = {r.conversation_id: r for r in (await s.scalars(
            select(ConversationStats).where(ConversationStats.conversation_id.in_(ids),
                                            *_inbox_in(ConversationStats.inbox_id, principal)))).all()}
    return ok({"conversations": {str(i): sla.status_of(rows.get(i)) for i in ids}})


# --- automation rules ----------------------------------------------------------------------------

RULE_FIELDS = ("id", "name", "event", "conditions", "actions", "position", "active", "created_at", "updated_at")


@api("GET", "/desk/rules", roles=SUPPORT, summary="List automation rules in run order", tag=TAG)
async def list_rules(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(AutomationRule).order_by(AutomationRule.event, AutomationRule.position,
                                                                AutomationRule.id))).all()
    return ok({"rules": [_row(r, *RULE_FIELDS) for r in rows], "events": list(automation.RULE_EVENTS)})


@api("POST", "/desk/rules", roles=ADMIN, body=automation.RuleIn, summary="Create an automation rule", tag=TAG)
async def create_rule(request: web.Request, principal: Principal, body: automation.RuleIn) -> web.Response:
    return await _save_rule(request, body, None)


@api("PUT", "/desk/rules/{id}", roles=ADMIN, body=automation.RuleIn, summary="Replace an automation rule", tag=TAG)
async def update_rule(request: web.Request, principal: Principal, body: automation.RuleIn) -> web.Response:
    return await _save_rule(request, body, path_int(request, "id"))


async def _save_rule(request: web.Request, body: automation.RuleIn, rule_id: int | None) -> web.Response:
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            rule = await desk_config.save_rule(tx, body, rule_id)
            if rule is None:
                raise ApiError(404, "rule not found", "not_found")
            out = _row(rule, *RULE_FIELDS)
    except automation.RuleError as exc:
        raise ApiError(400, str(exc), "invalid_rule") from None
    automation.invalidate_cache()
    return ok({"rule": out}, 200 if rule_id else 201)


@api("DELETE", "/desk/rules/{id}", roles=ADMIN, summary="Delete an automation rule", tag=TAG)
async def delete_rule(request: web.Request, principal: Principal) -> web.Response:
    return await _delete(request, principal, "rule")


@api("GET", "/desk/rules/log", roles=SUPPORT, query={"conversation_id": "only this conversation", "limit": "1-500"},
     summary="What automation rules did, newest first", tag=TAG)
async def rules_log(request: web.Request, principal: Principal) -> web.Response:
    stmt = select(AutomationLog).order_by(AutomationLog.id.desc()).limit(query_int(request, "limit", 100, 1, 500))
    if "conversation_id" in request.query:
        stmt = stmt.where(AutomationLog.conversation_id == query_int(request, "conversation_id", 0, 1, 2**62))
    if (ids := inbox_access.scope(principal)) is not None:
        stmt = stmt.where(or_(AutomationLog.conversation_id.is_(None), AutomationLog.conversation_id.in_(
            select(Conversation.id).where(Conversation.inbox_id.in_(ids)))))
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(stmt)).all()
    return ok({"log": [_row(r, "id", "rule_id", "event", "conversation_id", "actions", "error", "created_at")
                       for r in rows]})


# --- outgoing webhooks ---------------------------------------------------------------------------

def _hook_json(h: WebhookSubscription, *, with_secret: bool = False) -> dict[str, Any]:
    data = _row(h, "id", "name", "url", "events", "active", "created_at")
    if with_secret:
        data["secret"] = h.secret  # shown once, when created
    return data


@api("GET", "/desk/webhooks", roles=ADMIN, summary="List outgoing webhooks", tag=TAG)
async def list_hooks(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id))).all()
    return ok({"webhooks": [_hook_json(h) for h in rows], "events": list(webhooks_out.EVENTS)})


@api("POST", "/desk/webhooks", roles=ADMIN, body=webhooks_out.WebhookIn,
     summary="Subscribe an endpoint to events (the signing secret is returned once)", tag=TAG)
async def create_hook(request: web.Request, principal: Principal, body: webhooks_out.WebhookIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        hook = await desk_config.save_webhook(tx, body, None)
        assert hook is not None
        data = _hook_json(hook, with_secret=True)
    webhooks_out.invalidate_cache()
    return ok({"webhook": data}, 201)


@api("PUT", "/desk/webhooks/{id}", roles=ADMIN, body=webhooks_out.WebhookIn, summary="Update an outgoing webhook", tag=TAG)
async def update_hook(request: web.Request, principal: Principal, body: webhooks_out.WebhookIn) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        hook = await desk_config.save_webhook(tx, body, path_int(request, "id"))
        if hook is None:
            raise ApiError(404, "webhook not found", "not_found")
        data = _hook_json(hook)
    webhooks_out.invalidate_cache()
    return ok({"webhook": data})


@api("DELETE", "/desk/webhooks/{id}", roles=ADMIN, summary="Delete an outgoing webhook and its log", tag=TAG)
async def delete_hook(request: web.Request, principal: Principal) -> web.Response:
    return await _delete(request, principal, "webhook")


DELIVERY_FIELDS = ("id", "webhook_id", "event_id", "event", "status", "attempts", "next_attempt_at",
                   "response_status", "last_error", "created_at", "delivered_at")


@api("GET", "/desk/webhooks/{id}/deliveries", roles=ADMIN, query={"status": "queued|sending|delivered|failed",
                                                                     "limit": "1-500"},
     summary="The delivery log of one webhook, newest first", tag=TAG)
async def hook_deliveries(request: web.Request, principal: Principal) -> web.Response:
    stmt = (select(WebhookDelivery).where(WebhookDelivery.webhook_id == path_int(request, "id"))
            .order_by(WebhookDelivery.id.desc()).limit(query_int(request, "limit", 100, 1, 500)))
    if request.query.get("status"):
        stmt = stmt.where(WebhookDelivery.status == request.query["status"])
    async with request.app[CTX].db.session() as s:
        rows = (await s.scalars(stmt)).all()
    return ok({"deliveries": [{**_row(d, *DELIVERY_FIELDS), "payload": d.payload} for d in rows]})


@api("POST", "/desk/webhooks/deliveries/{id}/redeliver", roles=ADMIN, summary="Send a delivery again now", tag=TAG)
async def redeliver(request: web.Request, principal: Principal) -> web.Response:
    async with unit_of_work(request.app[CTX]) as tx:
        d = await webhooks_out.redeliver(tx, path_int(request, "id"))
        if d is None:
            raise ApiError(404, "delivery not found", "not_found")
        data = _row(d, *DELIVERY_FIELDS)
    webhooks_out.wake(request.app[CTX])
    return ok({"delivery": data})


# --- reports and CSAT ----------------------------------------------------------------------------

REPORT_QUERY = {"from": "first day YYYY-MM-DD (default 30 days ago)", "to": "last day YYYY-MM-DD, inclusive (default today)",
                "group_by": "none | inbox | channel | team | agent"}


async def _range(request: web.Request) -> tuple[datetime, datetime, str]:
    async with request.app[CTX].db.session() as s:
        tz = (await settings_svc.get_section(s, "business_hours")).get("timezone", "Asia/Shanghai")
    zone = ZoneInfo(tz)
    today = datetime.now(zone).date()
    try:
        first = date.fromisoformat(request.query["from"]) if request.query.get("from") else today - timedelta(days=29)
        last = date.fromisoformat(request.query["to"]) if request.query.get("to") else today
    except ValueError:
        raise ApiError(400, "from and to must be dates like 2025-01-31", "bad_query") from None
    if last < first:
        raise ApiError(400, "to must not be before from", "bad_query")
    if (last - first).days > 366 * 2:
        raise ApiError(400, "the range can span at most two years", "bad_query")
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    return start, end, tz


def _group(request: web.Request) -> str:
    group = request.query.get("group_by", "none")
    if group not in reports.GROUPS:
        raise ApiError(400, f"group_by must be one of {', '.join(reports.GROUPS)}", "bad_query")
    return group


@api("GET", "/desk/reports", roles=SUPPORT, query=REPORT_QUERY,
     summary="Desk report: volume, messages, response times, deflection, handoffs, FAQ answer rate, SLA, CSAT",
     tag=TAG)
async def get_report(request: web.Request, principal: Principal) -> web.Response:
    start, end, tz = await _range(request)
    group = _group(request)
    with reports.inbox_scope(inbox_access.scope(principal)):
        async with request.app[CTX].db.session() as s:
            report = await reports.build(s, start, end, group)
            report["timeseries"] = await reports.timeseries(s, start, end, tz)
            report["unanswered_top"] = await reports.unanswered_top(s, start, end)
            report["faq_top"] = await reports.faq_top(s, start, end)
            report["broadcasts"] = await reports.broadcast_summaries(s, start, end)
    report["timezone"] = tz
    return ok(report)


def _csv(name: str, text: str) -> web.Response:
    return web.Response(body=("\ufeff" + text).encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


@api("GET", "/desk/reports.csv", roles=SUPPORT, query=REPORT_QUERY, summary="The desk report as CSV", tag=TAG)
async def report_csv(request: web.Request, principal: Principal) -> web.Response:
    start, end, _ = await _range(request)
    group = _group(request)
    with reports.inbox_scope(inbox_access.scope(principal)):
        async with request.app[CTX].db.session() as s:
            report = await reports.build(s, start, end, group)
    return _csv(f"report-{group}-{start.date()}-{(end - timedelta(days=1)).date()}.csv", reports.to_csv(report["rows"]))


@api("GET", "/desk/reports/timeseries.csv", roles=SUPPORT, query=REPORT_QUERY, summary="Daily figures as CSV", tag=TAG)
async def timeseries_csv(request: web.Request, principal: Principal) -> web.Response:
    start, end, tz = await _range(request)
    with reports.inbox_scope(inbox_access.scope(principal)):
        async with request.app[CTX].db.session() as s:
            rows = await reports.timeseries(s, start, end, tz)
    return _csv(f"daily-{start.date()}.csv", reports.to_csv(rows, ("day", "opened", "resolved", "messages_in", "messages_out")))


@api("GET", "/desk/csat", roles=SUPPORT, query={**REPORT_QUERY, "agent_id": "only this agent", "limit": "1-500"},
     summary="CSAT answers (rating, comment, agent, team, inbox), newest first", tag=TAG)
async def csat_results(request: web.Request, principal: Principal) -> web.Response:
    start, end, _ = await _range(request)
    stmt = (select(CsatSurvey).where(CsatSurvey.status == "answered", CsatSurvey.answered_at >= start,
                                     CsatSurvey.answered_at < end)
            .order_by(CsatSurvey.id.desc()).limit(query_int(request, "limit", 100, 1, 500)))
    if "agent_id" in request.query:
        stmt = stmt.where(CsatSurvey.agent_id == query_int(request, "agent_id", 0, 1, 2**62))
    stmt = stmt.where(*_inbox_in(CsatSurvey.inbox_id, principal))
    with reports.inbox_scope(inbox_access.scope(principal)):
        async with request.app[CTX].db.session() as s:
            rows = (await s.scalars(stmt)).all()
            summary = await reports.csat(s, start, end, "none")
    return ok({"answers": [_row(r, "id", "conversation_id", "inbox_id", "agent_id", "team_id", "ticket_id", "rating",
                                "comment", "asked_at", "answered_at") for r in rows],
               "summary": summary.get("all", {})})


# --- ticket workflow -----------------------------------------------------------------------------

class TicketStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["new", "open", "pending", "solved", "closed"]
    notify: bool | None = None


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=20000)


@api("POST", "/desk/tickets/{id}/status", roles=SUPPORT, body=TicketStatusIn,
     summary="Move a ticket (new, open, pending, solved, closed); the customer is told", tag=TAG)
async def ticket_status(request: web.Request, principal: Principal, body: TicketStatusIn) -> web.Response:
    await require_ticket(request, principal, path_int(request, "id"))
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            t = await ticket_workflow.do_set_ticket_status(tx, path_int(request, "id"), principal.agent_id,
                                                           body.status, notify=body.notify)
            data = _row(t, "id", "number", "subject", "status", "priority", "conversation_id", "assignee_id")
    except ticket_workflow.TicketError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    return ok({"ticket": data})


@api("GET", "/desk/tickets/{id}/comments", roles=SUPPORT, summary="A ticket's internal comments", tag=TAG)
async def ticket_comments(request: web.Request, principal: Principal) -> web.Response:
    from scrm.db.models_desk import TicketComment

    tid = path_int(request, "id")
    await require_ticket(request, principal, tid)
    async with request.app[CTX].db.session() as s:
        if await s.get(Ticket, tid) is None:
            raise ApiError(404, "ticket not found", "not_found")
        rows = (await s.scalars(select(TicketComment).where(TicketComment.ticket_id == tid).order_by(TicketComment.id))).all()
    return ok({"comments": [_row(c, "id", "ticket_id", "agent_id", "text", "created_at") for c in rows]})


@api("POST", "/desk/tickets/{id}/comments", roles=SUPPORT, body=CommentIn, summary="Add an internal comment", tag=TAG)
async def add_ticket_comment(request: web.Request, principal: Principal, body: CommentIn) -> web.Response:
    await require_ticket(request, principal, path_int(request, "id"))
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            c = await ticket_workflow.do_add_comment(tx, path_int(request, "id"), principal.agent_id, body.text)
            data = _row(c, "id", "ticket_id", "agent_id", "text", "created_at")
    except ticket_workflow.TicketError as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    return ok({"comment": data}, 201)


def _inbox_in(column: Any, principal: Principal) -> list[Any]:
    ids = inbox_access.scope(principal)
    return [] if ids is None else [column.in_(ids)]
