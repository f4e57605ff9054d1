"""Subscription messages (订阅通知): consent recorded from the real callbacks, one-time consents used up
when sent, bizsend as a broadcast mode and as the fallback outside the 48-hour window, 43101 refusal."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scrm.services.marketing import broadcasts
from scrm.services.marketing.broadcast_report import report
from tests.channels.wechat.fake_wechat_api import FakeWeChat, serving
from tests.integration.helpers_integration import deliver_all
from tests.marketing.helpers_marketing import ago, make_contact
from tests.marketing.wechat_mass_helpers import draft, oa_inbox, post_callback

SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wechat" / "messages"
if not SHARED.exists():  # the checkout may live elsewhere; /work/shared is the canonical place
    SHARED = Path("/work/shared/fixtures/wechat/messages")
OPENID = "otFpruAK8D-E6EfStSYonYSBZ8_4"  # the follower of the shared subscribe_msg fixtures
ACCEPTED = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
REJECTED = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChat]:
    async with serving() as f:
        yield f


def fixture(name: str, create_time: int | None = None) -> str:
    xml = (SHARED / name).read_text("utf-8")
    if create_time is not None:  # a second, distinct callback of the same shape
        xml = xml.replace("<CreateTime>1610969440</CreateTime>", f"<CreateTime>{create_time}</CreateTime>")
    return xml


async def _consents(client, headers, contact_id):
    resp = await client.get(f"/api/v1/contacts/{contact_id}/wechat-subscriptions", headers=headers)
    assert resp.status == 200
    return {c["template_id"]: (c["status"], c["remaining"]) for c in (await resp.json())["consents"]}


async def _report(ctx, bid):
    async with ctx.db.session() as s:
        return await report(s, await s.get(broadcasts.Broadcast, bid))


async def test_consent_lifecycle_from_popup_to_send_to_used_up(ctx, client, fake, admin_headers):
    inbox = await oa_inbox(ctx, fake)
    cid = await make_contact(ctx, name="订阅者", tags=("fans",), identities=[(inbox, OPENID, {"last_inbound_at": ago(24 * 9)})])
    other = await make_contact(ctx, tags=("fans",), identities=[(inbox, "oNoConsent", {"last_inbound_at": ago(24 * 9)})])
    popup = fixture("template_subscribe_msg_popup_event.xml")
    assert (await post_callback(client, inbox.id, popup)).status == 200
    assert await _consents(client, admin_headers, cid) == {ACCEPTED: ("accept", 1), REJECTED: ("reject", 0)}
    # WeChat retries a callback it got no answer to: the consent is counted once.
    await post_callback(client, inbox.id, popup)
    assert (await _consents(client, admin_headers, cid))[ACCEPTED] == ("accept", 1)
    # A second "accept" in another popup allows a second send.
    await post_callback(client, inbox.id, fixture("template_subscribe_msg_popup_event.xml", int(time.time())))
    assert (await _consents(client, admin_headers, cid))[ACCEPTED] == ("accept", 2)

    options = {"template_id": ACCEPTED, "fields": {"thing1": "text", "thing2": "{{name|朋友}}"}, "url": "https://shop.example.com/new"}
    bid = await draft(ctx, inbox, "subscribe", options, template="新品上市")
    assert await broadcasts.start(ctx, bid) == {"targeted": 2, "queued": 1, "skipped": 1}
    assert (await _report(ctx, bid))["skipped_by_reason"] == {"no_subscribe_consent": 1}
    assert (await _consents(client, admin_headers, cid))[ACCEPTED] == ("accept", 1)  # spent when it was queued
    await deliver_all(ctx)
    assert fake.subscribe_sends == [{"touser": OPENID, "template_id": ACCEPTED, "page": "https://shop.example.com/new",
                                     "data": {"thing1": {"value": "新品上市"}, "thing2": {"value": "订阅者"}}}]
    assert (await _report(ctx, bid))["sent"] == 1
    # WeChat reports the send's result.
    assert (await post_callback(client, inbox.id, fixture("template_subscribe_msg_sent_event.xml"))).status == 200
    resp = await client.get(f"/api/v1/contacts/{cid}/wechat-subscriptions", headers=admin_headers)
    assert {c["template_id"]: c["last_result"] for c in (await resp.json())["consents"]}[ACCEPTED] == "success"
    assert other
    # The last one-time consent goes with the next send; after that the follower is skipped.
    await broadcasts.start(ctx, await draft(ctx, inbox, "subscribe", options, template="再次上新"))
    assert (await _consents(client, admin_headers, cid))[ACCEPTED] == ("accept", 0)
    third = await draft(ctx, inbox, "subscribe", options, template="第三次")
    assert await broadcasts.start(ctx, third) == {"targeted": 2, "queued": 0, "skipped": 2}
    await deliver_all(ctx)
    assert len(fake.subscribe_sends) == 2


async def test_start_with_nobody_consenting_says_so(ctx, fake):
    inbox = await oa_inbox(ctx, fake)
    await make_contact(ctx, tags=("fans",), identities=[(inbox, "oX", {})])
    bid = await draft(ctx, inbox, "subscribe", {"template_id": ACCEPTED})
    result = await broadcasts.start(ctx, bid)
    assert result == {"targeted": 1, "queued": 0, "skipped": 1}


async def test_outside_the_window_a_consenting_follower_gets_the_subscription_message(ctx, client, fake):
    inbox = await oa_inbox(ctx, fake, template={"template_id": "TPL-SERVICE", "fields": {"first": "text"}})
    inside = await make_contact(ctx, tags=("fans",), identities=[(inbox, "oInside", {"last_inbound_at": ago(2)})])
    consenting = await make_contact(ctx, name="王五", tags=("fans",),
                                    identities=[(inbox, OPENID, {"last_inbound_at": ago(24 * 5)})])
    silent = await make_contact(ctx, tags=("fans",), identities=[(inbox, "oSilent", {"last_inbound_at": ago(24 * 5)})])
    await post_callback(client, inbox.id, fixture("template_subscribe_msg_popup_event.xml"))
    bid = await draft(ctx, inbox, "standard", {"template_id": ACCEPTED}, template="您好 {{name|朋友}}，新品上市")
    assert await broadcasts.start(ctx, bid) == {"targeted": 3, "queued": 2, "skipped": 1}
    await deliver_all(ctx)
    assert [s["touser"] for s in fake.custom_sends] == ["oInside"]
    assert [(s["touser"], s["data"]["thing1"]["value"]) for s in fake.subscribe_sends] == [(OPENID, "您好 王五，新品上市")]
    assert fake.template_sends == []  # template messages are for service notices, never a broadcast
    rep = await _report(ctx, bid)
    assert rep["sent"] == 2 and rep["skipped_by_reason"] == {"outside_window": 1}
    assert inside and consenting and silent


async def test_withdrawn_or_refused_consent_stops_the_sends(ctx, client, fake, admin_headers):
    inbox = await oa_inbox(ctx, fake)
    cid = await make_contact(ctx, tags=("fans",), identities=[(inbox, OPENID, {})])
    await post_callback(client, inbox.id, fixture("template_subscribe_msg_popup_event.xml"))
    # The follower turned the template off in the account's settings.
    await post_callback(client, inbox.id, fixture("template_subscribe_msg_change_event.xml"))
    assert (await _consents(client, admin_headers, cid))[ACCEPTED] == ("reject", 0)
    # Consent again, but WeChat refuses the send (43101): the delivery fails with the reason, consent withdrawn.
    await post_callback(client, inbox.id, fixture("template_subscribe_msg_popup_event.xml", int(time.time())))
    fake.subscribe_refused.add((OPENID, ACCEPTED))
    bid = await draft(ctx, inbox, "subscribe", {"template_id": ACCEPTED})
    assert (await broadcasts.start(ctx, bid))["queued"] == 1
    await deliver_all(ctx)
    rep = await _report(ctx, bid)
    assert rep["failed"] == 1 and list(rep["failed_by_reason"]) == ["43101"]
    assert fake.subscribe_sends == []
