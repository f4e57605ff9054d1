"""`/webhooks/{channel}/{inbox}`: every platform request goes through here to its adapter and the ingest sink."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from scrm.domain import Inbound, IngestOutcome, WebhookError, WebhookRequest
from scrm.metrics import WEBHOOK_REQUESTS
from scrm.services.conversations.ingest import ingest
from scrm.web.keys import CTX
from scrm.web.routing import MAX_ID, ApiError, json_error

log = logging.getLogger("scrm.webhooks")
_COUNTERS: dict[tuple[str, int], Any] = {}  # (channel, status) -> its WEBHOOK_REQUESTS child (labels() per request costs)


def _count(channel: str, status: int) -> None:
    counter = _COUNTERS.get((channel, status))
    if counter is None:
        counter = _COUNTERS[(channel, status)] = WEBHOOK_REQUESTS.labels(channel=channel, status=str(status))
    counter.inc()

# URL segment -> channel type (WeChat's console wants a short path).
CHANNEL_PATHS = {"api": "api", "telegram": "telegram", "wechat": "wechat_oa", "email": "email", "memory": "memory",
                 "wecom": "wecom_kf", "wecom-contacts": "wecom_contacts"}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, up to `limit` bytes; 413 above it (before reading when Content-Length says so).

    Read to the end of the stream, chunk by chunk: `content.read(n)` returns only what is buffered,
    which cut large bodies short (their signatures then failed), and a chunked body has no length to
    check in advance.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body larger than {limit} bytes", "too_large")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body larger than {limit} bytes", "too_large")
    return bytes(body)


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    segment = request.match_info["channel"]
    channel_type = CHANNEL_PATHS.get(segment)
    try:
        inbox_id = int(request.match_info["inbox"])
    except ValueError:
        inbox_id = -1
    if channel_type == "memory" and not ctx.settings.server.demo:
        channel_type = None  # the simulator's webhook is unauthenticated: it exists in demo mode only
    if channel_type is None or inbox_id < 0:
        return json_error(404, "unknown webhook", "not_found")
    if inbox_id > MAX_ID:  # a BIGINT cannot hold it: the request is malformed, not merely unknown
        return json_error(400, "inbox id out of range", "bad_id")
    body = await read_body(request, ctx.settings.server.max_body_bytes)
    inbox = await ctx.adapters.inbox(inbox_id)
    if inbox is None or inbox.channel_type != channel_type or not inbox.active:
        _count(channel_type, 404)
        log.warning("webhook for unknown inbox %s/%s", segment, inbox_id)
        return json_error(404, "unknown inbox", "unknown_inbox")
    adapter = ctx.adapters.for_inbox(inbox)

    async def sink(items: Sequence[Inbound]) -> list[IngestOutcome]:
        return await ingest(ctx, inbox, items)

    req = WebhookRequest(
        method=request.method, path=request.path, query=dict(request.query),
        headers={k.lower(): v for k, v in request.headers.items()}, body=body, remote=request.remote,
    )
    try:
        answer = await adapter.handle_webhook(req, sink)
    except WebhookError as exc:
        _count(channel_type, exc.status)
        log.warning("webhook %s/%s refused (%s): %s", segment, inbox_id, exc.status, exc.message)
        return json_error(exc.status, exc.message, exc.code)
    _count(channel_type, answer.status)
    return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type.split(";")[0],
                        charset="utf-8" if answer.content_type.startswith(("text/", "application/json")) else None)
