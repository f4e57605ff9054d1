"""Operations endpoints: /healthz (alive), /readyz (database and Redis reachable), /metrics."""

from __future__ import annotations

import contextlib

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scrm.db.database import DatabaseUnavailable
from scrm.delivery.worker import update_outbox_depth
from scrm.web.keys import CTX


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    checks: dict[str, str] = {}
    try:
        await ctx.db.ping()
        checks["database"] = "ok"
    except DatabaseUnavailable:
        checks["database"] = "unavailable"
    if ctx.redis is not None:
        try:
            await ctx.redis.ping()
            checks["redis"] = "ok"
        except Exception:  # noqa: BLE001
            checks["redis"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    with contextlib.suppress(Exception):  # metrics must answer even when the database is slow
        await update_outbox_depth(request.app[CTX])
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
