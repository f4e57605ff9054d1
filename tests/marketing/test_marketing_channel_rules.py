"""Channel rules enforced per recipient when a broadcast starts: each skip has its reason."""

from __future__ import annotations

from sqlalchemy import select

from scrm.db.models import Contact, Delivery
from scrm.db.models_marketing import BroadcastRecipient
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.uow import unit_of_work
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import ago, make_contact

CONSENT = {"consent": {"email": True}}


async def _broadcast(ctx, inbox_ids, template="您好 {{name|朋友}}", subject="{{name|朋友}}, 新品上市"):
    async with unit_of_work(ctx) as tx:
        b = await broadcasts.save(tx, None, {"name": "rules", "rules": {"op": "and", "rules": []},
                                             "inbox_ids": inbox_ids, "template": template, "subject": subject})
        return b.id


async def test_each_channel_rule_decides_per_recipient(ctx, client):
    tg = await make_inbox(ctx, "telegram", name="TG", secrets={"bot_token": "123456:ABC"})
    wx_tpl = await make_inbox(ctx, "wechat_oa", name="WX", settings={
        "app_id": "wx1", "template": {"template_id": "TPL-1", "fields": {"first": "text"}}}, secrets={})
    wx_plain = await make_inbox(ctx, "wechat_oa", name="WX2", settings={"app_id": "wx2"}, secrets={})
    mail = await make_inbox(ctx, "email", name="Mail", settings={"address": "news@example.com"}, secrets={})
    c = {}
    c["tg_ok"] = await make_contact(ctx, name="张三", identities=[(tg, "1001", {})])
    c["tg_not_started"] = await make_contact(ctx, identities=[(tg, "1002", {"last_inbound_at": None})])
    c["tg_blocked"] = await make_contact(ctx, identities=[(tg, "1003", {"reachable": False})])
    c["wx_inside"] = await make_contact(ctx, identities=[(wx_tpl, "o-in", {"last_inbound_at": ago(47)})])
    c["wx_template"] = await make_contact(ctx, identities=[(wx_tpl, "o-out", {"last_inbound_at": ago(49)})])
    c["wx_outside"] = await make_contact(ctx, identities=[(wx_plain, "o-out2", {"last_inbound_at": ago(100)})])
    c["wx_unsubscribed"] = await make_contact(ctx, identities=[(wx_plain, "o-un", {"subscribed": False})])
    c["mail_ok"] = await make_contact(ctx, name="李四", attributes=CONSENT, identities=[(mail, "li@example.com", {})])
    c["mail_no_consent"] = await make_contact(ctx, identities=[(mail, "x@example.com", {})])
    c["mail_opted_out"] = await make_contact(ctx, attributes=CONSENT, opt_outs={"broadcast:email": True},
                                             identities=[(mail, "y@example.com", {})])
    c["nothing"] = await make_contact(ctx, name="no identity")
    c["prefers_mail"] = await make_contact(ctx, attributes=CONSENT | {"preferred_channel": "email"},
                                           identities=[(tg, "2001", {}), (mail, "p@example.com", {})])
    c["default_order"] = await make_contact(ctx, attributes=CONSENT,
                                            identities=[(tg, "2002", {}), (mail, "q@example.com", {})])
    c["fallback_to_mail"] = await make_contact(ctx, attributes=CONSENT, identities=[
        (tg, "2003", {"reachable": False}), (mail, "r@example.com", {})])
    bid = await _broadcast(ctx, [tg.id, wx_tpl.id, wx_plain.id, mail.id])
    result = await broadcasts.start(ctx, bid)
    assert result == {"targeted": len(c), "queued": 6, "skipped": len(c) - 6}

    async with ctx.db.session() as s:
        rows = (await s.execute(select(BroadcastRecipient, Delivery).outerjoin(
            Delivery, Delivery.id == BroadcastRecipient.delivery_id))).all()
        by_contact = {r.contact_id: (r, d) for r, d in rows}
        b = await s.get(broadcasts.Broadcast, bid)
        rep = await report(s, b)

    def outcome(key):
        r, d = by_contact[c[key]]
        return r.reason or f"{r.channel}:{d.payload['content_type']}"

    assert {k: outcome(k) for k in c} == {
        "tg_ok": "telegram:text", "tg_not_started": "not_started", "tg_blocked": "unreachable",
        "wx_inside": "wechat_oa:text", "wx_template": "outside_window", "wx_outside": "outside_window",
        "wx_unsubscribed": "unsubscribed", "mail_ok": "email:text", "mail_no_consent": "no_consent",
        "mail_opted_out": "opted_out", "nothing": "no_channel", "prefers_mail": "email:text",
        "default_order": "telegram:text", "fallback_to_mail": "email:text",
    }
    # Template messages are for service notices only (WeChat's rule): never a broadcast's fallback.
    assert rep["skipped_by_reason"] == {"not_started": 1, "unreachable": 1, "outside_window": 2, "unsubscribed": 1,
                                        "no_consent": 1, "opted_out": 1, "no_channel": 1}
    # Email carries a working unsubscribe link in the body and the List-Unsubscribe headers.
    r, d = by_contact[c["mail_ok"]]
    meta = d.payload["metadata"]
    assert meta["subject"] == "李四, 新品上市"
    assert meta["headers"]["List-Unsubscribe"] == f"<{meta['unsubscribe_url']}>"
    assert meta["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert meta["unsubscribe_url"].endswith(f"/unsubscribe/{r.unsubscribe_token}")
    assert meta["unsubscribe_url"] in d.payload["text"]
    page = await client.get(f"/unsubscribe/{r.unsubscribe_token}")
    assert page.status == 200 and "退订" in await page.text()
    async with ctx.db.session() as s:
        assert (await s.get(Contact, c["mail_ok"])).opt_outs.get("broadcast:email") is None  # GET alone changes nothing
    done = await client.post(f"/unsubscribe/{r.unsubscribe_token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status == 200
    async with ctx.db.session() as s:
        assert (await s.get(Contact, c["mail_ok"])).opt_outs["broadcast:email"] is True
        rep = await report(s, await s.get(broadcasts.Broadcast, bid))
    assert rep["opted_out"] == 1
    assert (await client.post("/unsubscribe/not-a-token")).status == 404
    # The next broadcast skips the contact who unsubscribed.
    bid2 = await _broadcast(ctx, [mail.id])
    await broadcasts.start(ctx, bid2)
    async with ctx.db.session() as s:
        r2 = await s.scalar(select(BroadcastRecipient).where(BroadcastRecipient.broadcast_id == bid2,
                                                             BroadcastRecipient.contact_id == c["mail_ok"]))
    assert r2.reason == "opted_out"
