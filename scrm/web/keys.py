"""Typed application and request keys (aiohttp web.AppKey)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from scrm.context import AppContext

CTX: web.AppKey[AppContext] = web.AppKey("ctx", Any)  # type: ignore[arg-type]
PRINCIPAL: web.RequestKey[Any] = web.RequestKey("principal", object)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
SESSION_COOKIE = "scrm_session"
CSRF_HEADER = "X-CSRF-Token"
