"""WeCom callback crypto against the published known answers, and what a forged or foreign callback gets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto

from channels.wecom import WeComKfAdapter
from channels.wecom.callback import open_callback, verify_url
from scrm.domain import WebhookError, WebhookRequest
from tests.channels.wecom.wecom_samples import (
    AES_KEY,
    CORP_ID,
    OTHER_CORP,
    SHARED,
    TOKEN,
    callback_query,
    encrypt,
    kf_event_xml,
    post_request,
)
from tests.fakes import FakeRuntime, RecordingSink

VECTORS = json.loads((SHARED / "crypto" / "known_answer.json").read_text("utf-8"))["vectors"]
FOREVER = 1e12  # the vectors' timestamps are years old: the window check is tested separately


def by_kind(*kinds: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS if v["kind"] in kinds]


@pytest.mark.parametrize("v", by_kind("verify_url"), ids=lambda v: v["id"])
def test_url_verification_answers_the_decrypted_echostr(v: dict[str, Any]) -> None:
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], v["receive_id"])
    query = {k: v[k] for k in ("msg_signature", "timestamp", "nonce", "echostr")}
    assert verify_url(crypto, query, window=FOREVER, now=0) == v["expected_plaintext"]
    if "must_reject" in v:
        with pytest.raises(WebhookError) as err:
            verify_url(crypto, query | {"nonce": v["must_reject"]["nonce"]}, window=FOREVER, now=0)
        assert err.value.status == 403


@pytest.mark.parametrize("v", by_kind("decrypt_post"), ids=lambda v: v["id"])
def test_post_decrypts_to_the_published_plaintext(v: dict[str, Any]) -> None:
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], v["receive_id"])
    query = {k: v[k] for k in ("msg_signature", "timestamp", "nonce")}
    callback = open_callback(crypto, query, v["body"].encode(), window=FOREVER, now=0)
    if "expected_plaintext" in v:
        assert callback.xml == v["expected_plaintext"]
    for name, value in v.get("expected_fields", {}).items():
        assert callback.fields[name] == value


@pytest.mark.parametrize("v", by_kind("decrypt_only"), ids=lambda v: v["id"])
def test_ciphertext_decrypts(v: dict[str, Any]) -> None:
    import base64

    key = base64.b64decode(v["encoding_aes_key"] + "=")
    assert PrpCrypto(key).decrypt(v["ciphertext"], v["receive_id"]) == v["expected_plaintext"]


@pytest.mark.parametrize("v", by_kind("encrypt_reply"), ids=lambda v: v["id"])
def test_encryption_matches_with_the_fixed_random(v: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from wechatpy.crypto import base as crypto_base

    monkeypatch.setattr(crypto_base.BasePrpCrypto, "get_random_string", lambda self: v["random16"], raising=False)
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], v["receive_id"])
    xml = crypto.encrypt_message(v["plaintext"], v["nonce"], v["timestamp"])
    assert v["expected_encrypt"] in xml and v["expected_msg_signature"] in xml


@pytest.mark.parametrize("v", by_kind("decrypt_post"), ids=lambda v: v["id"])
def test_a_vector_for_another_corp_is_refused(v: dict[str, Any]) -> None:
    crypto = WeChatCrypto(v["token"], v["encoding_aes_key"], OTHER_CORP)
    query = {k: v[k] for k in ("msg_signature", "timestamp", "nonce")}
    with pytest.raises(WebhookError) as err:
        open_callback(crypto, query, v["body"].encode(), window=FOREVER, now=0)
    assert (err.value.status, err.value.code) == (403, "wrong_corp_id")


# -- through the adapter -------------------------------------------------------------------------------


async def test_url_verification_through_the_adapter(kf: WeComKfAdapter, sink: RecordingSink) -> None:
    echostr = encrypt("8321673523485738745")
    query = callback_query(echostr) | {"echostr": echostr}
    response = await kf.handle_webhook(WebhookRequest("GET", "/webhooks/wecom/1", query, {}, b""), sink)
    assert (response.status, response.body) == (200, b"8321673523485738745")


@pytest.mark.parametrize("change, status, code", [
    ({"token": "another-token"}, 403, "bad_signature"),
    ({"corp_id": OTHER_CORP}, 403, "wrong_corp_id"),
    ({"key": "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"}, 400, "bad_ciphertext"),
    ({"ts": 1_000_000_000}, 403, "stale_timestamp"),
])
async def test_forged_or_foreign_callbacks_are_refused(kf: WeComKfAdapter, sink: RecordingSink, runtime: FakeRuntime,
                                                       change: dict[str, Any], status: int, code: str) -> None:
    with pytest.raises(WebhookError) as err:
        await kf.handle_webhook(post_request(kf_event_xml(), **change), sink)
    assert (err.value.status, err.value.code) == (status, code)
    assert runtime.pulls == [] and sink.batches == []


@pytest.mark.parametrize("xml, code", [
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Event>&a;</Event></xml>', "xml_dtd"),
    ("<xml><Event>kf_msg_or_event</Event>", "bad_xml"),
    ("not xml at all", "bad_xml"),
])
async def test_bad_xml_inside_a_genuine_envelope_is_400(kf: WeComKfAdapter, sink: RecordingSink, runtime: FakeRuntime,
                                                        xml: str, code: str) -> None:
    with pytest.raises(WebhookError) as err:
        await kf.handle_webhook(post_request(xml), sink)
    assert (err.value.status, err.value.code) == (400, code) and runtime.pulls == []


async def test_entities_in_the_envelope_are_refused(kf: WeComKfAdapter, sink: RecordingSink) -> None:
    body = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>'
    with pytest.raises(WebhookError) as err:
        await kf.handle_webhook(WebhookRequest("POST", "/", callback_query("x"), {}, body), sink)
    assert err.value.status == 400


async def test_unknown_events_are_acknowledged_and_ignored(kf: WeComKfAdapter, sink: RecordingSink,
                                                           runtime: FakeRuntime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="channels.wecom")
    xml = f"<xml><ToUserName>{CORP_ID}</ToUserName><MsgType>event</MsgType><Event>brand_new_event</Event></xml>"
    response = await kf.handle_webhook(post_request(xml), sink)
    assert response.status == 200 and runtime.pulls == [] and sink.batches == []
    assert any("ignoring callback 'brand_new_event'" in r.getMessage() for r in caplog.records)


async def test_callback_without_open_kfid_pulls_the_inbox_account(kf: WeComKfAdapter, sink: RecordingSink,
                                                                  runtime: FakeRuntime) -> None:
    await kf.handle_webhook(post_request(kf_event_xml(open_kfid=None)), sink)
    assert runtime.pulls[0]["open_kfid"] == kf.open_kfid


def test_settings_name_what_is_wrong() -> None:
    from pydantic import ValidationError

    from channels.wecom.settings import WeComKfSecrets, WeComKfSettings

    with pytest.raises(ValidationError, match="corp_id"):
        WeComKfSettings.model_validate({"corp_id": "not a corp", "open_kfid": "wk1"})
    with pytest.raises(ValidationError, match="EncodingAESKey"):
        WeComKfSecrets.model_validate({"secret": "s", "token": TOKEN, "encoding_aes_key": "short"})
    assert WeComKfSecrets.model_validate({"secret": "s", "token": TOKEN, "encoding_aes_key": AES_KEY})
