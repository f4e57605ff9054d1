"""The few WeChat Official Account HTTP APIs the channel needs, called with aiohttp.

Every call carries the shared access_token; when WeChat says the token is invalid or expired
(40001 / 42001 / 40014) the token is refreshed once and the call retried once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp

from channels.base import FetchedFile
from channels.wechat.token import AccessTokenProvider
from channels.wechat.transport import (
    WeChatAPIError,
    WeChatNetworkError,
    check_errcode,
    decode_json,
    request,
    request_json,
)

TOKEN_ERRORS = frozenset({40001, 42001, 40014})
MEDIA_TIMEOUT = 30.0

T = TypeVar("T")
_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)


class WeChatClient:
    """Token-authenticated calls to api.weixin.qq.com (or a fake in tests)."""

    def __init__(
        self,
        *,
        http: Callable[[], aiohttp.ClientSession],
        base_url: str,
        tokens: AccessTokenProvider,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self.tokens = tokens

    async def _with_token(self, call: Callable[[str], Awaitable[T]]) -> T:
        token = await self.tokens.get()
        try:
            return await call(token)
        except WeChatAPIError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
        token = await self.tokens.refresh(stale=token)
        return await call(token)

    async def post_json(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body to `path` with the access_token."""

        async def call(token: str) -> dict[str, Any]:
            return await request_json(
                self._http(), "POST", self._base + path, params={"access_token": token}, payload=payload
            )

        return await self._with_token(call)

    async def send_custom(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Customer-service message (only inside the 48 h window)."""
        return await self.post_json("/cgi-bin/message/custom/send", payload)

    async def send_template(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Template message (notifications, allowed outside the window)."""
        return await self.post_json("/cgi-bin/message/template/send", payload)

    async def mass_sendall(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """群发 to a tag or to all followers (filter.tag_id / filter.is_to_all)."""
        return await self.post_json("/cgi-bin/message/mass/sendall", payload)

    async def mass_send(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """群发 to a list of 2-10,000 OpenIDs."""
        return await self.post_json("/cgi-bin/message/mass/send", payload)

    async def mass_preview(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a 群发 to one follower as a preview (does not count against the quota)."""
        return await self.post_json("/cgi-bin/message/mass/preview", payload)

    async def mass_get(self, msg_id: str) -> dict[str, Any]:
        """The state of a 群发 job (msg_status: SEND_SUCCESS, SENDING, SEND_FAIL, DELETE)."""
        return await self.post_json("/cgi-bin/message/mass/get", {"msg_id": msg_id})

    async def subscribe_send(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A subscription message (订阅通知) to one follower who consented to the template."""
        return await self.post_json("/cgi-bin/message/subscribe/bizsend", payload)

    async def user_info(self, openid: str) -> dict[str, Any]:
        """user/info: a follower's profile; `unionid` is there when the account is bound to an open platform."""

        async def call(token: str) -> dict[str, Any]:
            return await request_json(self._http(), "GET", self._base + "/cgi-bin/user/info",
                                      params={"access_token": token, "openid": openid, "lang": "zh_CN"})

        return await self._with_token(call)

    async def upload_media(
        self, kind: str, data: bytes, *, filename: str | None, mime_type: str | None
    ) -> str:
        """Upload temporary media (image/voice/video/thumb) and return its media_id."""

        async def call(token: str) -> dict[str, Any]:
            form = aiohttp.FormData()  # rebuilt per attempt: a FormData can be sent only once
            form.add_field(
                "media",
                data,
                filename=filename or f"upload.{_extension(mime_type, kind)}",
                content_type=mime_type or "application/octet-stream",
            )
            return await request_json(
                self._http(),
                "POST",
                self._base + "/cgi-bin/media/upload",
                params={"access_token": token, "type": kind},
                data=form,
                timeout=MEDIA_TIMEOUT,
            )

        result = await self._with_token(call)
        media_id = result.get("media_id") or result.get("thumb_media_id")
        if not isinstance(media_id, str) or not media_id:
            raise WeChatAPIError(-1, "media/upload answer without media_id")
        return media_id

    async def get_media(self, media_id: str) -> FetchedFile:
        """Download temporary media: binary on success, JSON on error (video: JSON with video_url)."""

        async def call(token: str) -> FetchedFile:
            status, headers, body = await request(
                self._http(),
                "GET",
                self._base + "/cgi-bin/media/get",
                params={"access_token": token, "media_id": media_id},
                timeout=MEDIA_TIMEOUT,
            )
            if status >= 500:
                raise WeChatNetworkError(f"WeChat answered HTTP {status}")
            if status != 200:
                raise WeChatAPIError(-status, f"HTTP {status}")
            ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype in ("application/json", "text/plain", "text/json") or body[:1] == b"{":
                data = decode_json(body)
                check_errcode(data)
                url = data.get("video_url")
                if isinstance(url, str) and url:
                    return await self.download(url)
                raise WeChatAPIError(-1, "media/get answered JSON without media")
            return FetchedFile(data=body, filename=_filename(headers), mime_type=ctype or None)

        return await self._with_token(call)

    async def download(self, url: str) -> FetchedFile:
        """Fetch a public media URL (video_url, PicUrl) without a token."""
        status, headers, body = await request(self._http(), "GET", url, timeout=MEDIA_TIMEOUT)
        if status >= 500:
            raise WeChatNetworkError(f"media download answered HTTP {status}")
        if status != 200:
            raise WeChatAPIError(-status, f"media download answered HTTP {status}")
        ctype = headers.get("Content-Type", "").split(";")[0].strip() or None
        return FetchedFile(data=body, filename=_filename(headers), mime_type=ctype)


def _filename(headers: Mapping[str, str]) -> str | None:
    match = _FILENAME.search(headers.get("Content-Disposition", ""))
    return match.group(1) if match else None


def _extension(mime_type: str | None, kind: str) -> str:
    if mime_type and "/" in mime_type:
        sub = mime_type.split("/", 1)[1].split(";")[0]
        return {"jpeg": "jpg", "mpeg": "mp3"}.get(sub, sub)
    return {"image": "jpg", "voice": "amr", "video": "mp4", "thumb": "jpg"}.get(kind, "bin")

