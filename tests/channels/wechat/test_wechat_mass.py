"""The adapter's 群发 / preview / subscription-message calls against the fake API (real JSON and error
codes), and the subscribe_msg_* and MASSSENDJOBFINISH callbacks as the shared samples have them."""

from __future__ import annotations

import pytest

from channels.wechat import WeChatAdapter
from scrm.domain import (
    ChannelEvent,
    ChannelEventKind,
    OutboundMessage,
    PermanentSendError,
    TransientSendError,
)
from tests.channels.wechat.fake_wechat_api import FakeWeChat
from tests.channels.wechat.wechat_callbacks import SHARED, plain_request
from tests.fakes import RecordingSink

MESSAGES = SHARED / "messages"


def out(spec: dict[str, object], text: str = "新品上市", recipient: str = "mass:list") -> OutboundMessage:
    return OutboundMessage(delivery_id=9, idempotency_key="k9", inbox_id=1, recipient_id=recipient, text=text,
                           metadata={"wechat": spec})


LIST = {"op": "mass", "target": "list", "openids": ["oA", "oB", "oC"], "clientmsgid": "scrm-1-1-abc"}


async def test_mass_by_list_and_the_resend_answered_45065_is_the_same_job(adapter: WeChatAdapter,
                                                                            fake: FakeWeChat) -> None:
    first = await adapter.send(out(LIST))
    assert fake.mass_sends == [{"msgtype": "text", "text": {"content": "新品上市"}, "clientmsgid": "scrm-1-1-abc",
                                "send_ignore_reprint": 0, "touser": ["oA", "oB", "oC"]}]
    again = await adapter.send(out(LIST))  # a worker died before recording the first answer
    assert again.external_id == first.external_id and again.data == {"duplicate": True}
    assert len(fake.mass_sends) == 1 and fake.mass_calls == 2


async def test_mass_to_a_tag_and_to_all_use_sendall(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.send(out({"op": "mass", "target": "tag", "tag_id": 2, "clientmsgid": "t"}))
    await adapter.send(out({"op": "mass", "target": "all", "clientmsgid": "a"}))
    assert [b["filter"] for b in fake.mass_sends] == [{"is_to_all": False, "tag_id": 2}, {"is_to_all": True}]


async def test_quota_exhausted_and_bad_lists_are_permanent(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.mass_quota = 0
    with pytest.raises(PermanentSendError) as exc:
        await adapter.send(out(LIST))
    assert exc.value.code == "45028" and "quota" in exc.value.reason
    with pytest.raises(PermanentSendError) as exc:
        await adapter.send(out({**LIST, "openids": ["oA"]}))
    assert exc.value.code == "bad_openid_list"
    fake.mass_quota = None
    fake.fail_next("/cgi-bin/message/mass/send", 45066)
    with pytest.raises(TransientSendError):
        await adapter.send(out(LIST))


async def test_preview_and_mass_get(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.send(out({"op": "preview"}, recipient="oTester"))
    assert fake.mass_previews == [{"touser": "oTester", "msgtype": "text", "text": {"content": "新品上市"}}]
    sent = await adapter.send(out(LIST))
    assert await adapter.mass_status(str(sent.external_id)) == "SENDING"


async def test_subscription_message_and_refusal(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    spec = {"op": "subscribe", "template_id": "TPL", "data": {"thing1": "新品上市"}, "url": "https://e.example/x"}
    await adapter.send(out(spec, recipient="oA"))
    assert fake.subscribe_sends == [{"touser": "oA", "template_id": "TPL", "data": {"thing1": {"value": "新品上市"}},
                                     "page": "https://e.example/x"}]
    fake.subscribe_refused.add(("oB", "TPL"))
    with pytest.raises(PermanentSendError) as exc:
        await adapter.send(out(spec, recipient="oB"))
    assert exc.value.code == "43101" and not exc.value.contact_unreachable


async def _replay(adapter: WeChatAdapter, sink: RecordingSink, name: str) -> ChannelEvent:
    await adapter.handle_webhook(plain_request((MESSAGES / name).read_bytes()), sink)
    item = sink.items[-1]
    assert isinstance(item, ChannelEvent)
    return item


async def test_subscribe_msg_callbacks_carry_each_template(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    popup = await _replay(adapter, sink, "template_subscribe_msg_popup_event.xml")
    assert popup.kind == ChannelEventKind.CONTACT_UPDATED and popup.sender_id == "otFpruAK8D-E6EfStSYonYSBZ8_4"
    assert popup.data["subscribe_msg"] == {"event": "popup", "items": [
        {"template_id": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "status": "accept", "popup_scene": "2"},
        {"template_id": "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "status": "reject", "popup_scene": "2"}]}
    change = await _replay(adapter, sink, "template_subscribe_msg_change_event.xml")
    assert change.data["subscribe_msg"]["items"] == [
        {"template_id": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "status": "reject", "popup_scene": None}]
    sent = await _replay(adapter, sink, "template_subscribe_msg_sent_event.xml")
    assert sent.data["subscribe_msg"] == {"event": "sent", "items": [
        {"template_id": "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "msg_id": "1700827132819554304",
         "error_code": 0, "error_status": "success"}]}


async def test_mass_job_finish_carries_its_counts(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await _replay(adapter, sink, "mass_send_job_finish_event.xml")
    assert item.kind == ChannelEventKind.DELIVERY_STATUS and item.external_id == "1000001625"
    assert {k: item.data[k] for k in ("total_count", "filter_count", "sent_count", "error_count", "job_status")} == {
        "total_count": 0, "filter_count": 0, "sent_count": 0, "error_count": 0, "job_status": "err(30003)"}
