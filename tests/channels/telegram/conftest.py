"""Fixtures for the Telegram adapter: a fake Bot API server, a fake runtime and a recording sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from channels.base import InboxConfig
from channels.telegram import TelegramAdapter
from scrm.domain import Inbound
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.channels.telegram.helpers import WEBHOOK_SECRET, load_fixture, webhook_request
from tests.fakes import FakeRuntime, RecordingSink


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi() as api:
        yield api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def runtime(http: aiohttp.ClientSession) -> FakeRuntime:
    return FakeRuntime(http)


AdapterFactory = Callable[..., TelegramAdapter]


@pytest.fixture
def make_adapter(bot_api: FakeBotApi, runtime: FakeRuntime) -> AdapterFactory:
    """Build an adapter pointed at the fake Bot API; keyword arguments override settings."""

    def factory(**settings: Any) -> TelegramAdapter:
        inbox = InboxConfig(
            id=7, name="Telegram 客服", channel_type="telegram",
            settings={"api_base_url": bot_api.base_url, "poll_timeout": 0, **settings},
            secrets={"bot_token": DEFAULT_TOKEN, "webhook_secret": WEBHOOK_SECRET},
        )
        return TelegramAdapter(inbox, runtime)

    return factory


@pytest.fixture
def adapter(make_adapter: AdapterFactory) -> TelegramAdapter:
    return make_adapter()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


Deliver = Callable[[str], Awaitable[list[Inbound]]]


@pytest.fixture
def deliver(adapter: TelegramAdapter, sink: RecordingSink) -> Deliver:
    """Post a fixture through the webhook and return what reached the sink."""

    async def run(name: str) -> list[Inbound]:
        response = await adapter.handle_webhook(webhook_request(load_fixture(name)), sink)
        assert response.status == 200
        return sink.items

    return run
