"""Desk settings helpers for the admin pages: an automation rule's dry run, an outgoing webhook's test
send, and China's public holidays and make-up working days for the business hours."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from scrm.services.agents.accounts import Principal
from scrm.services.desk import automation, automation_dry_run, holidays_cn, webhook_test
from scrm.services.uow import Tx
from scrm.web.api_desk import DELIVERY_FIELDS, _row
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, ApiError, api, ok, path_int, query_int

TAG = "desk"


class DryRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: dict = Field(description="the rule as it would be saved (name, event, conditions, actions)")  # type: ignore[type-arg]
    limit: int = Field(50, ge=1, le=automation_dry_run.MAX_CONVERSATIONS, description="recent conversations to test")


@api("POST", "/desk/rules/dry-run", roles=ADMIN, body=DryRunIn, tag=TAG,
     summary="Test a rule's conditions on recent conversations (nothing runs, nothing changes)")
async def rule_dry_run(request: web.Request, principal: Principal, body: DryRunIn) -> web.Response:
    try:
        rule = automation.parse_rule(body.rule)
    except automation.RuleError as exc:
        raise ApiError(400, str(exc), "invalid_rule") from None
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        try:
            await automation.check_targets(Tx(s, ctx.adapters), rule)  # typed attribute values, as saving would store them
        except automation.RuleError as exc:
            raise ApiError(400, str(exc), "invalid_rule") from None
        result = await automation_dry_run.dry_run(Tx(s, ctx.adapters), rule, body.limit)
        await s.rollback()  # read-only: the session never commits
    return ok(result)


@api("POST", "/desk/webhooks/{id}/test", roles=ADMIN, tag=TAG,
     summary="Send a signed test delivery now and answer with its result (it shows in the delivery log)")
async def hook_test(request: web.Request, principal: Principal) -> web.Response:
    delivery = await webhook_test.send_test(request.app[CTX], path_int(request, "id"))
    if delivery is None:
        raise ApiError(404, "webhook not found", "not_found")
    return ok({"delivery": {**_row(delivery, *DELIVERY_FIELDS), "payload": delivery.payload}})


@api("GET", "/desk/holidays/cn", roles=ADMIN, tag=TAG, query={"year": "e.g. 2026 (default this year)"},
     summary="China's public holidays and make-up working days (调休) of a year, to import into business hours")
async def cn_holidays(request: web.Request, principal: Principal) -> web.Response:
    year = query_int(request, "year", datetime.now().year, 1990, 2100)
    try:
        data = holidays_cn.year(year)
    except holidays_cn.HolidayDataMissing as exc:
        raise ApiError(404, str(exc), "no_calendar", covered_years=holidays_cn.covered_years()) from None
    return ok({**data, "covered_years": holidays_cn.covered_years()})
