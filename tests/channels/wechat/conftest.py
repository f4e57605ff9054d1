"""Fixtures of the WeChat channel tests: a fake WeChat API on 127.0.0.1 and a fake runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from channels.base import InboxConfig
from channels.wechat import WeChatAdapter
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN
from tests.fakes import FakeRuntime, RecordingSink


@pytest.fixture
def fake() -> FakeWeChat:
    return FakeWeChat()


@pytest.fixture
async def api_url(aiohttp_server: Any, fake: FakeWeChat) -> str:
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def runtime(http: aiohttp.ClientSession) -> FakeRuntime:
    return FakeRuntime(http)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def make_adapter(api_url: str, runtime: FakeRuntime) -> Callable[..., WeChatAdapter]:
    def build(
        *, runtime_: FakeRuntime | None = None, settings: dict[str, Any] | None = None, **secrets: Any
    ) -> WeChatAdapter:
        inbox = InboxConfig(
            id=1,
            name="公众号",
            channel_type="wechat_oa",
            # Compatible mode: most tests send plaintext callbacks (safe mode is tested on its own).
            settings={"api_base_url": api_url, "callback_mode": "compatible", **(settings or {})},
            secrets={
                "app_id": APP_ID,
                "app_secret": APP_SECRET,
                "token": TOKEN,
                "encoding_aes_key": AES_KEY,
                **secrets,
            },
        )
        return WeChatAdapter(inbox, runtime_ or runtime)

    return build


@pytest.fixture
def adapter(make_adapter: Callable[..., WeChatAdapter]) -> WeChatAdapter:
    return make_adapter()
