"""Shared by the marketing API modules: the roles that may use it, service errors as API errors, CSV downloads."""

from __future__ import annotations

from aiohttp import web

from scrm.web.routing import ApiError

MARKETING = frozenset({"admin", "marketer"})


def service_error(exc: Exception) -> ApiError:
    """A service's error (with `status` and `code` when it has them) as the API's answer."""
    status, code = getattr(exc, "status", 400), getattr(exc, "code", "invalid")
    return ApiError(status, str(exc), code)


def csv_response(body: str, filename: str) -> web.Response:
    return web.Response(body=body.encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
