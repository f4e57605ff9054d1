"""GET /ws: the agent's live feed (one socket per browser tab).

Frames from the server: {"type": "hello", ...}, {"type": "event", "name", "data", "id", "at"},
{"type": "pong"}. Frames from the agent: {"type": "typing", "conversation_id": N} (rebroadcast to
every agent as conversation.typing) and {"type": "ping"}. Close code 4401 means the session ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from scrm import events as ev
from scrm.listeners.realtime import Client, hub_for
from scrm.services.agents import accounts as agent_svc
from scrm.services.agents.accounts import Principal
from scrm.services.agents.inbox_access import visible_inbox_set
from scrm.web.keys import CTX, PRINCIPAL, SESSION_COOKIE
from scrm.web.routing import SUPPORT, ApiError
from scrm.web.webchat_common import close_going_away, release_socket

log = logging.getLogger("scrm.realtime")
SESSION_CHECK_SECONDS = 60.0
TYPING_INTERVAL = 1.0  # at most one typing event per tab per second


def _same_origin(request: web.Request) -> bool:
    """Browsers send Origin on WebSocket handshakes; a foreign page must not ride the agent's cookie."""
    origin = request.headers.get("Origin")
    if not origin:
        return True  # not a browser (bench, integrators with a bearer token)
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade an authenticated agent's request to the live event feed."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise ApiError(401, "authentication required", "unauthenticated")
    if principal.role not in SUPPORT:
        raise ApiError(403, "the live inbox needs the role admin or agent", "forbidden")
    if principal.via == "session" and not _same_origin(request):
        raise ApiError(403, "cross-origin WebSocket refused", "bad_origin")
    ctx = request.app[CTX]
    ws = web.WebSocketResponse(heartbeat=25.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = hub_for(ctx)
    client = Client(ws, principal.agent_id, principal.role)
    async with ctx.db.session() as s:
        client.inboxes = await visible_inbox_set(s, principal.agent_id, principal.role)
    client.offer(json.dumps({"type": "hello", "agent_id": principal.agent_id, "process": ctx.bus.process_id}))
    hub.add(client)
    pump = asyncio.create_task(client.pump())
    watch = asyncio.create_task(_watch_session(request, ws, client, principal.via))
    last_typing = 0.0
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame: Any = json.loads(msg.data)
                kind = frame.get("type")
            except (ValueError, AttributeError):
                continue  # junk from a client is ignored, not fatal
            if kind == "ping":
                client.offer('{"type": "pong"}')
            elif kind == "typing" and time.monotonic() - last_typing >= TYPING_INTERVAL:
                cid = frame.get("conversation_id")
                if isinstance(cid, int) and cid > 0:
                    last_typing = time.monotonic()
                    await ctx.bus.publish([ev.Event(ev.TYPING, {
                        "conversation_id": cid, "agent_id": principal.agent_id, "agent_name": principal.display_name,
                        "private": bool(frame.get("private")),
                    })])
    finally:
        hub.remove(client)
        client.offer(None)  # type: ignore[arg-type]
        for task in (pump, watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        release_socket(request, ws)
    return ws


async def _watch_session(request: web.Request, ws: web.WebSocketResponse, client: Client, via: str) -> None:
    """Close the socket (4401) once the session has expired or been logged out, or the API token it
    was opened with has been revoked (password reset, deactivation, sign out everywhere); meanwhile keep
    what this tab may see (its inboxes) current."""
    ctx = request.app[CTX]
    if via == "token":
        raw, check = request.headers.get("Authorization", "")[7:].strip(), agent_svc.principal_from_token
    else:
        raw, check = request.cookies.get(SESSION_COOKIE, ""), agent_svc.principal_from_session
    while not ws.closed:
        await asyncio.sleep(SESSION_CHECK_SECONDS)
        async with ctx.db.session() as s:
            alive = await check(s, raw)
            if alive is not None:  # team membership may have changed too: re-read what this tab may see
                client.inboxes = await visible_inbox_set(s, alive.agent_id, alive.role)
        if alive is None:
            await ws.close(code=4401, message=b"session ended")
            return


async def close_sockets(app: web.Application) -> None:
    """Serve is stopping: every agent tab's socket is closed, and the tab reconnects to another server."""
    if CTX in app:
        await close_going_away([client.ws for client in hub_for(app[CTX]).clients])


def add_routes(app: web.Application) -> None:
    """Register GET /ws (closed on shutdown)."""
    app.router.add_get("/ws", websocket)
    app.on_shutdown.append(close_sockets)
