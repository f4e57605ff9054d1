"""WeCom access tokens: shared through the cache, one fetch at a time, per secret, refetched once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from channels.wecom import WeComContactsAdapter, WeComKfAdapter
from channels.wecom.api import WeComAPIError
from tests.channels.wecom.fake_wecom_api import FakeWeCom


async def test_concurrent_callers_share_one_fetch(make_kf: Callable[..., WeComKfAdapter], fake: FakeWeCom) -> None:
    adapters = [make_kf() for _ in range(3)]  # three adapters (processes) on one shared cache
    tokens = await asyncio.gather(*[a.tokens.get() for a in adapters for _ in range(10)])
    assert len(set(tokens)) == 1 and fake.token_fetches == 1
    assert "kf-app-secret" not in adapters[0].tokens.cache_key  # the key carries a digest, not the secret


async def test_the_contacts_secret_has_its_own_token(kf: WeComKfAdapter, contacts: WeComContactsAdapter,
                                                     fake: FakeWeCom) -> None:
    assert await kf.tokens.get() != await contacts.tokens.get()
    assert fake.token_fetches == 2


async def test_a_rejected_token_is_refetched_once_then_the_error_stands(kf: WeComKfAdapter, fake: FakeWeCom) -> None:
    await kf.tokens.get()
    fake.fail_next("kf/account/list", 42001, 40014)
    with pytest.raises(WeComAPIError) as err:
        await kf.client.post("kf/account/list", {})
    assert err.value.errcode == 40014 and fake.token_fetches == 2


async def test_a_wrong_secret_says_so(make_kf: Callable[..., WeComKfAdapter], fake: FakeWeCom) -> None:
    from scrm.domain import PermanentSendError

    fake.secrets.clear()
    with pytest.raises(PermanentSendError) as err:
        await make_kf().test_connection()
    assert "secret" in err.value.reason
