"""Small in-memory fakes of the application runtime and the ingest sink for Telegram tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from scrm.domain import Inbound, IngestOutcome, WebhookRequest

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK_SECRET = "s3cr3t-token_for-tests"


def load_fixture(name: str) -> dict[str, Any]:
    """A Bot API update from fixtures/<name>.json."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


class MemoryStorage:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._ids = itertools.count(1)

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        key = f"mem/{next(self._ids)}/{filename or 'file'}"
        self.files[key] = data
        return key

    async def load(self, key: str) -> bytes:
        return self.files[key]


class MemoryCache:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    @asynccontextmanager
    async def lock(self, key: str, timeout: float = 30.0) -> AsyncIterator[None]:
        async with self._locks.setdefault(key, asyncio.Lock()):
            yield


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return self.values.get(key)

    async def set(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))  # like a JSON column


class FakeRuntime:
    def __init__(self, http: aiohttp.ClientSession, public_url: str | None = None) -> None:
        self.http = http
        self.storage = MemoryStorage()
        self.cache = MemoryCache()
        self.state = MemoryState()
        self.public_url = public_url

    async def passive_reply(self, outcome: IngestOutcome, timeout: float) -> None:
        return None


class RecordingSink:
    """Stores items once per (kind, external_id), like the ingest service's unique constraint."""

    def __init__(self) -> None:
        self.calls: list[list[Inbound]] = []
        self.stored: dict[str, Inbound] = {}
        self.fail_with: Exception | None = None
        self._ids = itertools.count(1)

    async def __call__(self, items: Sequence[Inbound]) -> list[IngestOutcome]:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(list(items))
        outcomes = []
        for item in items:
            key = f"{type(item).__name__}:{item.external_id}:{getattr(item, 'kind', '')}"
            if item.external_id is not None and key in self.stored:
                outcomes.append(IngestOutcome(duplicate=True))
                continue
            self.stored[key] = item
            outcomes.append(IngestOutcome(duplicate=False, message_id=next(self._ids)))
        return outcomes

    @property
    def items(self) -> list[Inbound]:
        return [item for call in self.calls for item in call]


def webhook_request(body: bytes | dict[str, Any], secret: str | None = WEBHOOK_SECRET) -> WebhookRequest:
    """A webhook POST as Telegram sends it."""
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    return WebhookRequest(method="POST", path="/webhooks/telegram/7", query={}, headers=headers, body=raw)
