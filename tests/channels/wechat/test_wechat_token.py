"""The access_token: one per AppID for every process, refreshed once when WeChat rejects it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import pytest

from channels.wechat import WeChatAdapter
from scrm.domain import OutboundMessage, PermanentSendError, TransientSendError
from tests.channels.wechat.fake_wechat_api import APP_SECRET, FakeWeChat
from tests.fakes import FakeRuntime, MemoryCache


def text(body: str = "hi", to: str = "oUser1") -> OutboundMessage:
    return OutboundMessage(delivery_id=1, idempotency_key="k1", inbox_id=1, recipient_id=to, text=body)


async def test_two_processes_sharing_the_cache_fetch_exactly_once(
    make_adapter: Callable[..., WeChatAdapter], fake: FakeWeChat
) -> None:
    shared = MemoryCache()  # stands in for Redis shared by two `scrm worker` processes
    async with aiohttp.ClientSession() as http_a, aiohttp.ClientSession() as http_b:
        one = make_adapter(runtime_=FakeRuntime(http_a, shared))
        two = make_adapter(runtime_=FakeRuntime(http_b, shared))
        await asyncio.gather(*(a.send(text(f"m{i}")) for i in range(10) for a in (one, two)))
    assert fake.token_fetches == 1
    assert len(fake.custom_sends) == 20


async def test_token_is_cached_with_a_margin_before_expiry(
    adapter: WeChatAdapter, runtime: FakeRuntime, fake: FakeWeChat
) -> None:
    await adapter.send(text())
    await adapter.send(text())
    assert fake.token_fetches == 1
    ttl = runtime.cache.ttls[adapter.tokens.cache_key]
    assert ttl is not None and ttl < fake.expires_in  # refreshed before WeChat expires it
    assert adapter.app_id in adapter.tokens.cache_key


async def test_stable_token_endpoint_is_preferred(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.test_connection()
    assert dict(fake.fetches) == {"stable_token": 1}
    assert fake.stable_requests[0]["force_refresh"] is False


async def test_falls_back_to_classic_token_endpoint(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.stable_token_available = False
    assert (await adapter.test_connection()).startswith("ok")
    assert fake.fetches["token"] == 1


@pytest.mark.parametrize("errcode", [40001, 42001, 40014])
async def test_rejected_token_is_refreshed_once_and_the_call_retried(
    adapter: WeChatAdapter, fake: FakeWeChat, errcode: int
) -> None:
    await adapter.send(text("first"))
    if errcode == 40001:
        fake.invalidate_tokens()  # someone fetched a token elsewhere
    else:
        fake.fail_next("/cgi-bin/message/custom/send", errcode)
    await adapter.send(text("second"))
    assert [m["text"]["content"] for m in fake.custom_sends] == ["first", "second"]
    assert fake.token_fetches == 2
    assert fake.stable_requests[-1]["force_refresh"] is True


async def test_token_already_refreshed_by_another_process_is_reused(
    make_adapter: Callable[..., WeChatAdapter], fake: FakeWeChat, runtime: FakeRuntime
) -> None:
    one, two = make_adapter(), make_adapter()  # same cache
    await one.send(text())
    fake.invalidate_tokens()
    await asyncio.gather(one.send(text("a")), two.send(text("b")))
    assert fake.token_fetches == 2  # one initial fetch + one refresh for both


async def test_bad_secret_fails_test_connection_without_logging_it(
    make_adapter: Callable[..., WeChatAdapter], fake: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make_adapter(app_secret="wrong-secret-value")
    with pytest.raises(PermanentSendError, match="invalid appsecret"):
        await adapter.test_connection()
    assert fake.fetches == {"stable_token": 1}  # credential errors do not fall back
    logged = caplog.text
    assert "wrong-secret-value" not in logged and APP_SECRET not in logged


async def test_token_never_appears_in_logs(
    adapter: WeChatAdapter, fake: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await adapter.send(text())
    fake.invalidate_tokens()
    await adapter.send(text())
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")  # not the fake's
    assert ours and "ACCESS_TOKEN_" not in ours and APP_SECRET not in ours


async def test_token_still_rejected_after_refresh_is_retried_later(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.fail_next("/cgi-bin/message/custom/send", 40001, 40001)
    with pytest.raises(TransientSendError):
        await adapter.send(text())
    assert fake.token_fetches == 2  # refreshed once, not in a loop
