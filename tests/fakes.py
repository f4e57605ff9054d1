"""In-memory stand-ins for what the application lends a channel adapter (channels.base.ChannelRuntime and
the ingest sink). One set for every adapter-level test (email, Telegram, WeChat, WeCom), so a change to the
runtime protocol is made here once."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from scrm.domain import Inbound, IngestOutcome, OutboundMessage

__all__ = ["FakeRuntime", "MemoryCache", "MemoryState", "MemoryStorage", "RecordingSink"]


class MemoryStorage:
    """FileStorage in a dict: files[key] == (data, filename, mime_type)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str | None, str | None]] = {}

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        key = f"file-{len(self.files) + 1}"
        self.files[key] = (data, filename, mime_type)
        return key

    async def load(self, key: str) -> bytes:
        return self.files[key][0]


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
        async with self._locks.setdefault(key, asyncio.Lock()):
            yield


class MemoryState:
    """DurableState in a dict. Values go through JSON like the database column, and every read is a fresh
    copy like a fresh load, so an adapter that mutates what it read without saving it is caught."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return copy.deepcopy(self.values.get(key))

    async def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))


class FakeRuntime:
    """ChannelRuntime for adapter tests.

    `reply` is what passive_reply answers; `passive_calls`, `pulls` and `pushes` record what the adapter asked
    for. `cache` may be shared between two runtimes to stand in for Redis shared by two processes."""

    def __init__(self, http: Any = None, cache: MemoryCache | None = None, *, public_url: str | None = None) -> None:
        self.http = http  # aiohttp.ClientSession (None for adapters that make no HTTP calls)
        self.storage = MemoryStorage()
        self.cache = cache or MemoryCache()
        self.state = MemoryState()
        self.public_url = public_url
        self.reply: OutboundMessage | None = None
        self.passive_calls: list[tuple[IngestOutcome, float]] = []
        self.pulls: list[dict[str, Any]] = []
        self.pushes: list[tuple[str, str]] = []

    def expects_passive_reply(self) -> bool:
        return True

    async def request_pull(self, data: Mapping[str, Any]) -> None:
        self.pulls.append(dict(data))

    async def push(self, topic: str, payload: str) -> None:
        self.pushes.append((topic, payload))

    async def passive_reply(
        self, outcome: IngestOutcome, timeout: float, accept: Callable[[OutboundMessage], bool] | None = None
    ) -> OutboundMessage | None:
        self.passive_calls.append((outcome, timeout))
        if self.reply is not None and accept is not None and not accept(self.reply):
            return None  # like the real runtime: the worker sends it instead
        return self.reply


class RecordingSink:
    """The ingest sink: records every batch and stores an item once per (type, external_id, kind), like the
    ingest service's unique constraint; a duplicate answers the first item's message id.

    `fail = n` makes the next n calls raise (a database blip); `fail_with` makes every call raise it."""

    def __init__(self) -> None:
        self.batches: list[list[Inbound]] = []
        self.stored: dict[str, Inbound] = {}
        self.fail = 0
        self.fail_with: Exception | None = None
        self._message_ids: dict[str, int] = {}
        self._ids = itertools.count(1)

    @property
    def items(self) -> list[Inbound]:
        return [item for batch in self.batches for item in batch]

    async def __call__(self, items: Sequence[Inbound]) -> list[IngestOutcome]:
        if self.fail_with is not None:
            raise self.fail_with
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database unavailable")
        self.batches.append(list(items))
        outcomes = []
        for item in items:
            if item.external_id is None:  # no dedup key: stored every time
                outcomes.append(IngestOutcome(duplicate=False, message_id=next(self._ids)))
                continue
            key = f"{type(item).__name__}:{item.external_id}:{getattr(item, 'kind', '')}"
            duplicate = key in self._message_ids
            if not duplicate:
                self.stored[key] = item
                self._message_ids[key] = next(self._ids)
            outcomes.append(IngestOutcome(duplicate=duplicate, message_id=self._message_ids[key]))
        return outcomes
