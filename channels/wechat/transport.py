"""Low-level HTTP to the WeChat API: JSON in, JSON out, WeChat error codes as exceptions.

Error messages never contain the request URL: it carries the access_token or the AppSecret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 10.0


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero `errcode`."""

    def __init__(self, errcode: int, errmsg: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.data = dict(data or {})  # the whole answer: 45065 carries the msg_id of the earlier 群发


class WeChatNetworkError(Exception):
    """The request did not get a usable answer (connection, timeout, 5xx): worth retrying."""


def json_body(payload: Mapping[str, Any]) -> bytes:
    """Encode JSON as raw UTF-8: WeChat shows `\\uXXXX` escapes literally in some messages."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def check_errcode(data: Mapping[str, Any]) -> None:
    """Raise WeChatAPIError when a WeChat JSON answer reports an error."""
    code = data.get("errcode", 0)
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = -1
    if code != 0:
        raise WeChatAPIError(code, str(data.get("errmsg", "")), data)


def decode_json(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object answer or raise WeChatNetworkError (garbled / truncated answer)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeChatNetworkError("WeChat answered with invalid JSON") from exc
    if not isinstance(data, dict):
        raise WeChatNetworkError("WeChat answered with a non-object JSON value")
    return data


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, Mapping[str, str], bytes]:
    """Perform one request; return (status, headers, body). Network failures -> WeChatNetworkError."""
    try:
        async with http.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            body = await resp.read()
            return resp.status, resp.headers, body
    except TimeoutError as exc:
        raise WeChatNetworkError("timed out talking to WeChat") from exc
    except aiohttp.ClientError as exc:
        # str(exc) may include the URL with the token: keep only the class name.
        raise WeChatNetworkError(f"network error talking to WeChat ({type(exc).__name__})") from exc


async def request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    payload: Mapping[str, Any] | None = None,
    data: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Call a JSON API; raise WeChatAPIError on errcode != 0, WeChatNetworkError on transport trouble."""
    headers = None
    if payload is not None:
        data = json_body(payload)
        headers = {"Content-Type": "application/json; charset=utf-8"}
    status, _, body = await request(
        http, method, url, params=params, data=data, headers=headers, timeout=timeout
    )
    if status >= 500:
        raise WeChatNetworkError(f"WeChat answered HTTP {status}")
    if status != 200:
        raise WeChatAPIError(-status, f"HTTP {status}")
    result = decode_json(body)
    check_errcode(result)
    return result
