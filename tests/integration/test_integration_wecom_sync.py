"""kf/sync_msg pulling with a real database: durable pull requests, pagination, the cursor across a
restart, two processes on one account, duplicate callbacks, expired tokens, malformed answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from scrm.bootstrap import build_context
from scrm.db.models import Contact, utcnow
from scrm.db.models_wecom import WeChatUnionId, WeComKfCursor
from scrm.services.wecom import kf_sync as wecom_kf_sync
from tests.channels.wecom.fake_wecom_api import FakeWeCom, serving
from tests.channels.wecom.wecom_samples import (
    OPEN_KFID,
    callback_query,
    encrypt,
    kf_event_xml,
    sample,
    text_item,
)
from tests.integration.helpers_integration import identity, inbound
from tests.integration.wecom_helpers import kf_inbox, notify, post_xml

C1, C2 = "wmCustomerOne000000000000000001", "wmCustomerTwo000000000000000002"


@pytest.fixture
async def ctx(ctx):  # type: ignore[no-untyped-def]
    from scrm.services.bot import rounds as bot

    bot.get_runtime(ctx).enabled = False  # these tests count stored messages, not answers
    return ctx


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with serving() as fake:
        yield fake


async def cursor_row(ctx, inbox_id: int) -> WeComKfCursor:  # type: ignore[no-untyped-def]
    async with ctx.db.session() as s:
        row = await s.get(WeComKfCursor, (inbox_id, OPEN_KFID))
    assert row is not None
    return row


async def test_url_verification_over_http(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    echostr = encrypt("1288432023552776189")
    resp = await client.get(f"/webhooks/wecom/{inbox.id}", params=callback_query(echostr) | {"echostr": echostr})
    assert resp.status == 200 and await resp.text() == "1288432023552776189"
    bad = await client.get(f"/webhooks/wecom/{inbox.id}", params=callback_query(echostr, token="x") | {"echostr": echostr})
    assert bad.status == 403


async def test_pages_until_has_more_is_zero_and_the_cursor_is_saved(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"m{i}", C1 if i % 2 else C2, f"消息 {i}") for i in range(120)])
    fake.page_sizes = [7, 50]
    fake.empty_pages_with_more = 1  # has_more 1 with an empty page: keep going
    await notify(client, ctx, fake, inbox.id)
    stored = await inbound(ctx, inbox.id)
    assert sorted(m.external_id for m in stored) == sorted(f"m{i}" for i in range(120))
    row = await cursor_row(ctx, inbox.id)
    assert row.cursor == "120" and row.pulled_seq == row.requested_seq == 1 and row.lease_owner is None
    assert [r.get("cursor") for r in fake.sync_requests][:3] == [None, "0", "7"]


async def test_duplicate_callbacks_store_each_message_once(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"d{i}", C1, f"hi {i}") for i in range(10)])
    token = fake.new_callback_token()
    answers = await asyncio.gather(*[post_xml(client, inbox.id, kf_event_xml(token)) for _ in range(5)])
    assert all(a.status == 200 for a in answers)
    await wecom_kf_sync.wait_pulls(ctx)
    assert len(await inbound(ctx, inbox.id)) == 10
    fake.raw_pages.append(sample("kf_sync_msg__captured_enter_session_text_servicer.json") | {"has_more": 0})
    fake.raw_pages.append(sample("kf_sync_msg__captured_enter_session_text_servicer.json") | {"has_more": 0})
    await notify(client, ctx, fake, inbox.id)
    await notify(client, ctx, fake, inbox.id)  # the same page again (WeCom repeating itself)
    texts = [m.text for m in await inbound(ctx, inbox.id) if m.external_id and not m.external_id.startswith("d")]
    assert texts == ["几", "hi", "哈哈😄  ", "呵呵"]  # trailing spaces kept; the servicer's "hi" is not the customer's


async def test_the_cursor_survives_a_restart(client, ctx, fake, settings) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"r{i}", C1, f"{i}") for i in range(30)])
    await notify(client, ctx, fake, inbox.id)
    assert (await cursor_row(ctx, inbox.id)).cursor == "30"
    fake.add(*[text_item(f"r{i}", C1, f"{i}") for i in range(30, 45)])
    other = await build_context(settings)  # a restarted process: nothing in memory, the database remembers
    try:
        fake.sync_requests.clear()
        await wecom_kf_sync.request_pull(other, inbox.id, {"open_kfid": OPEN_KFID, "token": fake.new_callback_token()})
        await wecom_kf_sync.wait_pulls(other)
    finally:
        await other.bus.drain(2)
        await other.close()
    assert fake.sync_requests[0]["cursor"] == "30"
    assert len(await inbound(ctx, inbox.id)) == 45


async def test_two_processes_pulling_one_account_store_each_message_once(ctx, fake, settings) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"p{i}", C1 if i % 3 else C2, f"{i}") for i in range(200)])
    fake.page_size = 10
    other = await build_context(settings)
    try:
        for c in (ctx, other):
            await wecom_kf_sync.request_pull(c, inbox.id, {"open_kfid": OPEN_KFID, "token": fake.new_callback_token()})
        await asyncio.gather(wecom_kf_sync.wait_pulls(ctx), wecom_kf_sync.wait_pulls(other))
        await wecom_kf_sync.catch_up(other)  # whatever is still owed
    finally:
        await other.bus.drain(2)
        await other.close()
    stored = await inbound(ctx, inbox.id)
    assert len(stored) == 200 and len({m.external_id for m in stored}) == 200
    cursors = [r.get("cursor") for r in fake.sync_requests if r.get("cursor") not in (None, "200")]
    assert len(cursors) == len(set(cursors)), "a page was pulled by both processes"
    row = await cursor_row(ctx, inbox.id)
    assert row.cursor == "200" and row.pulled_seq == row.requested_seq


async def test_a_pull_owed_when_the_process_died_is_done_by_the_catch_up(ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(text_item("k1", C1, "kill -9 right after the answer"))
    # The callback was acknowledged (the request is committed) but the process died before pulling.
    async with ctx.db.transaction() as s:
        s.add(WeComKfCursor(inbox_id=inbox.id, open_kfid=OPEN_KFID, requested_seq=1, pulled_seq=0,
                            pending_token=fake.new_callback_token(), pending_at=utcnow(), pulled_total=0,
                            lease_owner="dead-process", lease_until=utcnow() - timedelta(seconds=1)))
    assert await inbound(ctx, inbox.id) == []
    await wecom_kf_sync.catch_up(ctx)
    assert [m.external_id for m in await inbound(ctx, inbox.id)] == ["k1"]
    row = await cursor_row(ctx, inbox.id)
    assert row.pulled_seq == 1 and fake.sync_requests[0]["token"]  # the saved token was still good


async def test_expired_sync_token_falls_back_to_a_token_less_pull(client, ctx, fake, caplog) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(text_item("e1", C1, "hello"))
    await post_xml(client, inbox.id, kf_event_xml("a-token-wecom-never-issued"))
    await wecom_kf_sync.wait_pulls(ctx)
    assert [m.external_id for m in await inbound(ctx, inbox.id)] == ["e1"]
    assert [("token" in r) for r in fake.sync_requests] == [True, False]
    assert any("sync token refused" in r.getMessage() for r in caplog.records)


async def test_malformed_api_answer_leaves_the_pull_owed_and_the_puller_going(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.add(text_item("g1", C1, "hello"))
    fake.garbage["kf/sync_msg"] = 1
    resp = await notify(client, ctx, fake, inbox.id)
    assert resp.status == 200 and await inbound(ctx, inbox.id) == []
    row = await cursor_row(ctx, inbox.id)
    assert row.last_error and "invalid JSON" in row.last_error and row.pulled_seq < row.requested_seq
    await wecom_kf_sync.catch_up(ctx, now=utcnow() + timedelta(minutes=1))
    assert [m.external_id for m in await inbound(ctx, inbox.id)] == ["g1"]


async def test_callback_for_another_kf_account_of_the_corp_goes_to_its_inbox(client, ctx, fake) -> None:
    first = await kf_inbox(ctx, fake)
    second = await kf_inbox(ctx, fake, open_kfid="wkSecondAccount0000000000000000", name="售后客服")
    fake.add(text_item("o1", C1, "售后问题", open_kfid="wkSecondAccount0000000000000000"),
             open_kfid="wkSecondAccount0000000000000000")
    await notify(client, ctx, fake, first.id, open_kfid="wkSecondAccount0000000000000000")
    assert await inbound(ctx, first.id) == [] and len(await inbound(ctx, second.id)) == 1
    await notify(client, ctx, fake, first.id, open_kfid="wkUnknownAccount")  # nobody serves it: 200, logged
    assert len(fake.sync_requests) == 1


async def test_customer_profiles_come_from_batchget_once(client, ctx, fake) -> None:
    inbox = await kf_inbox(ctx, fake)
    fake.customers[C1] = {"external_userid": C1, "nickname": "李娜", "avatar": "http://a/1.png", "gender": 2,
                          "unionid": "oUnionLina"}
    fake.add(text_item("n1", C1, "一"), text_item("n2", C1, "二"))
    await notify(client, ctx, fake, inbox.id)
    fake.add(text_item("n3", C1, "三"))
    await notify(client, ctx, fake, inbox.id)
    assert fake.batchget_requests == [[C1]]
    ident = await identity(ctx, inbox.id, C1)
    async with ctx.db.session() as s:
        contact = await s.get(Contact, ident.contact_id)
        union = await s.scalar(select(WeChatUnionId.unionid).where(WeChatUnionId.identity_id == ident.id))
    assert contact.name == "李娜" and contact.attributes["gender"] == "female" and union == "oUnionLina"


async def test_media_is_fetched_into_storage_and_uploaded_back(client, ctx, fake, admin_headers) -> None:
    from scrm.listeners.media import fetch_message_media
    from tests.integration.helpers_integration import agent_reply, deliver_all

    inbox = await kf_inbox(ctx, fake, handoff="api_only")
    fake.media["MEDIA_IMG_1"] = (b"\xff\xd8\xff\xe0 fake jpeg", "image/jpeg")
    fake.add({"msgid": "img-1", "open_kfid": OPEN_KFID, "external_userid": C1, "send_time": 1700000000, "origin": 3,
              "msgtype": "image", "image": {"media_id": "MEDIA_IMG_1"}},
             {"msgid": "file-1", "open_kfid": OPEN_KFID, "external_userid": C1, "send_time": 1700000001, "origin": 3,
              "msgtype": "file", "file": {"media_id": "EXPIRED_AFTER_3_DAYS"}})
    await notify(client, ctx, fake, inbox.id)
    image, expired = await inbound(ctx, inbox.id)
    await fetch_message_media(ctx, image.id)
    await fetch_message_media(ctx, expired.id)
    (image,) = await messages_by_id(ctx, image.id)
    (expired,) = await messages_by_id(ctx, expired.id)
    key = image.attachments[0]["storage_key"]
    assert await ctx.storage.load(key) == b"\xff\xd8\xff\xe0 fake jpeg"
    assert "40007" in expired.attachments[0]["error"]  # shown to the agent, nothing crashed
    # An agent sends the stored picture back: uploaded as temporary media, then kf/send_msg image.
    await agent_reply(client, admin_headers, image.conversation_id, "收到")
    resp = await client.post(f"/api/v1/conversations/{image.conversation_id}/messages", headers=admin_headers,
                             json={"text": "", "attachments": [{"kind": "image", "storage_key": key,
                                                                "mime_type": "image/jpeg"}]})
    assert resp.status == 201, await resp.text()
    await deliver_all(ctx)
    sent_image = next(s for s in fake.sends if s["msgtype"] == "image")
    assert fake.uploads[sent_image["image"]["media_id"]] == ("image", b"\xff\xd8\xff\xe0 fake jpeg")


async def messages_by_id(ctx, message_id: int):  # type: ignore[no-untyped-def]
    from tests.integration.helpers_integration import messages

    return await messages(ctx, id=message_id)


async def test_links_count_the_customers_each_source_brought(client, ctx, fake, admin_headers) -> None:
    from tests.channels.wecom.wecom_samples import event_item

    inbox = await kf_inbox(ctx, fake)
    resp = await client.post(f"/api/v1/inboxes/{inbox.id}/wecom/ways", headers=admin_headers,
                             json={"name": "小程序客服入口", "scene": "mini-app"})
    assert resp.status == 201, await resp.text()
    assert (await client.post(f"/api/v1/inboxes/{inbox.id}/wecom/ways", headers=admin_headers,
                              json={"name": "bad", "scene": "有空格 的scene"})).status == 400
    for n, customer in enumerate((C1, C2)):
        fake.add(event_item(f"enter-{n}", {"event_type": "enter_session", "open_kfid": OPEN_KFID,
                                           "external_userid": customer, "scene": "mini-app"}),
                 text_item(f"hello-{n}", customer, "你好"))
    await notify(client, ctx, fake, inbox.id)
    ways = (await (await client.get(f"/api/v1/inboxes/{inbox.id}/wecom/ways", headers=admin_headers)).json())["items"]
    assert [(w["scene"], w["customers"], w["conversations"]) for w in ways] == [("mini-app", 2, 2)]
    qr = await client.get(f"/api/v1/wecom/ways/{ways[0]['id']}/qr.svg", headers=admin_headers)
    assert qr.status == 200 and qr.content_type == "image/svg+xml" and b"<svg" in await qr.read()


async def test_a_server_that_pulls_elsewhere_answers_and_the_pull_runner_pulls(ctx, fake, settings) -> None:
    """`scrm serve --no-worker`: the callback notes the pull and wakes the runners; a runner process pulls
    (woken over Redis at once; without Redis its scan finds the note within a second)."""
    inbox = await kf_inbox(ctx, fake)
    fake.add(*[text_item(f"e{i}", C1, f"{i}") for i in range(30)])
    runner = await build_context(settings)  # the worker's pull runner process
    stop = asyncio.Event()
    running = asyncio.create_task(wecom_kf_sync.run_runner(runner, stop))
    try:
        await asyncio.sleep(0.2)  # subscribed
        wecom_kf_sync.pull_elsewhere(ctx)
        await wecom_kf_sync.request_pull(ctx, inbox.id, {"open_kfid": OPEN_KFID, "token": fake.new_callback_token()})
        assert ctx.extras.get("wecom_kf_pulls", {}) == {}  # nothing pulled in the server that answered
        deadline = asyncio.get_running_loop().time() + 10
        while len(await inbound(ctx, inbox.id)) < 30 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert sorted(m.external_id for m in await inbound(ctx, inbox.id)) == sorted(f"e{i}" for i in range(30))
        assert fake.sync_requests[0]["token"]  # the callback's token was used
        # the pull gives its lease back (marking the request served) after its last page is committed
        row = await cursor_row(ctx, inbox.id)
        while row.pulled_seq != row.requested_seq and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            row = await cursor_row(ctx, inbox.id)
        assert row.cursor == "30" and row.pulled_seq == row.requested_seq
    finally:
        stop.set()
        await running
        await runner.bus.drain(2)
        await runner.close()


async def test_a_burst_of_callbacks_for_several_kf_accounts_notes_each_one(ctx, fake) -> None:
    """Callbacks for 10 kf accounts of one corp arriving together share the notes' upserts (one reused
    statement per number of accounts): every callback is counted against its own account, and a callback
    without a token keeps the account's earlier token, so no owed pull is lost or given to another account."""
    kfids = [f"wkBurst{n:02d}" for n in range(10)]
    inboxes = [await kf_inbox(ctx, fake, open_kfid=k, name=f"kf {k}") for k in kfids]
    wecom_kf_sync.pull_elsewhere(ctx)  # only the notes: no pull runs here and moves pulled_seq
    calls = [wecom_kf_sync.request_pull(ctx, inboxes[0].id, {"open_kfid": k, "token": f"tok-{k}"})
             for n, k in enumerate(kfids) for _ in range(n + 1)]
    calls += [wecom_kf_sync.request_pull(ctx, inboxes[0].id, {"open_kfid": kfids[3], "token": None})]
    await asyncio.gather(*calls)
    async with ctx.db.session() as s:
        rows = {r.open_kfid: r for r in (await s.scalars(select(WeComKfCursor))).all()}
    assert {k: (rows[k].inbox_id, rows[k].requested_seq, rows[k].pending_token) for k in kfids} == {
        k: (inbox.id, n + 1 + (k == kfids[3]), f"tok-{k}") for n, (k, inbox) in enumerate(zip(kfids, inboxes, strict=True))}
