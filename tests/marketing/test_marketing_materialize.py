"""Materializing a broadcast in chunks (the path a 100k-recipient start takes, here with tiny chunks):
every targeted contact gets exactly one recipient row, the queued ones one delivery each."""

from __future__ import annotations

from sqlalchemy import select

from scrm.db.models import Delivery
from scrm.db.models_marketing import BroadcastRecipient
from scrm.delivery.worker import OutboxWorker
from scrm.services.marketing import broadcasts
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact

VIP = {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]}


async def test_a_start_written_in_many_chunks_keeps_every_recipient(ctx, callback_server, monkeypatch):
    monkeypatch.setattr(broadcasts, "CHUNK", 7)  # many chunks, each handed to the writer mid-build
    monkeypatch.setattr(broadcasts, "YIELD_EVERY", 3)
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    contacts = {}
    for i in range(40):
        opted_out = i % 5 == 0  # skipped with a reason, still a recipient row
        contacts[await make_contact(
            ctx, name=f"客户{i}", tags=("vip",), identities=[(inbox, f"u{i}", {})],
            opt_outs={"broadcast:api": True} if opted_out else {})] = opted_out
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {"name": "分批", "rules": VIP, "inbox_ids": [inbox.id],
                                             "template": "{{name | 朋友}}，您好"})
    assert await broadcasts.start(ctx, b.id) == {"targeted": 40, "queued": 32, "skipped": 8}

    async with ctx.db.session() as s:
        recipients = (await s.scalars(select(BroadcastRecipient).where(BroadcastRecipient.broadcast_id == b.id))).all()
        deliveries = {d.id: d for d in (await s.scalars(select(Delivery))).all()}
    assert sorted(r.contact_id for r in recipients) == sorted(contacts)
    for r in recipients:
        if contacts[r.contact_id]:
            assert (r.status, r.reason, r.delivery_id) == ("skipped", "opted_out", None)
            continue
        assert r.status == "queued"
        d = deliveries[r.delivery_id]
        assert d.idempotency_key == f"broadcast:{b.id}:{r.contact_id}"
        assert (d.status, d.identity_id, d.kind) == ("queued", r.identity_id, "broadcast")
    assert len(deliveries) == 32 == len({r.delivery_id for r in recipients if r.delivery_id})

    assert await OutboxWorker(ctx).run_until_idle() == 32
    texts = sorted(m["message"]["text"] for m in callback_server.received)
    assert texts == sorted(f"客户{i}，您好" for i in range(40) if i % 5)
