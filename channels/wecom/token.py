"""The access_token of one WeCom app secret, shared by every process through the runtime's cache.

WeCom hands out the same token again within its validity, but calling gettoken often gets the
caller frequency-blocked, so only the holder of the cache lock fetches and everybody else re-reads
the cache. Tokens are per secret: the 微信客服 app and the 客户联系 secret have separate caches.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import aiohttp

from channels.base import SharedCache
from channels.wechat.transport import WeChatAPIError, request_json

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 300.0  # stop using a token this long before WeCom's expiry
MEMO_SECONDS = 60.0  # a token read from the cache is reused this long without asking the cache again


class WeComTokenProvider:
    """Get / refresh the access_token of (corp id, secret) through the shared cache, one fetch at a time."""

    def __init__(self, *, corp_id: str, secret: str, cache: SharedCache,
                 http: Callable[[], aiohttp.ClientSession], base_url: str) -> None:
        self._corp_id = corp_id
        self._secret = secret
        self._cache = cache
        self._http = http
        self._base_url = base_url.rstrip("/")
        # The secret's digest, never the secret: keys show up in Redis listings.
        digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
        self.cache_key = f"wecom:access_token:{corp_id}:{digest}"
        self._lock_key = f"{self.cache_key}:lock"
        self.fetches = 0
        # This process's copy: every API call asking the cache first cost a round trip on the kf pull's
        # critical path (one sync_msg page after another). A token WeCom invalidated early is still
        # caught: the call fails with 40014/42001 and refresh() drops the copy.
        self._memo: tuple[str, float] | None = None

    def _remember(self, token: str, ttl: float = MEMO_SECONDS) -> str:
        self._memo = (token, time.monotonic() + min(ttl, MEMO_SECONDS))
        return token

    async def get(self) -> str:
        """Return a valid token, fetching one (by one process only) when the cache has none."""
        if self._memo is not None and self._memo[1] > time.monotonic():
            return self._memo[0]
        token = await self._cache.get(self.cache_key)
        if token:
            return self._remember(token)
        async with self._cache.lock(self._lock_key):
            token = await self._cache.get(self.cache_key)
            if token:
                return self._remember(token)
            return await self._fetch_and_store()

    async def refresh(self, stale: str) -> str:
        """WeCom rejected `stale` (40014/42001): replace it unless another caller already did."""
        self._memo = None
        async with self._cache.lock(self._lock_key):
            current = await self._cache.get(self.cache_key)
            if current and current != stale:
                return self._remember(current)
            await self._cache.delete(self.cache_key)
            return await self._fetch_and_store()

    async def _fetch_and_store(self) -> str:
        self.fetches += 1
        data = await request_json(self._http(), "GET", f"{self._base_url}/cgi-bin/gettoken",
                                  params={"corpid": self._corp_id, "corpsecret": self._secret})
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatAPIError(-1, "gettoken answer without access_token")
        try:
            expires_in = float(data.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        ttl = expires_in - REFRESH_MARGIN_SECONDS if expires_in > 2 * REFRESH_MARGIN_SECONDS else expires_in / 2
        await self._cache.set(self.cache_key, token, ttl=max(ttl, 1.0))
        self._remember(token, max(ttl, 1.0))
        log.info("wecom access_token fetched for corp %s (valid %ss)", self._corp_id, expires_in)
        return token
