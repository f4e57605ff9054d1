"""A started broadcast's recipients are a snapshot: merges keep its counts; migration 0010 drops the
snapshot's foreign keys to contacts/inboxes/identities without losing rows."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from scrm.db.migrate import alembic_config, current_revisions, upgrade
from scrm.db.models_marketing import BroadcastRecipient
from scrm.delivery.worker import OutboxWorker
from scrm.services.contacts import merge as contacts_merge
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact

VIP = {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "vip"}]}


async def _broadcast(ctx, inbox_id: int, name: str, rules=VIP) -> int:
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {"name": name, "rules": rules, "inbox_ids": [inbox_id],
                                             "template": "你好 {{name | 朋友}}"})
        return b.id


async def _report(ctx, bid: int) -> dict:
    async with unit_of_work(ctx) as tx:
        return await report(tx.session, await broadcasts.load(tx, bid, lock=False))


async def test_merge_keeps_broadcast_counts_and_moves_history(ctx, callback_server):
    inbox = await make_inbox(ctx, settings={"callback_url": callback_server.url})
    anna = await make_contact(ctx, name="Anna", tags=("vip",), identities=[(inbox, "anna-wechat", {})])
    anna2 = await make_contact(ctx, name="安娜", tags=("vip", "new"), identities=[(inbox, "anna-phone", {})])
    both = await _broadcast(ctx, inbox.id, "双十一")
    assert (await broadcasts.start(ctx, both))["targeted"] == 2
    only_second = await _broadcast(ctx, inbox.id, "新客",
                                   {"op": "and", "rules": [{"field": "tag", "operator": "has", "value": "new"}]})
    assert (await broadcasts.start(ctx, only_second))["targeted"] == 1
    assert await OutboxWorker(ctx).run_until_idle() == 3

    async with unit_of_work(ctx) as tx:
        await contacts_merge.merge(tx, anna, anna2, None)

    # Both people were sent the first broadcast: it still reports two recipients, two sent.
    rep = await _report(ctx, both)
    assert (rep["targeted"], rep["sent"]) == (2, 2)
    assert (await _report(ctx, only_second))["targeted"] == 1
    async with ctx.db.session() as s:
        rows = {(r.broadcast_id, r.contact_id) for r in (await s.scalars(select(BroadcastRecipient))).all()}
    # The merged contact's only-own broadcast moves to the survivor; the shared one keeps one row each.
    assert rows == {(both, anna), (both, anna2), (only_second, anna)}


async def test_migration_0010_from_previous_heads_keeps_rows(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    old_heads = ["0002_canned", "0004_marketing", "0005_desk", "0006_outbox_queue", "0008_messages_created",
                 "0009_faq_outcomes", "0009_search_gin"]
    for rev in old_heads:
        await upgrade(url, rev)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(text("INSERT INTO broadcasts (id, name, rules, inbox_ids, template, status, "
                                 "reply_window_days, created_at, updated_at) VALUES (1, 'b', '{}', '[]', 't', "
                                 "'completed', 3, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            await c.execute(text("INSERT INTO contacts (id, name, attributes, opt_outs, first_seen_at, last_seen_at, "
                                 "created_at, updated_at) VALUES (7, '客户', '{}', '{}', CURRENT_TIMESTAMP, "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            await c.execute(text("INSERT INTO broadcast_recipients (id, broadcast_id, contact_id, status, reason, "
                                 "created_at) VALUES (1, 1, 7, 'skipped', 'no_channel', CURRENT_TIMESTAMP)"))

        await upgrade(url)  # `scrm migrate`
        # At the head, and 0010 is on the way there.
        script = ScriptDirectory.from_config(alembic_config())
        assert await current_revisions(url) == set(script.get_heads())
        assert "0010_broadcast_snapshot" in {r.revision for r in script.iterate_revisions("heads", "base")}

        async with engine.begin() as c:
            fks = await c.run_sync(lambda sc: {f["referred_table"] for f in
                                               inspect(sc).get_foreign_keys("broadcast_recipients")})
            assert fks == {"broadcasts", "deliveries"}
            assert (await c.execute(text("SELECT contact_id, reason FROM broadcast_recipients"))).all() == [
                (7, "no_channel")]
            await c.execute(text("PRAGMA foreign_keys=ON"))  # as the app's connections have it
            # A snapshot row may name a contact/inbox/identity that no longer exists.
            await c.execute(text("INSERT INTO broadcast_recipients (id, broadcast_id, contact_id, inbox_id, "
                                 "identity_id, status, created_at) VALUES (2, 1, 999, 998, 997, 'skipped', "
                                 "CURRENT_TIMESTAMP)"))
    finally:
        await engine.dispose()
