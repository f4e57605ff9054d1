"""The kf pull stores pages while it fetches the next and stores message-only batches while the one
before is still being stored: each customer's messages still land in their order, once, and the saved
cursor ends at the last page; a batch with an effect waits for what came before it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from scrm.db.models_wecom import WeComKfCursor
from scrm.services.wecom import kf_store as wecom_kf_store
from scrm.services.wecom import kf_sync as wecom_kf_sync
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import OPEN_KFID, text_item
from tests.integration.helpers_integration import inbound, messages
from tests.integration.wecom_helpers import kf_inbox, notify

CUSTOMERS = [f"wmPipeCustomer{n:017d}" for n in range(12)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as served:
        yield served


async def test_customers_messages_stay_in_order_across_concurrent_batches(client, ctx, fake, monkeypatch) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    monkeypatch.setattr(wecom_kf_sync, "BATCH_ITEMS", 7)  # many small batches, two in flight
    inbox = await kf_inbox(ctx, fake)
    items = [text_item(f"p-{n:03d}", CUSTOMERS[n % 5 if n % 3 else 0], f"消息 {n}") for n in range(120)]
    fake.add(*items)
    fake.page_sizes = [1, 5, 2, 9, 3] * 10
    await notify(client, ctx, fake, inbox.id)
    stored = await inbound(ctx, inbox.id)
    assert sorted(m.external_id for m in stored) == [i["msgid"] for i in items]  # each once
    for customer in CUSTOMERS[:5]:
        theirs = [i["msgid"] for i in items if i["external_userid"] == customer]
        in_db = sorted((m for m in stored if m.external_id in set(theirs)), key=lambda m: m.id)
        assert [m.external_id for m in in_db] == theirs  # stored in the customer's order
        assert len({m.conversation_id for m in in_db}) == 1
    async with ctx.db.session() as s:
        row = await s.get(WeComKfCursor, (inbox.id, OPEN_KFID))
    assert row.cursor == "120" and row.lease_owner is None and row.requested_seq == row.pulled_seq


async def test_a_servicer_reply_is_stored_after_the_messages_before_it(client, ctx, fake) -> None:
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False
    inbox = await kf_inbox(ctx, fake)
    customer = CUSTOMERS[7]
    fake.add(*[text_item(f"q-{n}", customer, f"问题 {n}") for n in range(30)],
             text_item("answer", customer, "已为您处理", origin=5, servicer="meimei"),
             text_item("thanks", customer, "谢谢"))
    fake.page_sizes = [4] * 20
    await notify(client, ctx, fake, inbox.id)
    (answer,) = await messages(ctx, external_id="answer")
    thread = await messages(ctx, conversation_id=answer.conversation_id)
    ids = [m.external_id for m in sorted(thread, key=lambda m: m.id)]
    assert ids == [*(f"q-{n}" for n in range(30)), "answer", "thanks"]


def test_batches_keep_each_customer_whole_and_in_order() -> None:
    from scrm.domain import InboundMessage

    msgs = [InboundMessage(external_id=str(n), sender_id=f"c{n % 4}") for n in range(20)]
    chunks = wecom_kf_store.by_customer(msgs, 6)
    assert sorted(m.external_id for c in chunks for m in c) == sorted(m.external_id for m in msgs)
    for chunk in chunks:
        for sender in {m.sender_id for m in chunk}:
            assert [m.external_id for m in chunk if m.sender_id == sender] == [
                m.external_id for m in msgs if m.sender_id == sender]
    assert all(len({m.sender_id for m in c} & {m.sender_id for m in d}) == 0
               for i, c in enumerate(chunks) for d in chunks[i + 1:])
