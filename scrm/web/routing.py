"""API route registry: every /api/v1 endpoint declares its roles and schema in one place.

The same table builds the aiohttp routes, enforces authentication, role checks and CSRF, and
generates the OpenAPI document, so the document cannot drift from the real endpoints.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from channels import safejson
from scrm.services.agents.accounts import Principal
from scrm.web.keys import PRINCIPAL

Handler = Callable[..., Awaitable[web.StreamResponse]]
ALL_ROLES = frozenset({"admin", "agent", "marketer"})
SUPPORT = frozenset({"admin", "agent"})
ADMIN = frozenset({"admin"})


class ApiError(Exception):
    """An error answered as JSON: {"error": {"code", "message"}}."""

    def __init__(self, status: int, message: str, code: str = "error", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra


def json_error(status: int, message: str, code: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


@dataclass
class ApiRoute:
    method: str
    path: str
    handler: Handler
    roles: frozenset[str] | None  # None: public (login)
    summary: str
    body: type[BaseModel] | None = None
    query: dict[str, str] = field(default_factory=dict)  # name -> description
    tag: str = "api"


API_ROUTES: list[ApiRoute] = []


def api(
    method: str, path: str, *, roles: Iterable[str] | None, summary: str, body: type[BaseModel] | None = None,
    query: dict[str, str] | None = None, tag: str = "api", guard: Callable[[web.Request], None] | None = None,
) -> Callable[[Handler], Handler]:
    """Register an /api/v1 endpoint. The handler gets (request, principal[, body]).

    `guard` checks the request before its body is read (login: content type and origin).
    """

    def deco(fn: Handler) -> Handler:
        role_set = frozenset(roles) if roles is not None else None

        @functools.wraps(fn)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            principal: Principal | None = request.get(PRINCIPAL)
            if role_set is not None:
                if principal is None:
                    raise ApiError(401, "authentication required", "unauthenticated")
                if principal.role not in role_set:
                    raise ApiError(403, f"this needs the role {' or '.join(sorted(role_set))}", "forbidden")
            if guard is not None:
                guard(request)
            args: list[Any] = [request, principal]
            if body is not None:
                args.append(await parse_body(request, body))
            return await fn(*args)

        API_ROUTES.append(ApiRoute(method, path, wrapper, role_set, summary, body, query or {}, tag))
        return fn

    return deco


async def parse_body(request: web.Request, model: type[BaseModel]) -> Any:
    raw = await request.read()
    try:
        data = safejson.loads(raw or b"{}")
    except safejson.UnsafeJSON as exc:
        raise ApiError(400, str(exc), "malformed_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:10]]
        summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields)
        raise ApiError(400, f"invalid request: {summary}", "invalid_request", fields=fields) from None


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer", "bad_query") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter {name} must be between {lo} and {hi}", "bad_query")
    return value


MAX_ID = 2**63 - 1  # ids are BIGINT: a larger one names nothing (and would overflow the query)


def path_int(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except (KeyError, ValueError):
        raise ApiError(404, f"{name} not found", "not_found") from None
    if value < 0:
        raise ApiError(404, f"{name} not found", "not_found")
    if value > MAX_ID:
        raise ApiError(400, f"{name} out of range", "bad_id")
    return value
