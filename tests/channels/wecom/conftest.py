"""Fixtures of the WeCom channel tests: a fake WeCom API on 127.0.0.1 and adapters wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from channels.base import InboxConfig
from channels.wecom import WeComContactsAdapter, WeComKfAdapter
from tests.channels.wecom.fake_wecom_api import FakeWeCom
from tests.channels.wecom.wecom_samples import AES_KEY, CONTACTS_SECRET, CORP_ID, OPEN_KFID, SECRET, TOKEN
from tests.fakes import FakeRuntime, RecordingSink


@pytest.fixture
def fake() -> FakeWeCom:
    return FakeWeCom()


@pytest.fixture
async def api_url(aiohttp_server: Any, fake: FakeWeCom) -> str:
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
def make_kf(api_url: str, runtime: FakeRuntime) -> Callable[..., WeComKfAdapter]:
    def build(**settings: Any) -> WeComKfAdapter:
        inbox = InboxConfig(id=1, name="微信客服", channel_type="wecom_kf",
                            settings={"corp_id": CORP_ID, "open_kfid": OPEN_KFID, "api_base_url": api_url, **settings},
                            secrets={"secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
        adapter = WeComKfAdapter(inbox, runtime)
        adapter.client.throttle_base = 0.01
        return adapter

    return build


@pytest.fixture
def kf(make_kf: Callable[..., WeComKfAdapter]) -> WeComKfAdapter:
    return make_kf()


@pytest.fixture
def contacts(api_url: str, runtime: FakeRuntime) -> WeComContactsAdapter:
    inbox = InboxConfig(id=2, name="客户联系", channel_type="wecom_contacts",
                        settings={"corp_id": CORP_ID, "api_base_url": api_url},
                        secrets={"secret": CONTACTS_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})
    adapter = WeComContactsAdapter(inbox, runtime)
    adapter.client.throttle_base = 0.01
    return adapter
