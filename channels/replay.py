"""Refuse a replayed callback: the same (timestamp, nonce) pair with a different body.

WeChat's plaintext-mode signature covers only (token, timestamp, nonce), not the body: anyone who saw
one signed callback could send any body under its query string while the timestamp is in the window.
So a pair is remembered for the window (twice it: the timestamp is accepted on either side of now),
with a fingerprint of its body. The same body again is the platform retrying (it does, with the same
query, when our answer was slow) and is let through: ingest deduplicates it. Another body is refused.

Redis when the application has it (shared by every process, SET-if-absent-or-same in one step),
this process's memory otherwise or while Redis cannot be reached.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from scrm.domain import WebhookError

log = logging.getLogger(__name__)

_LOCAL: dict[str, tuple[str, float]] = {}  # key -> (fingerprint, expires at, monotonic)
_LOCAL_MAX = 100_000


class ReplayGuard:
    """Remembers (timestamp, nonce) pairs of one inbox's callbacks for the timestamp window."""

    def __init__(self, cache: Any, *, scope: str, window: float) -> None:
        self.cache = cache
        self.scope = scope
        self.ttl = 2 * window + 5

    async def check(self, timestamp: str, nonce: str, body: bytes) -> None:
        """Record the pair; WebhookError 403 when it was seen with another body."""
        pair = hashlib.sha256(f"{timestamp}\x00{nonce}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
        key = f"replay:{self.scope}:{pair}"
        fingerprint = hashlib.sha256(body).hexdigest()
        if not await self._first_or_same(key, fingerprint):
            log.warning("callback refused on %s: (timestamp, nonce) replayed with another body", self.scope)
            raise WebhookError(403, "replayed callback (timestamp and nonce already used)", code="replayed")

    async def _first_or_same(self, key: str, fingerprint: str) -> bool:
        acquire = getattr(self.cache, "try_acquire", None)
        if acquire is not None:
            try:
                return bool(await acquire(key, fingerprint, self.ttl))
            except Exception as exc:  # noqa: BLE001 - Redis unavailable: this process still remembers
                log.warning("replay cache unavailable (%s): checking in this process", type(exc).__name__)
        return _local_first_or_same(key, fingerprint, self.ttl)


def _local_first_or_same(key: str, fingerprint: str, ttl: float) -> bool:
    now = time.monotonic()
    seen = _LOCAL.get(key)
    if seen is not None and seen[1] > now:
        return seen[0] == fingerprint
    if len(_LOCAL) >= _LOCAL_MAX:
        for k in [k for k, (_, expires) in _LOCAL.items() if expires <= now]:
            del _LOCAL[k]
        if len(_LOCAL) >= _LOCAL_MAX:  # a flood inside the window: forget the oldest half
            for k in list(_LOCAL)[: _LOCAL_MAX // 2]:
                del _LOCAL[k]
    _LOCAL[key] = (fingerprint, now + ttl)
    return True
