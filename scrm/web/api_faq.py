"""FAQ knowledge base endpoints: entries (admins edit, agents read), import/export, a match tester,
and unanswered questions grouped by similarity with one-call promotion into the knowledge base."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select

from bot_flows.explain import explain, flow_trigger
from scrm.db.models import Conversation, FaqEntryRow, UnansweredQuestion
from scrm.services.agents import audit, inbox_access
from scrm.services.agents.accounts import Principal
from scrm.services.bot import faq as faq_svc
from scrm.services.bot.rounds import get_runtime
from scrm.services.uow import unit_of_work
from scrm.web.keys import CTX
from scrm.web.routing import ADMIN, SUPPORT, ApiError, api, ok, query_int

FORMATS = {"csv": "text/csv", "json": "application/json", "yaml": "application/yaml"}
_MIME_FORMAT = {"text/csv": "csv", "application/json": "json", "application/yaml": "yaml", "application/x-yaml": "yaml",
                "text/yaml": "yaml", "text/x-yaml": "yaml"}


class ButtonIn(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    payload: str = Field(min_length=1, max_length=1000, description="a flow payload (handoff, faq:<id>) or a URL")


class FaqEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="a slug: letters, digits, '-', '_', '.'")
    question: str
    paraphrases: list[str] = Field(default_factory=list, description="other ways customers ask")
    answer: str
    category: str | None = None
    language: str = Field("zh", description="zh | en")
    enabled: bool = True
    buttons: list[ButtonIn] = Field(default_factory=list)


class FaqEntryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = None
    paraphrases: list[str] | None = None
    answer: str | None = None
    category: str | None = None
    language: str | None = None
    enabled: bool | None = None
    buttons: list[ButtonIn] | None = None


class MatchIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str | None = Field(None, description="add the questions as paraphrases of this existing entry")
    new_entry: dict[str, Any] | None = Field(
        None, description="or create an entry: {id, answer, question?, category?, language?}; the questions "
                          "become its question and paraphrases")


def _error(exc: faq_svc.FaqError) -> ApiError:
    return ApiError(exc.status, str(exc), exc.code, **exc.extra)


async def _after_change(request: web.Request, keys: list[str]) -> None:
    """Update this process's index at once; other processes follow the faq.changed event."""
    index = request.app[CTX].extras.get(faq_svc._INDEX_KEY)  # noqa: SLF001
    if index is not None:
        await index.refresh(request.app[CTX], keys)


@api("GET", "/faq", roles=SUPPORT, summary="List FAQ entries", tag="faq",
     query={"q": "search question, paraphrases and answer", "category": "only this category",
            "language": "zh | en", "limit": "1-500 (default 100)", "offset": "skip this many"})
async def list_entries(request: web.Request, principal: Principal) -> web.Response:
    q = request.query
    conds: list[Any] = []
    if q.get("q"):
        like = "%" + q["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(or_(FaqEntryRow.question.ilike(like, escape="\\"), FaqEntryRow.answer.ilike(like, escape="\\"),
                         FaqEntryRow.key.ilike(like, escape="\\")))
    if q.get("category"):
        conds.append(FaqEntryRow.category == q["category"])
    if q.get("language"):
        conds.append(FaqEntryRow.language == q["language"])
    limit = query_int(request, "limit", 100, 1, 500)
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[CTX].db.session() as s:
        total = await s.scalar(select(func.count()).select_from(FaqEntryRow).where(*conds))
        rows = (await s.scalars(select(FaqEntryRow).where(*conds).order_by(FaqEntryRow.id)
                                .limit(limit).offset(offset))).all()
    return ok({"items": [faq_svc.row_json(r) for r in rows], "total": total})


@api("GET", "/faq/entries/{key}", roles=SUPPORT, summary="One FAQ entry", tag="faq")
async def get_entry(request: web.Request, principal: Principal) -> web.Response:
    async with request.app[CTX].db.session() as s:
        row = await faq_svc.get_row(s, request.match_info["key"])
    if row is None:
        raise ApiError(404, "FAQ entry not found", "not_found")
    return ok(faq_svc.row_json(row))


@api("POST", "/faq", roles=ADMIN, body=FaqEntryIn, summary="Create a FAQ entry", tag="faq")
async def create_entry(request: web.Request, principal: Principal, body: FaqEntryIn) -> web.Response:
    try:
        entry = faq_svc.validate_entry(body.model_dump())
        async with unit_of_work(request.app[CTX]) as tx:
            row = await faq_svc.create_entry(tx, entry)
            audit.record(tx, principal.agent_id, "faq.create", "faq_entry", row.id, key=entry.id)
    except faq_svc.FaqError as exc:
        raise _error(exc) from None
    await _after_change(request, [entry.id])
    return ok(faq_svc.row_json(row), 201)


@api("PATCH", "/faq/entries/{key}", roles=ADMIN, body=FaqEntryPatch, summary="Update a FAQ entry", tag="faq")
async def update_entry(request: web.Request, principal: Principal, body: FaqEntryPatch) -> web.Response:
    key = request.match_info["key"]
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            row = await faq_svc.update_entry(tx, key, body.model_dump(exclude_unset=True))
            audit.record(tx, principal.agent_id, "faq.update", "faq_entry", row.id, key=key)
    except faq_svc.FaqError as exc:
        raise _error(exc) from None
    await _after_change(request, [key])
    return ok(faq_svc.row_json(row))


@api("DELETE", "/faq/entries/{key}", roles=ADMIN, summary="Delete a FAQ entry", tag="faq")
async def delete_entry(request: web.Request, principal: Principal) -> web.Response:
    key = request.match_info["key"]
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            await faq_svc.delete_entry(tx, key)
            audit.record(tx, principal.agent_id, "faq.delete", "faq_entry", None, key=key)
    except faq_svc.FaqError as exc:
        raise _error(exc) from None
    await _after_change(request, [key])
    return web.Response(status=204)


def _format(request: web.Request) -> str:
    fmt = request.query.get("format") or _MIME_FORMAT.get(request.content_type, "")
    if fmt == "yml":
        fmt = "yaml"
    if fmt not in FORMATS:
        raise ApiError(400, "say the format with ?format=csv|json|yaml or a text/csv, application/json or "
                            "application/yaml Content-Type", "bad_format")
    return fmt


@api("POST", "/faq/import", roles=ADMIN, summary="Import FAQ entries from CSV, JSON or YAML (the request body); "
     "?dry_run=1 only validates. Errors are reported by line and nothing is stored when there are any.", tag="faq",
     query={"format": "csv | json | yaml (or from Content-Type)", "dry_run": "1: validate only"})
async def import_entries(request: web.Request, principal: Principal) -> web.Response:
    fmt = _format(request)
    try:
        text = (await request.read()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the file must be UTF-8 encoded", "bad_encoding") from None
    entries, errors = faq_svc.parse_import(text, fmt)
    dry_run = request.query.get("dry_run", "") in ("1", "true", "yes")
    report = {"dry_run": dry_run, "format": fmt, "valid": len(entries),
              "errors": [{"line": line, "message": msg} for line, msg in errors]}
    if dry_run:
        return ok(report)
    if errors:
        raise ApiError(422, f"{len(errors)} error(s); nothing was imported (first: line {errors[0][0]}: "
                            f"{errors[0][1]})", "invalid_import", errors=report["errors"])
    async with unit_of_work(request.app[CTX]) as tx:
        counts = await faq_svc.import_entries(tx, entries)
        audit.record(tx, principal.agent_id, "faq.import", "faq_entry", None, format=fmt, **counts)
    await _after_change(request, [e.id for e in entries])
    return ok({**report, **counts})


@api("GET", "/faq/export", roles=SUPPORT, summary="Export the knowledge base", tag="faq",
     query={"format": "csv | json | yaml (default yaml)"})
async def export_entries(request: web.Request, principal: Principal) -> web.StreamResponse:
    fmt = request.query.get("format", "yaml")
    async with request.app[CTX].db.session() as s:
        entries = await faq_svc.all_entries(s)
    try:
        body = faq_svc.export_entries(entries, fmt)
    except faq_svc.FaqError as exc:
        raise _error(exc) from None
    return web.Response(text=body, content_type=FORMATS[fmt], charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="faq.{fmt}"'})


@api("POST", "/faq/match", roles=SUPPORT, body=MatchIn, tag="faq",
     summary="Try a question: the bot's decision with its calibrated confidence, the feature that decided, "
             "the words each candidate matched, and any flow trigger (handoff, complaint) that comes first")
async def match(request: web.Request, principal: Principal, body: MatchIn) -> web.Response:
    ctx = request.app[CTX]
    index = await faq_svc.get_index(ctx)
    await index.prepare(body.text)
    result = index.matcher.match(body.text)
    out = explain(index.matcher, body.text, result)
    out["trigger"] = flow_trigger(get_runtime(ctx).flows, body.text)
    return ok(out)


@api("GET", "/faq/unanswered", roles=SUPPORT, summary="Questions the bot could not answer, grouped by similarity",
     tag="faq", query={"threshold": "token overlap to group (0.1-1, default 0.5)"})
async def unanswered(request: web.Request, principal: Principal) -> web.Response:
    try:
        threshold = float(request.query.get("threshold", "0.5"))
    except ValueError:
        raise ApiError(400, "threshold must be a number", "bad_query") from None
    if not 0.1 <= threshold <= 1:
        raise ApiError(400, "threshold must be between 0.1 and 1", "bad_query")
    index = await faq_svc.get_index(request.app[CTX])
    async with request.app[CTX].db.session() as s:
        visible = []
        if (ids := inbox_access.scope(principal)) is not None:  # customers' words from other inboxes stay there
            visible.append(or_(UnansweredQuestion.conversation_id.is_(None), UnansweredQuestion.conversation_id.in_(
                select(Conversation.id).where(Conversation.inbox_id.in_(ids)))))
        groups = await faq_svc.unanswered_groups(s, index.matcher, threshold=threshold, visible=visible)
    return ok({"groups": groups})


@api("POST", "/faq/unanswered/{ids}/promote", roles=ADMIN, body=PromoteIn, tag="faq",
     summary="Turn a group of unanswered questions (ids joined by commas) into a new entry or paraphrases")
async def promote(request: web.Request, principal: Principal, body: PromoteIn) -> web.Response:
    try:
        ids = [int(x) for x in request.match_info["ids"].split(",") if x.strip()]
    except ValueError:
        raise ApiError(400, "ids must be numbers joined by commas, e.g. 3,7,9", "bad_ids") from None
    if not ids or len(ids) > 500:
        raise ApiError(400, "give 1 to 500 question ids", "bad_ids")
    try:
        async with unit_of_work(request.app[CTX]) as tx:
            row, created = await faq_svc.promote_unanswered(tx, ids, entry_key=body.entry, new_entry=body.new_entry)
            audit.record(tx, principal.agent_id, "faq.promote", "faq_entry", row.id, key=row.key, questions=ids)
    except faq_svc.FaqError as exc:
        raise _error(exc) from None
    await _after_change(request, [row.key])
    return ok({"entry": faq_svc.row_json(row), "created": created, "resolved": ids}, 201 if created else 200)
