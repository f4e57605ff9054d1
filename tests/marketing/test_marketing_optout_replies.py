"""Opt-out keywords unsubscribe and confirm; replies after a broadcast count for it in the report."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from scrm.db.models import Contact, Delivery
from scrm.delivery.worker import OutboxWorker
from scrm.domain import InboundMessage
from scrm.listeners.optout import install
from scrm.services.conversations.ingest import ingest
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.marketing.optout import is_opt_out_keyword
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox


@pytest.mark.parametrize("text", ["退订", "TD", "td", "Stop", "ＳＴＯＰ", " unsubscribe ", "UNSUBSCRIBE!", "退订。"])
def test_opt_out_keywords(text):
    assert is_opt_out_keyword(text)


@pytest.mark.parametrize("text", ["请不要退订我", "stop it please", "tdd", "", None, "STOP STOP"])
def test_not_opt_out_keywords(text):
    assert not is_opt_out_keyword(text)


async def test_keyword_unsubscribes_on_that_channel_and_confirms(ctx, callback_server):
    install(ctx)
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    [out] = await ingest(ctx, inbox, [InboundMessage("m1", "cust-1", "ＴＤ")])
    await ctx.bus.drain()
    async with ctx.db.session() as s:
        contact = await s.get(Contact, out.contact_id)
        deliveries = (await s.scalars(select(Delivery))).all()
    assert contact.opt_outs["broadcast:api"] is True
    assert "broadcast:email" not in contact.opt_outs  # only the channel they wrote on
    assert len(deliveries) == 1 and "退订" in deliveries[0].payload["text"] and "unsubscribed" in deliveries[0].payload["text"]
    # The same event dispatched again (another process) does not confirm twice.
    [dup] = await ingest(ctx, inbox, [InboundMessage("m1", "cust-1", "ＴＤ")])
    assert dup.duplicate
    await OutboxWorker(ctx).run_until_idle()
    assert len(callback_server.received) == 1


async def test_reply_after_broadcast_is_linked_and_opt_out_counted(ctx, callback_server):
    install(ctx)
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    for i in range(3):
        await ingest(ctx, inbox, [InboundMessage(f"hello-{i}", f"cust-{i}", "hi")])
    await ctx.bus.drain()
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {"name": "r", "rules": {"op": "and", "rules": []},
                                             "inbox_ids": [inbox.id], "template": "新品 {{name|}}"})
        bid = b.id
    await broadcasts.start(ctx, bid)
    await OutboxWorker(ctx).run_until_idle()
    await ingest(ctx, inbox, [InboundMessage("r-0", "cust-0", "多少钱？")])
    await ingest(ctx, inbox, [InboundMessage("r-1", "cust-1", "STOP")])
    await ctx.bus.drain()
    async with ctx.db.session() as s:
        rep = await report(s, await s.get(broadcasts.Broadcast, bid))
    assert (rep["targeted"], rep["sent"], rep["replied"], rep["opted_out"]) == (3, 3, 1, 1)
