"""Fixtures of the email adapter tests: fixture mails, a free port and adapters on the shared fake runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from channels.base import InboxConfig
from channels.email import EmailAdapter
from tests.conftest import free_port
from tests.fakes import FakeRuntime, RecordingSink

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """Bytes of one of our own fixture mails."""
    return (FIXTURES / name).read_bytes()


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
def sink() -> RecordingSink:
    return RecordingSink()


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
