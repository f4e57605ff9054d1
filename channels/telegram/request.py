"""A python-telegram-bot request backend on the application's shared aiohttp session.

Why not PTB's default HTTPXRequest: it opens its own connection pool and httpx logs every
request URL at INFO level, and Bot API URLs contain the bot token. This backend reuses the
runtime's session and never puts a URL (hence the token) into a log line or an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

DEFAULT_TIMEOUT = 20.0


class AiohttpRequest(BaseRequest):
    """Sends Bot API calls through an aiohttp.ClientSession obtained lazily from `session_factory`."""

    def __init__(
        self, session_factory: Callable[[], aiohttp.ClientSession], *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._session_factory = session_factory
        self._timeout = timeout

    @property
    def read_timeout(self) -> float | None:
        """Default read timeout in seconds."""
        return self._timeout

    async def initialize(self) -> None:
        """Nothing to open: the session belongs to the application runtime."""

    async def shutdown(self) -> None:
        """Nothing to close: the session belongs to the application runtime."""

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Perform one HTTP request; errors never mention the URL (it holds the token)."""
        read = self._timeout if isinstance(read_timeout, type(BaseRequest.DEFAULT_NONE)) else read_timeout
        connect = (
            self._timeout if isinstance(connect_timeout, type(BaseRequest.DEFAULT_NONE)) else connect_timeout
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        data: aiohttp.FormData | None = None
        if request_data is not None:
            data = _form_data(request_data)
        try:
            async with self._session_factory().request(
                method, url, data=data, timeout=timeout, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TimedOut("Timed out talking to the Bot API") from exc
        except aiohttp.ClientError as exc:
            # str(exc) of several aiohttp errors contains the request URL: keep only the class.
            raise NetworkError(f"Bot API connection error ({type(exc).__name__})") from None


def _form_data(request_data: RequestData) -> aiohttp.FormData:
    """Parameters as form fields, files as multipart parts (what the Bot API accepts)."""
    form = aiohttp.FormData(quote_fields=False)
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mime_type) in request_data.multipart_data.items():
        payload = content if isinstance(content, bytes) else content.read()
        form.add_field(name, payload, filename=filename, content_type=mime_type)
    return form
