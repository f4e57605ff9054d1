"""The access_token of one AppID, shared by every process through the runtime's cache.

WeChat invalidates the previous token whenever /cgi-bin/token hands out a new one, so two processes
fetching independently would log each other out. The token therefore lives in the shared cache and
only the holder of the cache lock fetches; everybody else re-reads the cache after the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp

from channels.base import SharedCache
from channels.wechat.transport import WeChatAPIError, request_json

log = logging.getLogger(__name__)

# Refresh this long before WeChat's expiry so no process uses a token in its last minutes.
REFRESH_MARGIN_SECONDS = 300.0
# Credential problems: the classic endpoint would answer the same, so do not fall back.
_CREDENTIAL_ERRORS = {40002, 40013, 40125, 40164, 41002, 41004, 40243, 89503}


class AccessTokenProvider:
    """Get / refresh the access_token of one AppID through the shared cache."""

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        cache: SharedCache,
        http: Callable[[], aiohttp.ClientSession],
        base_url: str,
        use_stable_token: bool = True,
    ) -> None:
        self._app_id = app_id
        self._app_secret = app_secret
        self._cache = cache
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._use_stable = use_stable_token
        self.cache_key = f"wechat:access_token:{app_id}"
        self._lock_key = f"{self.cache_key}:lock"

    async def get(self) -> str:
        """Return a valid token, fetching one (by one process only) when the cache has none."""
        token = await self._cache.get(self.cache_key)
        if token:
            return token
        async with self._cache.lock(self._lock_key):
            token = await self._cache.get(self.cache_key)  # another process may have fetched it
            if token:
                return token
            return await self._fetch_and_store(force=False)

    async def refresh(self, stale: str) -> str:
        """WeChat rejected `stale` (40001/42001/40014): replace it unless someone already did."""
        async with self._cache.lock(self._lock_key):
            current = await self._cache.get(self.cache_key)
            if current and current != stale:
                return current
            await self._cache.delete(self.cache_key)
            return await self._fetch_and_store(force=True)

    async def _fetch_and_store(self, *, force: bool) -> str:
        token, expires_in = await self._fetch(force=force)
        ttl = expires_in - REFRESH_MARGIN_SECONDS if expires_in > 2 * REFRESH_MARGIN_SECONDS else expires_in / 2
        await self._cache.set(self.cache_key, token, ttl=max(ttl, 1.0))
        log.info("wechat access_token refreshed for app %s (valid %ss)", self._app_id, expires_in)
        return token

    async def _fetch(self, *, force: bool) -> tuple[str, float]:
        if self._use_stable:
            try:
                return await self._fetch_stable(force=force)
            except WeChatAPIError as exc:
                if exc.errcode in _CREDENTIAL_ERRORS:
                    raise
                log.warning(
                    "wechat stable_token failed for app %s (%s); falling back to /cgi-bin/token",
                    self._app_id,
                    exc.errcode,
                )
        return await self._fetch_classic()

    async def _fetch_stable(self, *, force: bool) -> tuple[str, float]:
        data = await request_json(
            self._http(),
            "POST",
            f"{self._base_url}/cgi-bin/stable_token",
            payload={
                "grant_type": "client_credential",
                "appid": self._app_id,
                "secret": self._app_secret,
                "force_refresh": force,
            },
        )
        return _token_of(data)

    async def _fetch_classic(self) -> tuple[str, float]:
        data = await request_json(
            self._http(),
            "GET",
            f"{self._base_url}/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": self._app_id,
                "secret": self._app_secret,
            },
        )
        return _token_of(data)


def _token_of(data: dict[str, object]) -> tuple[str, float]:
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise WeChatAPIError(-1, "token answer without access_token")
    try:
        expires_in = float(data.get("expires_in", 7200))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        expires_in = 7200.0
    return token, expires_in
