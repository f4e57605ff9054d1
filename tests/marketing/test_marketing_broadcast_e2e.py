"""Segment -> broadcast -> outbox deliveries -> report, through a real worker and a local callback server."""

from __future__ import annotations

from sqlalchemy import func, select

from scrm.db.models import Delivery
from scrm.db.models_marketing import AttributeDefinition, BroadcastRecipient
from scrm.delivery.worker import OutboxWorker
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact


async def test_segment_to_report_end_to_end(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="city", label="City", type="text", choices=[]))
    for i in range(5):
        await make_contact(ctx, name=f"客户{i}" if i else None, tags=("vip",),
                           attributes={"city": "北京"} if i % 2 else {}, identities=[(inbox, f"u{i}", {})])
    await make_contact(ctx, name="not vip", identities=[(inbox, "other", {})])
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {
            "name": "双十一", "rules": {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]},
            "inbox_ids": [inbox.id], "template": "Hi {{name | 朋友}}, {{attributes.city|上海}} 见"})
        bid = b.id
    result = await broadcasts.start(ctx, bid)
    assert result == {"targeted": 5, "queued": 5, "skipped": 0}
    sent = await OutboxWorker(ctx).run_until_idle()
    assert sent == 5
    texts = sorted(r["message"]["text"] for r in callback_server.received)
    assert texts == sorted(["Hi 朋友, 上海 见", "Hi 客户1, 北京 见", "Hi 客户2, 上海 见", "Hi 客户3, 北京 见",
                            "Hi 客户4, 上海 见"])
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.load(tx, bid, lock=False)
        rep = await report(tx.session, b)
        n_deliveries = await tx.session.scalar(select(func.count()).select_from(Delivery))
        n_recipients = await tx.session.scalar(select(func.count()).select_from(BroadcastRecipient))
    assert rep["targeted"] == 5 and rep["sent"] == 5 and rep["failed"] == 0 and rep["progress"] == 1.0
    assert n_deliveries == n_recipients == 5
    assert await broadcasts.finish_completed(ctx) == 1
