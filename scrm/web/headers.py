"""Security headers, applied once to every response as it is prepared (scrm.web.app installs the hook).

A middleware sees a FileResponse before it has a content type (that is set while it is prepared), so
pages served as files got no CSP; `on_response_prepare` runs when the headers are final.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

_BASE = ("default-src 'self'; script-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
         "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'")


def content_security_policy(frame_ancestors: Sequence[str] = ("'none'",)) -> str:
    """The one CSP of our pages; only who may frame them differs (the web chat page: the customer's sites)."""
    return f"{_BASE}; frame-ancestors {' '.join(frame_ancestors)}"


APP_CSP = content_security_policy()


async def apply_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """nosniff and a referrer policy everywhere; on HTML, the app's CSP and no framing unless the page set
    its own CSP (the embeddable web chat page names the sites that may frame it)."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml") and "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = APP_CSP
        headers.setdefault("X-Frame-Options", "DENY")
