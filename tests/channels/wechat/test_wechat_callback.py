"""Callback security: URL verification, the three POST modes, and every way to be refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from channels.base import InboxConfig
from channels.wechat import WeChatAdapter
from scrm.domain import InboundMessage, WebhookError, WebhookRequest
from tests.channels.wechat.fake_wechat_api import APP_ID
from tests.channels.wechat.wechat_callbacks import (
    OLD_AES_KEY,
    OWN,
    SHARED,
    encrypted_request,
    get_request,
    plain_request,
    text_xml,
)
from tests.fakes import RecordingSink


async def refused(adapter: WeChatAdapter, request: WebhookRequest, sink: RecordingSink) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        await adapter.handle_webhook(request, sink)
    assert sink.batches == [], "nothing may reach the sink when a callback is refused"
    return info.value


async def test_url_verification_echoes_echostr(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    response = await adapter.handle_webhook(get_request("5837397520665436492"), sink)
    assert (response.status, response.body) == (200, b"5837397520665436492")


async def test_url_verification_with_wrong_token_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    error = await refused(adapter, get_request(token="not-our-token"), sink)
    assert error.status == 403


async def test_url_verification_with_stale_timestamp_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    error = await refused(adapter, get_request(ts=int(time.time()) - 3600), sink)
    assert error.status == 403


async def test_plaintext_mode_stores_the_message(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    response = await adapter.handle_webhook(plain_request(text_xml("你好")), sink)
    assert (response.status, response.body) == (200, b"success")
    [item] = sink.items
    assert isinstance(item, InboundMessage)
    assert (item.text, item.sender_id, item.external_id) == ("你好", "oUser1", "6200000000000000001")


@pytest.mark.parametrize("compatible", [False, True], ids=["safe", "compatible"])
async def test_encrypted_modes_store_the_decrypted_message(
    adapter: WeChatAdapter, sink: RecordingSink, compatible: bool
) -> None:
    request = encrypted_request(text_xml("加密消息"), app_id=APP_ID, compatible=compatible)
    response = await adapter.handle_webhook(request, sink)
    assert response.body == b"success"
    assert [i.text for i in sink.items if isinstance(i, InboundMessage)] == ["加密消息"]


async def test_compatible_mode_trusts_only_the_encrypted_copy(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    # An attacker edits the plaintext half of a compatible-mode callback: the signed ciphertext wins.
    request = encrypted_request(text_xml("real"), app_id=APP_ID, compatible=True)
    forged = request.body.replace(b"<![CDATA[real]]>", b"<![CDATA[forged]]>", 1)
    await adapter.handle_webhook(WebhookRequest("POST", request.path, request.query, {}, forged), sink)
    assert [i.text for i in sink.items if isinstance(i, InboundMessage)] == ["real"]


async def test_previous_aes_key_still_accepted_during_rotation(
    make_adapter: Callable[..., WeChatAdapter], sink: RecordingSink
) -> None:
    adapter = make_adapter(previous_encoding_aes_key=OLD_AES_KEY)
    request = encrypted_request(text_xml("旧密钥"), app_id=APP_ID, key=OLD_AES_KEY)
    assert (await adapter.handle_webhook(request, sink)).body == b"success"
    assert [i.text for i in sink.items if isinstance(i, InboundMessage)] == ["旧密钥"]


async def test_gbk_encoded_body_is_decoded(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    xml = '<?xml version="1.0" encoding="GBK"?>' + text_xml("中文编码")
    await adapter.handle_webhook(plain_request(xml.encode("gbk")), sink)
    assert [i.text for i in sink.items if isinstance(i, InboundMessage)] == ["中文编码"]


# -- the known-answer vector ------------------------------------------------------------------


def known_answer() -> dict:
    return json.loads((SHARED / "crypto" / "known_answer.json").read_text())


def known_answer_adapter(runtime) -> WeChatAdapter:  # type: ignore[no-untyped-def]
    vector = known_answer()
    inbox = InboxConfig(
        id=7,
        name="kat",
        channel_type="wechat_oa",
        settings={"app_id": vector["app_id"]},
        secrets={"app_secret": "x", "token": vector["token"], "encoding_aes_key": vector["encoding_aes_key"]},
    )
    adapter = WeChatAdapter(inbox, runtime)
    adapter.clock = lambda: float(vector["decrypt"]["timestamp"])  # a recorded callback from 2014
    return adapter


def known_answer_request(msg_signature: str) -> WebhookRequest:
    d = known_answer()["decrypt"]
    query = {"timestamp": d["timestamp"], "nonce": d["nonce"], "encrypt_type": "aes", "msg_signature": msg_signature}
    return WebhookRequest("POST", "/webhooks/wechat/7", query, {}, d["body"].encode())


async def test_known_answer_vector_decrypts_to_expected_fields(runtime, sink: RecordingSink) -> None:  # type: ignore[no-untyped-def]
    vector = known_answer()
    adapter = known_answer_adapter(runtime)
    response = await adapter.handle_webhook(known_answer_request(vector["decrypt"]["msg_signature"]), sink)
    assert response.body == b"success"
    [item] = sink.items
    assert isinstance(item, InboundMessage)
    assert item.text == vector["decrypt"]["expect"]["Content"]
    assert item.sender_id == vector["decrypt"]["expect"]["FromUserName"]


async def test_known_answer_vector_with_wrong_signature_is_403(runtime, sink: RecordingSink) -> None:  # type: ignore[no-untyped-def]
    adapter = known_answer_adapter(runtime)
    error = await refused(adapter, known_answer_request(known_answer()["bad_signature"]["msg_signature"]), sink)
    assert error.status == 403


# -- bad input --------------------------------------------------------------------------------


async def test_forged_signature_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    error = await refused(adapter, plain_request(text_xml(), signature="0" * 40), sink)
    assert (error.status, error.code) == (403, "bad_signature")


async def test_missing_signature_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    request = plain_request(text_xml())
    query = {k: v for k, v in request.query.items() if k != "signature"}
    error = await refused(adapter, WebhookRequest("POST", request.path, query, {}, request.body), sink)
    assert error.status == 403


async def test_forged_msg_signature_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    request = encrypted_request(text_xml(), app_id=APP_ID, msg_signature="f" * 40)
    assert (await refused(adapter, request, sink)).status == 403


@pytest.mark.parametrize("age", [-301, 301, 86400])
async def test_timestamp_outside_window_is_403(adapter: WeChatAdapter, sink: RecordingSink, age: int) -> None:
    error = await refused(adapter, plain_request(text_xml(), ts=int(time.time()) - age), sink)
    assert (error.status, error.code) == (403, "stale_timestamp")


async def test_timestamp_window_is_configurable(
    make_adapter: Callable[..., WeChatAdapter], sink: RecordingSink
) -> None:
    adapter = make_adapter(settings={"timestamp_window_seconds": 30})
    error = await refused(adapter, plain_request(text_xml(), ts=int(time.time()) - 60), sink)
    assert error.status == 403


@pytest.mark.parametrize("name", ["attack__billion_laughs.xml", "attack__external_entity.xml"])
async def test_entity_declarations_are_400(adapter: WeChatAdapter, sink: RecordingSink, name: str) -> None:
    error = await refused(adapter, plain_request((OWN / name).read_bytes()), sink)
    assert (error.status, error.code) == (400, "xml_dtd")


async def test_entity_declaration_inside_encrypted_payload_is_400(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    xml = (OWN / "attack__billion_laughs.xml").read_text()
    error = await refused(adapter, encrypted_request(xml, app_id=APP_ID), sink)
    assert (error.status, error.code) == (400, "xml_dtd")


async def test_doctype_text_inside_a_message_is_fine(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    # A customer may paste HTML: "<!DOCTYPE" inside CDATA is content, not a declaration.
    await adapter.handle_webhook(plain_request(text_xml("<!DOCTYPE html> 为什么报错")), sink)
    assert [i.text for i in sink.items if isinstance(i, InboundMessage)] == ["<!DOCTYPE html> 为什么报错"]


@pytest.mark.parametrize(
    "body",
    [b"", b'{"MsgType": "text"}', b"<xml><unclosed></xml>", b"\xff\xfe\x00garbage", b"<root>1</root>"],
    ids=["empty", "json", "malformed", "binary", "wrong-root"],
)
async def test_non_xml_bodies_are_400(adapter: WeChatAdapter, sink: RecordingSink, body: bytes) -> None:
    assert (await refused(adapter, plain_request(body), sink)).status == 400


async def test_oversize_body_is_400(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    body = text_xml("长" * 40_000).encode()
    assert (await refused(adapter, plain_request(body), sink)).status == 400


async def test_missing_fields_are_400(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    xml = "<xml><ToUserName>gh</ToUserName><MsgType>text</MsgType><Content>hi</Content></xml>"
    error = await refused(adapter, plain_request(xml), sink)
    assert (error.status, error.code) == (400, "missing_fields")
    assert "FromUserName" in error.message


async def test_wrong_app_id_after_decryption_is_403(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    request = encrypted_request(text_xml(), app_id="wxsomebodyelse0000")
    error = await refused(adapter, request, sink)
    assert (error.status, error.code) == (403, "wrong_app_id")


async def test_garbage_ciphertext_is_rejected(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    request = encrypted_request(text_xml(), app_id=APP_ID, encrypted="bm90IGVuY3J5cHRlZA==")
    assert (await refused(adapter, request, sink)).status in (400, 403)


async def test_encrypted_callback_without_aes_key_is_403(
    make_adapter: Callable[..., WeChatAdapter], sink: RecordingSink
) -> None:
    adapter = make_adapter(encoding_aes_key=None)
    assert (await refused(adapter, encrypted_request(text_xml(), app_id=APP_ID), sink)).status == 403


async def test_other_methods_are_405(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    request = WebhookRequest("PUT", "/webhooks/wechat/1", {}, {}, b"")
    assert (await refused(adapter, request, sink)).status == 405


def test_invalid_encoding_aes_key_is_refused_at_configuration(make_adapter: Callable[..., WeChatAdapter]) -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        make_adapter(encoding_aes_key="too-short")
