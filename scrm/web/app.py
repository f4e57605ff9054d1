"""The aiohttp application factory (routes in one place; resources in cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from collections.abc import AsyncIterator

from aiohttp import web

from scrm.bootstrap import build_context
from scrm.context import AppContext
from scrm.db.migrate import upgrade
from scrm.settings import Settings
from scrm.web import middleware
from scrm.web.headers import apply_security_headers
from scrm.web.keys import CTX, PRINCIPAL
from scrm.web.openapi import openapi_handler
from scrm.web.ops import healthz, metrics, readyz
from scrm.web.routes import add_api_routes, add_page_routes
from scrm.web.routing import ApiError
from scrm.web.ui import STATIC
from scrm.web.webhooks import handle_webhook

log = logging.getLogger("scrm.web")
BACKGROUND: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("background", list)
STOP: web.AppKey[asyncio.Event] = web.AppKey("stop", asyncio.Event)


async def serve_file(request: web.Request) -> web.StreamResponse:
    """Attachments, only for logged-in agents who may see the message carrying them (files never get public URLs)."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise ApiError(401, "authentication required", "unauthenticated")
    ctx = request.app[CTX]
    try:
        path = ctx.storage.path_for(request.match_info["key"])
    except KeyError:
        raise ApiError(404, "file not found", "not_found") from None
    if not path.is_file():
        raise ApiError(404, "file not found", "not_found")
    from scrm.services.agents.file_access import may_fetch

    async with ctx.db.session() as s:
        allowed = await may_fetch(s, principal, request.match_info["key"])
    if not allowed:  # answered like a missing file: no oracle for which keys exist
        log.info("file refused to agent %s (%s): not in an inbox they see", principal.agent_id, principal.role)
        raise ApiError(404, "file not found", "not_found")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Content-Type": ctype, "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
               "Content-Security-Policy": "sandbox"}
    if not ctype.startswith(("image/", "audio/", "video/")):
        headers["Content-Disposition"] = "attachment"
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC / "index.html"
    if not page.exists():
        return web.Response(text="scrm is running. API: /api/v1/openapi.json", content_type="text/plain")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"})


def create_app(settings: Settings, *, ctx: AppContext | None = None, run_background: bool | None = None) -> web.Application:
    """Build the app. Pass `ctx` to share a context (tests); background tasks follow settings by default."""
    app = web.Application(
        middlewares=[middleware.request_context, middleware.errors, middleware.authenticate],
        client_max_size=settings.server.max_body_bytes,
    )
    app.on_response_prepare.append(apply_security_headers)  # every response, files and errors included
    app.cleanup_ctx.append(_context(settings, ctx))
    app.cleanup_ctx.append(_background(settings, run_background))
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    add_api_routes(app)
    app.router.add_get("/api/v1/openapi.json", openapi_handler)
    app.router.add_route("*", "/webhooks/{channel}/{inbox}", handle_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/files/{key:.+}", serve_file)
    add_page_routes(app)
    app.router.add_get("/", index)
    if STATIC.exists():
        app.router.add_static("/static/", STATIC, append_version=False)


def _context(settings: Settings, given: AppContext | None):  # type: ignore[no-untyped-def]
    async def ctx_resource(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[CTX] = given
            yield
            return
        if settings.database.auto_migrate:
            await upgrade(settings.database.url)
        ctx = await build_context(settings)
        app[CTX] = ctx
        from scrm.db.reseal import seal_at_start

        await seal_at_start(ctx.db)
        yield
        await ctx.close()

    return ctx_resource


def _background(settings: Settings, run_background: bool | None):  # type: ignore[no-untyped-def]
    async def background(app: web.Application) -> AsyncIterator[None]:
        ctx = app[CTX]
        stop = asyncio.Event()
        app[STOP] = stop
        tasks: list[asyncio.Task[None]] = []
        from scrm.listeners import install_listeners, uninstall_listeners

        enabled = settings.server.run_worker if run_background is None else run_background
        # Tests (run_background given) drive the outbox by hand but still want the bot and desk to react.
        unsubscribe = install_listeners(ctx, run_work=run_background is not None or settings.server.run_worker)
        from scrm.services.wecom import kf_sync

        if run_background is None and not settings.server.run_worker:
            kf_sync.pull_elsewhere(ctx)  # `serve --no-worker`: callbacks are answered here, pulled by the workers
        if enabled:
            from scrm.delivery.worker import OutboxWorker

            tasks.append(asyncio.create_task(OutboxWorker(ctx).run(stop)))
            from scrm.periodic import start_periodic

            tasks += start_periodic(ctx, stop)
            tasks.append(asyncio.create_task(kf_sync.run_runner(ctx, stop)))  # also pulls for other servers
        pollers = settings.server.run_pollers if run_background is None else run_background
        if pollers:
            from scrm.pollers import PollerManager

            tasks.append(asyncio.create_task(PollerManager(ctx).run(stop)))
            tasks.append(asyncio.create_task(_setup_inboxes(ctx)))
        app[BACKGROUND] = tasks
        yield
        stop.set()
        await uninstall_listeners(unsubscribe, timeout=5)
        if tasks:
            await asyncio.wait(tasks, timeout=settings.server.shutdown_timeout + 5)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return background


async def _setup_inboxes(ctx: AppContext) -> None:
    """Register webhooks with platforms at start (idempotent on the platform side)."""
    from sqlalchemy import select

    from scrm.db.models import Inbox

    async with ctx.db.session() as s:
        inboxes = list((await s.scalars(select(Inbox).where(Inbox.active.is_(True)))).all())
    for inbox in inboxes:
        try:
            await ctx.adapters.for_inbox(inbox).setup()
        except Exception as exc:  # noqa: BLE001
            log.warning("setup of inbox %s (%s) failed: %s", inbox.id, inbox.channel_type, type(exc).__name__)
