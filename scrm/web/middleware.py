"""Middlewares: request id + access log, authentication (session cookie / bearer), CSRF, JSON errors."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from scrm.db.errors import BAD_INPUT, UNAVAILABLE, classify
from scrm.logs import request_id_var
from scrm.redis_client import unavailable as redis_unavailable
from scrm.services.agents import accounts as agent_svc
from scrm.web.keys import CSRF_HEADER, CTX, PRINCIPAL, REQUEST_ID, SESSION_COOKIE
from scrm.web.routing import ApiError, json_error

log = logging.getLogger("scrm.web")
access_log = logging.getLogger("scrm.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
RETRY_AFTER_SECONDS = 5


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or os.urandom(8).hex()  # 16 hex digits, as uuid4().hex[:16]
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = rid
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if not request.path.startswith(("/static/", "/healthz", "/metrics")):
            access_log.info("%s %s %s %.1fms", request.method, request.path, status, (time.perf_counter() - started) * 1000)
        request_id_var.reset(token)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error from /api and /webhooks is a JSON body with the right status, never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.message, exc.code, **exc.extra)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith(("/api/", "/webhooks/")):
            if exc.status == 413:
                return json_error(413, "request body too large", "too_large")
            return json_error(exc.status, exc.reason, exc.reason.lower().replace(" ", "_"))
        raise
    except Exception as exc:
        # Told by the error's cause (scrm/db/errors.py): a database that cannot serve now is a 503 the
        # sender retries (a platform re-delivers the webhook), a value it refused is the request's 400.
        kind = classify(exc) or _redis_unavailable(exc)
        if kind == UNAVAILABLE:
            log.error("database unavailable on %s %s: %s", request.method, request.path, _cause(exc))
            resp = json_error(503, "database unavailable, retry later", "unavailable")
            resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return resp
        if kind == BAD_INPUT:
            log.warning("value refused by the database on %s %s: %s", request.method, request.path, _cause(exc))
            return json_error(400, "a value in the request cannot be stored (out of range or invalid text)",
                              "invalid_value")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error", "internal")


def _cause(exc: BaseException) -> str:
    """The innermost error's class and SQLSTATE (not its text: that may quote the request's values)."""
    inner: BaseException = exc
    for _ in range(8):
        nxt = inner.__cause__ or getattr(inner, "orig", None)
        if nxt is None or nxt is inner:
            break
        inner = nxt
    state = getattr(inner, "sqlstate", None)
    return f"{type(inner).__name__} ({state})" if state else type(inner).__name__


def _redis_unavailable(exc: BaseException) -> str | None:
    """Redis that cannot be reached on a request that needs it (e.g. a shared lock) is a 503 as well."""
    return UNAVAILABLE if redis_unavailable(exc) else None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the caller for /api/ and protected pages; enforce CSRF on cookie-authenticated writes."""
    path = request.path
    if not (path.startswith("/api/") or path.startswith("/files/") or path.startswith("/ws")):
        return await handler(request)
    ctx = request.app[CTX]
    principal = None
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        async with ctx.db.session() as s:
            principal = await agent_svc.principal_from_token(s, auth[7:].strip())
        if principal is None:
            raise ApiError(401, "invalid or revoked API token", "bad_token")
    elif SESSION_COOKIE in request.cookies:
        async with ctx.db.session() as s:
            principal = await agent_svc.principal_from_session(s, request.cookies[SESSION_COOKIE])
        if principal is not None and request.method in UNSAFE and path != "/api/v1/auth/login":
            sent = request.headers.get(CSRF_HEADER, "")
            import hmac

            if not sent or not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"),
                                                   (principal.csrf_token or "").encode()):
                raise ApiError(403, "missing or wrong CSRF token (send the X-CSRF-Token header)", "csrf")
    request[PRINCIPAL] = principal
    return await handler(request)
