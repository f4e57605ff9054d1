"""WeChat OA 群发 as a broadcast mode: by list in batches with clientmsgid, by tag, preview, quota
refusals, MASSSENDJOBFINISH and message/mass/get recorded on the broadcast."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from scrm.db.models import Delivery
from scrm.db.models_wechat import WeChatMassBatch
from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from scrm.services.uow import unit_of_work
from tests.channels.wechat.fake_wechat_api import FakeWeChat, serving
from tests.integration.helpers_integration import deliver_all
from tests.marketing.helpers_marketing import ago
from tests.marketing.wechat_mass_helpers import draft, followers, job_finish_xml, oa_inbox, post_callback


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with serving() as f:
        yield f


async def _report(ctx, bid):
    async with ctx.db.session() as s:
        return await report(s, await s.get(broadcasts.Broadcast, bid))


async def test_mass_by_list_goes_in_batches_with_clientmsgid_and_records_the_job_result(ctx, client, fake,
                                                                                       admin_headers):
    inbox = await oa_inbox(ctx, fake)
    # Outside the 48 h window: a customer-service message could not reach them, a 群发 can.
    await followers(ctx, inbox, 7, last_inbound_at=ago(24 * 30))
    await followers(ctx, inbox, 1, prefix="oGone", subscribed=False)
    bid = await draft(ctx, inbox, options={"target": "list", "batch_size": 3})
    assert await broadcasts.start(ctx, bid) == {"targeted": 8, "queued": 7, "skipped": 1}
    rep = await _report(ctx, bid)
    assert rep["waiting"] == 7 and [b["status"] for b in rep["wechat_mass"]["batches"]] == ["queued"] * 3
    assert fake.mass_sends == []  # recorded before anything is sent
    await deliver_all(ctx)
    # 7 followers in batches of 3: 3 + 2 + 2 (WeChat needs at least two OpenIDs per call).
    assert sorted(len(b["touser"]) for b in fake.mass_sends) == [2, 2, 3]
    assert all(b["msgtype"] == "text" and b["text"]["content"] == "新品上市，欢迎选购" for b in fake.mass_sends)
    assert len({b["clientmsgid"] for b in fake.mass_sends}) == 3
    assert sorted(fake.mass_received) == [f"oF{i:05d}" for i in range(7)] and set(fake.mass_received.values()) == {1}
    assert fake.custom_sends == [] and fake.template_sends == []
    rep = await _report(ctx, bid)
    assert rep["sent"] == 7 and rep["skipped_by_reason"] == {"unsubscribed": 1}
    batches = rep["wechat_mass"]["batches"]
    assert [b["status"] for b in batches] == ["submitted"] * 3 and all(b["msg_id"] for b in batches)
    # WeChat reports each job's outcome by callback; the counts land on the broadcast.
    resp = await post_callback(client, inbox.id, job_finish_xml(batches[0]["msg_id"], total=3, filtered=3, sent=3,
                                                                errors=0))
    assert resp.status == 200
    await post_callback(client, inbox.id, job_finish_xml(batches[1]["msg_id"], total=2, filtered=2, sent=1, errors=1))
    mass = (await _report(ctx, bid))["wechat_mass"]
    assert (mass["total_count"], mass["filter_count"], mass["sent_count"], mass["error_count"]) == (5, 5, 4, 1)
    assert [b["status"] for b in mass["batches"]] == ["finished", "finished", "submitted"]
    assert mass["batches"][0]["job_status"] == "send success"
    # message/mass/get for the job whose callback never came.
    fake.mass_status[int(batches[2]["msg_id"])] = "SEND_SUCCESS"
    resp = await client.post(f"/api/v1/broadcasts/{bid}/wechat/refresh", headers=admin_headers)
    assert resp.status == 200
    got = {b["msg_id"]: b["msg_status"] for b in (await resp.json())["batches"]}
    assert got[batches[2]["msg_id"]] == "SEND_SUCCESS"
    await broadcasts.finish_completed(ctx)
    assert (await _report(ctx, bid))["status"] == "completed"


async def test_mass_by_tag_and_to_all_use_sendall_and_a_resend_is_not_sent_twice(ctx, fake):
    inbox = await oa_inbox(ctx, fake)
    bid = await draft(ctx, inbox, options={"target": "tag", "tag_id": 107})
    assert await broadcasts.start(ctx, bid) == {"targeted": 0, "queued": 0, "skipped": 0, "batches": 1}
    bid_all = await draft(ctx, inbox, options={"target": "all"})
    await broadcasts.start(ctx, bid_all)
    await deliver_all(ctx)
    assert [b["filter"] for b in fake.mass_sends] == [{"is_to_all": False, "tag_id": 107}, {"is_to_all": True}]
    async with ctx.db.session() as s:
        batch = await s.scalar(select(WeChatMassBatch).where(WeChatMassBatch.broadcast_id == bid))
        control = await s.get(Delivery, batch.control_delivery_id)
    assert batch.status == "submitted" and control.status == "sent" and control.external_id == batch.msg_id
    # The same call again (as after a crash): WeChat answers 45065 with the msg_id it accepted.
    from channels.wechat.transport import WeChatAPIError  # noqa: PLC0415

    adapter = await ctx.adapters.get(inbox.id)
    with pytest.raises(WeChatAPIError) as exc:
        await adapter.client.mass_sendall(fake.mass_sends[0])
    assert exc.value.errcode == 45065 and str(exc.value.data["msg_id"]) == batch.msg_id
    assert len(fake.mass_sends) == 2


async def test_preview_goes_to_the_test_follower_only(ctx, client, fake, admin_headers):
    inbox = await oa_inbox(ctx, fake)
    await followers(ctx, inbox, 3)
    bid = await draft(ctx, inbox)
    headers = admin_headers
    resp = await client.post(f"/api/v1/broadcasts/{bid}/wechat/preview", json={"openid": "oMarketer"},
                             headers=headers)
    assert resp.status == 202, await resp.text()
    await deliver_all(ctx)
    assert fake.mass_previews == [{"touser": "oMarketer", "msgtype": "text", "text": {"content": "新品上市，欢迎选购"}}]
    assert fake.mass_sends == []
    assert (await _report(ctx, bid))["status"] == "draft"


async def test_quota_is_shown_before_sending_and_a_broadcast_beyond_it_is_refused(ctx, client, fake, admin_headers):
    sub = await oa_inbox(ctx, fake, account_type="subscription")
    await followers(ctx, sub, 3)
    headers = admin_headers
    quota = await (await client.get(f"/api/v1/inboxes/{sub.id}/wechat/mass-quota", headers=headers)).json()
    assert (quota["account_type"], quota["limit"], quota["used"], quota["remaining"]) == ("subscription", 1, 0, 1)
    first = await draft(ctx, sub)
    await broadcasts.start(ctx, first)
    quota = await (await client.get(f"/api/v1/inboxes/{sub.id}/wechat/mass-quota", headers=headers)).json()
    assert quota["remaining"] == 0
    second = await draft(ctx, sub)
    resp = await client.post(f"/api/v1/broadcasts/{second}/start", headers=headers)
    assert resp.status == 409
    body = await resp.json()
    assert body["error"]["code"] == "mass_quota" and "once a day" in body["error"]["message"]
    assert (await _report(ctx, second))["status"] == "draft" and (await _report(ctx, second))["targeted"] == 0

    # A service account: four 群发 a month per follower. Four to all, then the fifth is refused.
    svc = await oa_inbox(ctx, fake, app_id="wx1234567890abcdef", account_type="service")
    await followers(ctx, svc, 2, prefix="oS", tag="svc")
    for _ in range(4):
        await broadcasts.start(ctx, await draft(ctx, svc, options={"target": "all"}, tag="svc"))
    with pytest.raises(broadcasts.BroadcastError) as refused:
        await broadcasts.start(ctx, await draft(ctx, svc, options={"target": "list"}, tag="svc"))
    assert refused.value.code == "mass_quota" and "4" in str(refused.value)


async def test_service_account_skips_followers_at_four_and_wechat_45028_fails_the_batch(ctx, fake):
    svc = await oa_inbox(ctx, fake)
    await followers(ctx, svc, 3)
    for _ in range(4):
        await broadcasts.start(ctx, await draft(ctx, svc))
    await deliver_all(ctx)
    await followers(ctx, svc, 2, prefix="oNew")
    bid = await draft(ctx, svc)
    assert await broadcasts.start(ctx, bid) == {"targeted": 5, "queued": 2, "skipped": 3}
    assert (await _report(ctx, bid))["skipped_by_reason"] == {"mass_quota": 3}
    # WeChat's own count says no (45028): the batch and its recipients fail with the reason.
    fake.mass_quota = 0
    await deliver_all(ctx)
    rep = await _report(ctx, bid)
    assert rep["failed"] == 2 and list(rep["failed_by_reason"]) == ["45028"]
    assert rep["wechat_mass"]["batches"][0]["status"] == "failed"
    assert "quota" in rep["wechat_mass"]["batches"][0]["last_error"]


async def test_mass_mode_refuses_what_wechat_cannot_send(ctx, fake):
    inbox = await oa_inbox(ctx, fake)
    with pytest.raises(broadcasts.BroadcastError) as exc:
        await draft(ctx, inbox, template="您好 {{name}}")
    assert exc.value.code == "bad_template"
    with pytest.raises(broadcasts.BroadcastError) as exc:
        await draft(ctx, inbox, options={"target": "tag"})
    assert exc.value.code == "bad_target"
    with pytest.raises(broadcasts.BroadcastError) as exc:
        await draft(ctx, inbox, options={"target": "list", "batch_size": 20000})
    assert exc.value.code == "bad_target"


async def test_pause_holds_the_batches_and_cancel_sends_nothing(ctx, fake):
    inbox = await oa_inbox(ctx, fake)
    await followers(ctx, inbox, 4)
    bid = await draft(ctx, inbox, options={"target": "list", "batch_size": 2})
    await broadcasts.start(ctx, bid)
    async with unit_of_work(ctx) as tx:
        assert await broadcasts.pause(tx, await broadcasts.load(tx, bid), None) == 2  # both batches held
    await deliver_all(ctx)
    assert fake.mass_sends == []
    async with unit_of_work(ctx) as tx:
        await broadcasts.cancel(tx, await broadcasts.load(tx, bid), None)
    await deliver_all(ctx)
    rep = await _report(ctx, bid)
    assert fake.mass_sends == [] and rep["cancelled"] == 4 and rep["waiting"] == 0
    assert [b["status"] for b in rep["wechat_mass"]["batches"]] == ["failed", "failed"]
