"""Small in-memory stand-ins for what the application lends an adapter (runtime, sink)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from scrm.domain import Inbound, IngestOutcome, OutboundMessage


class MemoryCache:
    """SharedCache in one process: values with TTL and one asyncio lock per key."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float | None]] = {}
        self.ttls: dict[str, float | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> str | None:
        item = self.values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires < time.monotonic():
            del self.values[key]
            return None
        return value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.ttls[key] = ttl
        self.values[key] = (value, time.monotonic() + ttl if ttl else None)

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    @asynccontextmanager
    async def lock(self, key: str, timeout: float = 30.0) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield


class MemoryStorage:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str | None, str | None]] = {}

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        key = f"file-{len(self.files) + 1}"
        self.files[key] = (data, filename, mime_type)
        return key

    async def load(self, key: str) -> bytes:
        return self.files[key][0]


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return self.values.get(key)

    async def set(self, key: str, value: Any) -> None:
        self.values[key] = value


class FakeRuntime:
    """ChannelRuntime for tests; `reply` is what passive_reply answers (per stored message)."""

    def __init__(self, http: aiohttp.ClientSession, cache: MemoryCache | None = None) -> None:
        self.http = http
        self.storage = MemoryStorage()
        self.cache = cache or MemoryCache()
        self.state = MemoryState()
        self.public_url: str | None = "https://crm.example.com"
        self.reply: OutboundMessage | None = None
        self.passive_calls: list[tuple[IngestOutcome, float]] = []

    def expects_passive_reply(self) -> bool:
        return True

    async def passive_reply(
        self, outcome: IngestOutcome, timeout: float, accept: Callable[[OutboundMessage], bool] | None = None
    ) -> OutboundMessage | None:
        self.passive_calls.append((outcome, timeout))
        if self.reply is not None and accept is not None and not accept(self.reply):
            return None  # like the real runtime: the worker sends it instead
        return self.reply


class RecordingSink:
    """The ingest sink: records every batch and deduplicates by external id like the real one."""

    def __init__(self) -> None:
        self.batches: list[list[Inbound]] = []
        self._seen: dict[str, int] = {}

    @property
    def items(self) -> list[Inbound]:
        return [item for batch in self.batches for item in batch]

    async def __call__(self, items: Sequence[Inbound]) -> list[IngestOutcome]:
        self.batches.append(list(items))
        outcomes = []
        for item in items:
            key = f"{type(item).__name__}:{item.external_id}"
            duplicate = key in self._seen
            message_id = self._seen.setdefault(key, len(self._seen) + 1)
            outcomes.append(IngestOutcome(duplicate=duplicate, message_id=message_id))
        return outcomes
