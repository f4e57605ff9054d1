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
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from channels.base import FetchedFile
from channels.wechat.transport import (
    WeChatAPIError,
    WeChatNetworkError,
    check_errcode,
    decode_json,
    request_json,
)
from channels.wecom.token import WeComTokenProvider

TOKEN_ERRORS = frozenset({40014, 42001})
THROTTLED = frozenset({45009, 45033})
MEDIA_TIMEOUT = 60.0
MEDIA_CHUNK = 20 * 1024 * 1024  # media/get answers at most this much per call (Range above it)
MEDIA_TOO_LARGE = 830002  # a plain media/get of a file over 20 MB
T = TypeVar("T")
_CONTENT_RANGE = re.compile(r"^bytes\s+\d+-\d+/(\d+)$", re.IGNORECASE)
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

    async def get_media(self, media_id: str, *, max_bytes: int = MEDIA_CHUNK) -> FetchedFile:
        """media/get: the file on success (binary with Content-disposition), JSON {errcode} on failure.

        A file over 20 MB is refused by a plain call (830002) and read in Range chunks of at most 20 MB
        (PROTOCOL.md §4). A file over `max_bytes` is refused before its body is read (its size comes
        from Content-Length or Content-Range), so memory holds at most `max_bytes` of it."""
        try:
            return (await self._with_token(lambda token: self._media_part(token, media_id, None, max_bytes))).file
        except WeChatAPIError as exc:
            if isinstance(exc, MediaTooLarge) or exc.errcode != MEDIA_TOO_LARGE:
                raise
        return await self._get_ranged(media_id, max_bytes)

    async def _get_ranged(self, media_id: str, max_bytes: int) -> FetchedFile:
        first = await self._with_token(lambda token: self._media_part(token, media_id, (0, MEDIA_CHUNK), max_bytes))
        total = first.total or len(first.file.data)
        chunks, got = [first.file.data], len(first.file.data)
        while got < total:
            part = await self._with_token(lambda token, start=got: self._media_part(  # type: ignore[misc]
                token, media_id, (start, MEDIA_CHUNK), max_bytes))
            if not part.file.data:
                raise WeChatNetworkError("media/get answered an empty range")
            chunks.append(part.file.data)
            got += len(part.file.data)
        return FetchedFile(data=b"".join(chunks), filename=first.file.filename, mime_type=first.file.mime_type)

    async def _media_part(self, token: str, media_id: str, span: tuple[int, int] | None, max_bytes: int) -> _Part:
        """One media/get call (a byte range of `span` = (start, length) when given), its body read only
        when the announced size fits `max_bytes`."""
        headers = {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"} if span else None
        try:
            async with self._http().get(f"{self._base}/cgi-bin/media/get", headers=headers,
                                        params={"access_token": token, "media_id": media_id},
                                        timeout=aiohttp.ClientTimeout(total=MEDIA_TIMEOUT)) as resp:
                if resp.status >= 500:
                    raise WeChatNetworkError(f"WeCom answered HTTP {resp.status}")
                if resp.status not in (200, 206):
                    raise WeChatAPIError(-resp.status, f"HTTP {resp.status}")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype in ("application/json", "text/plain", "text/json"):
                    check_errcode(decode_json(await resp.content.read(64 * 1024)))
                    raise WeChatAPIError(-1, "media/get answered JSON without a file")
                total = _total_size(resp.headers.get("Content-Range", "")) or (
                    None if span else (resp.content_length or None))
                if total is not None and total > max_bytes:
                    raise MediaTooLarge(total, max_bytes)
                limit = span[1] if span else max_bytes
                body = await resp.content.read(limit + 1)
                while len(body) <= limit and not resp.content.at_eof():
                    more = await resp.content.read(limit + 1 - len(body))
                    if not more:
                        break
                    body += more
                if len(body) > limit:
                    raise MediaTooLarge(max(total or 0, len(body)), max_bytes)
                if body[:1] == b"{" and not span:
                    check_errcode(decode_json(body))
                    raise WeChatAPIError(-1, "media/get answered JSON without a file")
                return _Part(FetchedFile(data=body, filename=_filename(resp.headers), mime_type=ctype or None), total)
        except TimeoutError as exc:
            raise WeChatNetworkError("timed out talking to WeCom") from exc
        except aiohttp.ClientError as exc:  # its text may contain the URL with the token: the class name only
            raise WeChatNetworkError(f"network error talking to WeCom ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class _Part:
    file: FetchedFile
    total: int | None  # the whole file's size when the answer says it (Content-Range)


class MediaTooLarge(WeChatAPIError):
    """A file above the size this server keeps: refused before it is downloaded."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(MEDIA_TOO_LARGE, f"the file is {size} bytes, above the {limit} bytes this server keeps; "
                                          "open it in the WeCom client within 3 days")
        self.size, self.limit = size, limit


def _total_size(content_range: str) -> int | None:
    match = _CONTENT_RANGE.match(content_range.strip())
    return int(match.group(1)) if match else None


def _filename(headers: Mapping[str, str]) -> str | None:
    match = _FILENAME.search(headers.get("Content-Disposition", "") or headers.get("Content-disposition", ""))
    return match.group(1) if match else None


def _extension(mime_type: str | None, kind: str) -> str:
    if mime_type and "/" in mime_type:
        sub = mime_type.split("/", 1)[1].split(";")[0]
        return {"jpeg": "jpg", "mpeg": "mp3", "octet-stream": "bin"}.get(sub, sub)
    return {"image": "jpg", "voice": "amr", "video": "mp4"}.get(kind, "bin")
