"""Token-authenticated calls to the WeCom API (qyapi.weixin.qq.com, or a fake in tests).

Branches on errcode only: errmsg carries a changing ", hint: [...], from ip: ..." suffix. A token
WeCom calls invalid or expired (40014 / 42001) is refetched once and the call retried once; the
frequency and concurrency limits (45009 / 45033) are retried here a few times with exponential
backoff before the caller sees them. Error messages never contain the URL (it has the token).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp

from channels.base import FetchedFile
from channels.wechat.transport import (
    WeChatAPIError,
    WeChatNetworkError,
    check_errcode,
    decode_json,
    request,
    request_json,
)
from channels.wecom.token import WeComTokenProvider

TOKEN_ERRORS = frozenset({40014, 42001})
THROTTLED = frozenset({45009, 45033})
MEDIA_TIMEOUT = 60.0
T = TypeVar("T")
_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)

WeComAPIError = WeChatAPIError  # same {errcode, errmsg} convention; the class is shared
WeComNetworkError = WeChatNetworkError


class WeComClient:
    """Calls with the access_token of one secret."""

    def __init__(self, *, http: Callable[[], aiohttp.ClientSession], base_url: str, tokens: WeComTokenProvider,
                 throttle_retries: int = 3, throttle_base: float = 0.5) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self.tokens = tokens
        self.throttle_retries = throttle_retries
        self.throttle_base = throttle_base

    async def _with_token(self, call: Callable[[str], Awaitable[T]]) -> T:
        attempt = 0
        refreshed = False
        token = await self.tokens.get()
        while True:
            try:
                return await call(token)
            except WeChatAPIError as exc:
                if exc.errcode in TOKEN_ERRORS and not refreshed:
                    refreshed = True
                    token = await self.tokens.refresh(stale=token)
                    continue
                if exc.errcode in THROTTLED and attempt < self.throttle_retries:
                    await asyncio.sleep(self.throttle_base * (2 ** attempt) * random.uniform(0.8, 1.2))
                    attempt += 1
                    continue
                raise

    async def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body to /cgi-bin/<path> with the access_token."""

        async def call(token: str) -> dict[str, Any]:
            return await request_json(self._http(), "POST", f"{self._base}/cgi-bin/{path}",
                                      params={"access_token": token}, payload=payload)

        return await self._with_token(call)

    async def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /cgi-bin/<path> with the access_token."""

        async def call(token: str) -> dict[str, Any]:
            return await request_json(self._http(), "GET", f"{self._base}/cgi-bin/{path}",
                                      params={"access_token": token, **params})

        return await self._with_token(call)

    async def upload_media(self, kind: str, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        """media/upload (image, voice, video, file): temporary media kept 3 days; returns its media_id."""

        async def call(token: str) -> dict[str, Any]:
            form = aiohttp.FormData()  # a FormData can be sent only once: rebuilt per attempt
            form.add_field("media", data, filename=filename or f"upload.{_extension(mime_type, kind)}",
                           content_type=mime_type or "application/octet-stream")
            return await request_json(self._http(), "POST", f"{self._base}/cgi-bin/media/upload",
                                      params={"access_token": token, "type": kind}, data=form, timeout=MEDIA_TIMEOUT)

        result = await self._with_token(call)
        media_id = result.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise WeChatAPIError(-1, "media/upload answer without media_id")
        return media_id

    async def get_media(self, media_id: str) -> FetchedFile:
        """media/get: the file on success (binary with Content-disposition), JSON {errcode} on failure."""

        async def call(token: str) -> FetchedFile:
            status, headers, body = await request(self._http(), "GET", f"{self._base}/cgi-bin/media/get",
                                                  params={"access_token": token, "media_id": media_id},
                                                  timeout=MEDIA_TIMEOUT)
            if status >= 500:
                raise WeChatNetworkError(f"WeCom answered HTTP {status}")
            if status != 200:
                raise WeChatAPIError(-status, f"HTTP {status}")
            ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype in ("application/json", "text/plain", "text/json") or body[:1] == b"{":
                data = decode_json(body)
                check_errcode(data)
                raise WeChatAPIError(-1, "media/get answered JSON without a file")
            return FetchedFile(data=body, filename=_filename(headers), mime_type=ctype or None)

        return await self._with_token(call)


def _filename(headers: Mapping[str, str]) -> str | None:
    match = _FILENAME.search(headers.get("Content-Disposition", "") or headers.get("Content-disposition", ""))
    return match.group(1) if match else None


def _extension(mime_type: str | None, kind: str) -> str:
    if mime_type and "/" in mime_type:
        sub = mime_type.split("/", 1)[1].split(";")[0]
        return {"jpeg": "jpg", "mpeg": "mp3", "octet-stream": "bin"}.get(sub, sub)
    return {"image": "jpg", "voice": "amr", "video": "mp4"}.get(kind, "bin")
