"""What every visitor endpoint checks: the web inbox, the caller's origin, the visitor token, rate and size limits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from channels import safejson
from channels.web.adapter import WebChatAdapter
from channels.web.tokens import origin_allowed, origin_of, verify_visitor
from scrm.db.models import Inbox
from scrm.web.headers import content_security_policy
from scrm.web.keys import CTX
from scrm.web.routing import ApiError
from scrm.web.webhooks import read_body

log = logging.getLogger("scrm.webchat")
TOKEN_HEADER = "X-Scrm-Visitor"
MAX_ID = 2**63 - 1
JSON_LIMIT = 64 * 1024  # a visitor's JSON request (a message is at most max_message_chars of it)


def cookie_name(inbox_id: int) -> str:
    """The H5 page's HttpOnly visitor cookie (first-party pages only)."""
    return f"scrm_visitor_{inbox_id}"


async def web_inbox(request: web.Request) -> tuple[Inbox, WebChatAdapter]:
    """The active `web` inbox named in the path (404 otherwise)."""
    ctx = request.app[CTX]
    try:
        inbox_id = int(request.match_info["inbox"])
    except (KeyError, ValueError):
        raise ApiError(404, "unknown chat", "unknown_inbox") from None
    if inbox_id > MAX_ID:  # no inbox has it (a BIGINT cannot hold it): not worth asking the database
        raise ApiError(404, "unknown chat", "unknown_inbox")
    inbox = await ctx.adapters.inbox(inbox_id)
    if inbox is None or inbox.channel_type != "web" or not inbox.active:
        raise ApiError(404, "unknown chat", "unknown_inbox")
    adapter = ctx.adapters.for_inbox(inbox)
    assert isinstance(adapter, WebChatAdapter)
    return inbox, adapter


def own_origins(request: web.Request) -> list[str]:
    """This server's origin(s): the address the browser used, and server.public_url."""
    found = [f"{request.scheme}://{request.host}".lower()]
    public = request.app[CTX].settings.server.public_url
    if public:
        norm = origin_of(public)
        if norm:
            found.append(norm)
    return [o for o in (origin_of(x) for x in found) if o]


def is_own_origin(request: web.Request, origin: str | None) -> bool:
    norm = origin_of(origin)
    if norm is None:
        return False
    if norm in own_origins(request):
        return True
    # Behind a proxy the scheme may differ; the host is what matters for "our own page".
    return urlsplit(norm).netloc == (request.host or "").lower()


def check_origin(request: web.Request, adapter: WebChatAdapter) -> str | None:
    """Refuse a browser on a site the inbox does not allow (403). Returns the caller's origin.

    Browsers send Origin on cross-origin requests and on every WebSocket handshake; a request without
    one is same-origin GET or not from a browser, and the visitor token still decides what it may see."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if is_own_origin(request, origin) or origin_allowed(origin, adapter.settings.allowed_origins):  # type: ignore[attr-defined]
        return origin
    raise ApiError(403, "this site may not use this chat (origin not allowed)", "origin_not_allowed")


def visitor_token(request: web.Request, inbox_id: int) -> str | None:
    """The token the request carries (header from the widget, cookie from the H5 page)."""
    return request.headers.get(TOKEN_HEADER) or request.cookies.get(cookie_name(inbox_id))


def require_visitor(request: web.Request, inbox: Inbox, adapter: WebChatAdapter) -> str:
    """The visitor id of a valid token (401 otherwise). A contact id from the client is never used."""
    visitor = verify_visitor(adapter.secrets.token_key, inbox.id, visitor_token(request, inbox.id))  # type: ignore[attr-defined]
    if visitor is None:
        raise ApiError(401, "visitor token missing, expired or invalid: start a new session", "bad_visitor_token")
    return visitor


def message_id(value: Any) -> int | None:
    """`value` if it can be a message id (a JSON integer a BIGINT holds; true is not 1), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        return None
    return value


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


async def rate_limit(ctx: Any, key: str, per_minute: int, what: str, *more: tuple[str, int, str]) -> None:
    """Count one `what` against `key` (Redis when configured, this process otherwise); 429 past the limit.
    `more` are further (key, per_minute, what) limits counted in the same step (one Redis round trip)."""
    limits = [(key, per_minute, what), *more]
    try:
        counts = await ctx.counter.hit_many([f"webchat:{k}" for k, _, _ in limits], 60)
    except Exception as exc:  # noqa: BLE001 - Redis busy or gone: chat goes on (the database stays the truth)
        log.warning("web chat rate limit not checked (%s)", type(exc).__name__)
        return
    for (_, limit, name), count in zip(limits, counts, strict=True):
        if count > limit:
            raise ApiError(429, f"too many {name}; wait a minute", "rate_limited", retry_after=60)


async def read_json(request: web.Request, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes (413 beyond, 400 when malformed)."""
    # The whole stream up to the limit: content.read(n) returns what is buffered, which cut a chunked
    # body short (a truncated JSON then answered 400 instead of 413, or a small body failed).
    raw = await read_body(request, limit)
    try:
        # Strict: not only malformed JSON but nesting deep enough for a RecursionError, NaN and lone
        # surrogates (which no database column takes) are the sender's mistake, a 400.
        data = safejson.loads(bytes(raw) or b"{}")
    except safejson.UnsafeJSON as exc:
        raise ApiError(400, str(exc), "malformed_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object", "malformed_json")
    return data


def page_csp(adapter: WebChatAdapter) -> str:
    """The chat page's own CSP: it may be framed only by the inbox's allowed sites."""
    return content_security_policy(["'self'", *adapter.settings.allowed_origins])  # type: ignore[attr-defined]


def cors_headers(origin: str | None) -> dict[str, str]:
    """CORS for an allowed embedding site (the loader fetches the widget's settings from there)."""
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Headers": f"Content-Type, {TOKEN_HEADER}",
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS", "Access-Control-Max-Age": "600"}


async def close_going_away(sockets: list[web.WebSocketResponse]) -> None:
    """Serve is stopping: close these sockets (1001) so their pages reconnect to another server at once. All at
    once: each close waits up to the socket's timeout for the page's answer. An open socket is a request in
    progress: left open, shutdown would wait its whole timeout for the page to hang up."""
    if sockets:
        log.info("closing %d sockets: server shutting down", len(sockets))
        await asyncio.gather(*(ws.close(code=1001, message=b"server shutting down") for ws in sockets),
                             return_exceptions=True)


def release_socket(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Break the reference cycle a closed WebSocket leaves behind, so that its objects are freed at once.

    aiohttp's connection (RequestHandler) keeps the socket's heartbeat callback (a bound method of the
    WebSocketResponse) after the connection is lost, and the response reaches the connection through its
    reader, writer and request: ~27 objects per closed socket (the response, its request, writer, reader,
    the connection and its transport) that only the cyclic collector frees. After a reconnect of 2,000
    sockets the middle generation's pass collecting them held serve's event loop ~200 ms
    (bench/web_chat.py). Only once the socket is closed: the callback resets its heartbeat while open.
    """
    if not ws.closed:
        return
    protocol = request.protocol
    if protocol is not None and getattr(protocol, "_data_received_cb", None) is not None:
        protocol._data_received_cb = None
