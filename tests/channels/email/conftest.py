"""Small in-memory fakes of the ChannelRuntime for the email adapter tests."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from channels.base import InboxConfig
from channels.email import EmailAdapter
from scrm.domain import Inbound, IngestOutcome

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """Bytes of one of our own fixture mails."""
    return (FIXTURES / name).read_bytes()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MemoryStorage:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str | None, str | None]] = {}

    async def save(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str:
        key = f"file-{len(self.files) + 1}"
        self.files[key] = (data, filename, mime_type)
        return key

    async def load(self, key: str) -> bytes:
        return self.files[key][0]


class MemoryCache:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout: float = 30.0) -> AsyncIterator[None]:
        async with self.locks.setdefault(key, asyncio.Lock()):
            yield


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any | None:
        return copy.deepcopy(self.values.get(key))

    async def set(self, key: str, value: Any) -> None:
        self.values[key] = copy.deepcopy(value)


class FakeRuntime:
    def __init__(self) -> None:
        self.http = None
        self.storage = MemoryStorage()
        self.cache = MemoryCache()
        self.state = MemoryState()
        self.public_url = None

    async def passive_reply(self, outcome: IngestOutcome, timeout: float) -> None:
        return None


class FakeSink:
    """Records what the adapter hands over; can be told to fail."""

    def __init__(self) -> None:
        self.items: list[Inbound] = []
        self.fail: int = 0  # fail the next N calls

    async def __call__(self, items: Sequence[Inbound]) -> list[IngestOutcome]:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database unavailable")
        self.items.extend(items)
        return [IngestOutcome(duplicate=False, message_id=len(self.items)) for _ in items]


def make_adapter(runtime: FakeRuntime | None = None, **settings: Any) -> EmailAdapter:
    """An EmailAdapter for support@example.com with the given settings."""
    base: dict[str, Any] = {"address": "support@example.com", "from_name": "客服 Support"}
    base.update(settings)
    secrets = {"smtp_password": "smtp-secret", "imap_password": "imap-secret"}
    inbox = InboxConfig(id=1, name="Support", channel_type="email", settings=base, secrets=secrets)
    return EmailAdapter(inbox, runtime or FakeRuntime())


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def load() -> Any:
    """Returns the bytes of a fixture mail by file name."""
    return fixture_bytes


@pytest.fixture
def adapter_factory() -> Any:
    """Builds an EmailAdapter: adapter_factory(runtime=None, **settings)."""
    return make_adapter


@pytest.fixture
def port() -> int:
    return free_port()
