"""Property-based fuzzing (Hypothesis) of every webhook endpoint: whatever arrives, the answer is never a
5xx, and nothing is stored unless the answer is a 2xx.

The requests are built from each channel's real schema with hostile values mixed in (NUL characters,
lone surrogates, NaN and huge numbers, far-off times with odd offsets, deep nesting, ids beyond
BIGINT), most of them correctly signed so the code after authentication is reached too, plus raw
garbage. Examples per endpoint are bounded for CI (SCRM_FUZZ_EXAMPLES, default 40; the API channel
gets three times as many); the issue's run used 1,000. The driver and the hostile values are in
tests/core/fuzzing.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from channels import signing
from channels.wechat.callback import signature as wechat_signature
from tests.conftest import make_inbox
from tests.core.fuzzing import (
    EXAMPLES,
    dumps,
    free_text,
    fuzz_endpoint,
    garbage,
    hostile_str,
    ident,
    json_value,
    numbers,
    scalar,
    times,
    xml_escape,
    xml_text,
)

SECRET = "s" * 32
TG_SECRET = "fuzz-telegram-secret"
WX_TOKEN = "fuzztoken"

# --- the API channel ---------------------------------------------------------------------------------------
sender = st.fixed_dictionaries({"id": st.one_of(hostile_str, numbers)}, optional={
    "name": scalar, "email": scalar, "phone": scalar, "language": scalar, "avatar_url": scalar,
    "attributes": st.one_of(st.dictionaries(hostile_str, json_value, max_size=3), scalar)})
attachment = st.fixed_dictionaries({"url": scalar}, optional={
    "kind": st.sampled_from(["image", "file", "hologram"]), "filename": scalar, "size": numbers, "mime_type": scalar})
api_message = st.fixed_dictionaries({"id": st.one_of(hostile_str, numbers), "sender": st.one_of(sender, scalar)}, optional={
    "text": scalar, "content_type": st.sampled_from(["text", "image", "postback", "hologram"]), "sent_at": times,
    "attachments": st.one_of(st.lists(attachment, max_size=2), scalar), "reply_to": scalar, "choice": scalar,
    "type": st.sampled_from(["message", "delivery_status", "unsubscribe", "other"]),
    "status": st.sampled_from(["delivered", "failed", "x"]), "error": scalar})
# Valid in shape, hostile in content: these pass the signature and the schema and reach the database.
api_valid = st.fixed_dictionaries({"id": ident, "sender": st.fixed_dictionaries({"id": ident}, optional={
    "name": free_text, "attributes": st.dictionaries(free_text, json_value, max_size=3), "language": st.just("zh")})},
    optional={"text": free_text, "sent_at": times, "content_type": st.sampled_from(["text", "postback"]),
              "choice": ident, "reply_to": ident,
              "attachments": st.lists(st.fixed_dictionaries({"url": ident, "filename": free_text}), max_size=2)})
api_body = st.one_of(api_valid.map(dumps), api_valid.map(dumps),
                     st.lists(api_valid, min_size=1, max_size=3).map(lambda m: dumps({"messages": m})),
                     api_message.map(dumps), st.lists(api_message, max_size=3).map(lambda m: dumps({"messages": m})),
                     json_value.map(dumps), garbage)
timestamp_header = st.one_of(st.just("now"), st.sampled_from(["9" * 400, "١٧٠٠٠٠٠٠٠٠", "-1", "1e9", ""]),
                             st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cc", "Cs")), max_size=20))
signature_header = st.one_of(st.just("valid"), st.just("valid"), st.sampled_from(["sha256=" + "é" * 64, "sha256=",
                                                                                  "签名", "sha256=" + "0" * 64]),
                             st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cc", "Cs")), max_size=80))


@st.composite
def api_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    valid = draw(st.booleans())  # signed and fresh, to the right inbox: only the body is hostile
    body = draw(api_body)
    ts = "now" if valid else draw(timestamp_header)
    ts = str(int(time.time())) if ts == "now" else ts
    sig = "valid" if valid else draw(signature_header)
    sig = signing.sign(SECRET, ts, body) if sig == "valid" else sig
    inbox = "{id}" if valid else draw(st.sampled_from(["{id}", str(2**63), "9" * 50, "-1", "0"]))
    return {"path": f"/webhooks/api/{inbox}", "data": body,
            "headers": {signing.TIMESTAMP_HEADER: ts, signing.SIGNATURE_HEADER: sig, "Content-Type": "application/json"}}


# --- Telegram -----------------------------------------------------------------------------------------------
tg_user = st.fixed_dictionaries({"id": numbers, "is_bot": st.booleans(), "first_name": scalar},
                                optional={"username": scalar, "language_code": scalar, "last_name": scalar})
tg_message = st.fixed_dictionaries({"message_id": numbers, "date": st.one_of(numbers, st.just(int(time.time()))),
                                    "chat": st.fixed_dictionaries({"id": numbers, "type": st.sampled_from(
                                        ["private", "group", "channel", "x"])}, optional={"first_name": scalar})},
                                   optional={"text": scalar, "from": tg_user, "caption": scalar,
                                             "photo": st.lists(st.fixed_dictionaries(
                                                 {"file_id": scalar, "file_unique_id": scalar, "width": numbers,
                                                  "height": numbers}), max_size=2)})
tg_update = st.fixed_dictionaries({"update_id": numbers}, optional={"message": tg_message, "edited_message": tg_message,
                                                                    "callback_query": json_value})


tg_chat_id = st.integers(min_value=1, max_value=2**52)
tg_valid = st.builds(
    lambda uid, chat, text, name: {"update_id": uid, "message": {
        "message_id": uid % 100000 + 1, "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private", "first_name": name},
        "from": {"id": chat, "is_bot": False, "first_name": name}}},
    st.integers(min_value=1, max_value=2**31), tg_chat_id, free_text, free_text)


@st.composite
def telegram_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    body = draw(st.one_of(tg_valid.map(dumps), tg_valid.map(dumps), tg_update.map(dumps), garbage))
    secret = draw(st.sampled_from([TG_SECRET, TG_SECRET, TG_SECRET, "wrong", "é"]))
    return {"path": "/webhooks/telegram/{id}", "data": body, "headers": {"X-Telegram-Bot-Api-Secret-Token": secret}}


# --- WeChat (plain mode) ---------------------------------------------------------------------------------------
@st.composite
def wechat_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    valid = draw(st.booleans())  # signed, fresh, plain mode, a text message: only the content is hostile
    if valid:
        fields = {"ToUserName": "gh_fuzz", "FromUserName": draw(st.one_of(st.just("oUser123"), xml_text)),
                  "CreateTime": int(time.time()), "MsgType": "text", "Content": draw(xml_text),
                  "MsgId": draw(st.integers(min_value=1, max_value=2**63 - 1))}
    else:
        fields = {"ToUserName": draw(scalar), "FromUserName": draw(st.one_of(scalar, st.just("oUser123"))),
                  "CreateTime": draw(st.one_of(numbers, st.just(int(time.time())), scalar)),
                  "MsgType": draw(st.sampled_from(["text", "image", "event", "voice", "location", "x"])),
                  "Content": draw(scalar), "MsgId": draw(st.one_of(numbers, scalar)), "Event": draw(scalar)}
    xml_body = ("<xml>" + "".join(f"<{k}>{xml_escape(v)}</{k}>" for k, v in fields.items()) + "</xml>").encode()
    body = xml_body if valid else draw(st.one_of(st.just(xml_body), garbage,
                                                 st.just(b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml/>")))
    ts = str(int(time.time())) if valid else draw(st.sampled_from([str(int(time.time())), "9" * 400, "x", ""]))
    nonce = draw(st.text(st.characters(min_codepoint=48, max_codepoint=122), max_size=8))
    good = wechat_signature(WX_TOKEN, ts, nonce)
    sig = good if valid else draw(st.one_of(st.just(good), st.text(max_size=10)))
    method = "POST" if valid else draw(st.sampled_from(["POST", "GET", "PUT"]))
    params = {"timestamp": ts, "nonce": nonce, "signature": sig, "echostr": "e"}
    if not valid and draw(st.booleans()):
        params["encrypt_type"] = "aes"
    return {"method": method, "path": "/webhooks/wechat/{id}", "data": body, "params": params}


# --- the simulator (memory) and email (no webhook: always refused) -------------------------------------------------
@st.composite
def memory_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    valid = st.fixed_dictionaries({"id": ident, "sender": ident}, optional={"text": free_text, "name": free_text})
    body = draw(st.one_of(valid.map(dumps), valid.map(dumps), st.fixed_dictionaries({"id": scalar, "sender": scalar}, optional={
        "text": scalar, "name": scalar, "choice": scalar}).map(dumps), json_value.map(dumps), garbage))
    return {"path": "/webhooks/memory/{id}", "data": body}


@st.composite
def email_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    return {"path": "/webhooks/email/{id}", "data": draw(garbage)}


# --- the property -------------------------------------------------------------------------------------------
async def _fuzz(client: Any, ctx: Any, inbox_id: int, strategy: st.SearchStrategy[dict[str, Any]],
                examples: int, reaches_storage: bool = True) -> None:
    await fuzz_endpoint(client, ctx, strategy, examples, lambda s: s.replace("{id}", str(inbox_id)),
                        reaches_storage=reaches_storage)


async def test_api_webhook_fuzz(client, ctx):
    inbox = await make_inbox(ctx)
    await _fuzz(client, ctx, inbox.id, api_requests(), EXAMPLES * 3)


async def test_telegram_webhook_fuzz(client, ctx):
    inbox = await make_inbox(ctx, "telegram", name="tg", secrets={"bot_token": "1:fuzz", "webhook_secret": TG_SECRET})
    await _fuzz(client, ctx, inbox.id, telegram_requests(), EXAMPLES)


async def test_wechat_webhook_fuzz(client, ctx):
    inbox = await make_inbox(ctx, "wechat_oa", name="wx", settings={"app_id": "wx0123456789abcdef",
                                                                      "passive_reply_timeout": 0},
                             secrets={"app_secret": "x", "token": WX_TOKEN})
    await _fuzz(client, ctx, inbox.id, wechat_requests(), EXAMPLES)


async def test_memory_webhook_fuzz(client, ctx):
    inbox = await make_inbox(ctx, "memory", name="sim")
    await _fuzz(client, ctx, inbox.id, memory_requests(), EXAMPLES)


async def test_email_has_no_webhook_whatever_is_posted(client, ctx):
    inbox = await make_inbox(ctx, "email", name="mail", settings={"address": "support@example.com"})
    await _fuzz(client, ctx, inbox.id, email_requests(), max(10, EXAMPLES // 4), reaches_storage=False)
