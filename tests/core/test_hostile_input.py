"""Hostile input from the issue's fuzz run, each a 400 with a JSON error (nothing stored) or, for NUL
characters in free text, stored with them removed; never a 500, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from channels import signing
from scrm.db.models import Contact, Message
from tests.conftest import api_message, make_inbox, post_signed

SECRET = "s" * 32


async def counts(ctx) -> tuple[int, int]:
    async with ctx.db.session() as s:
        return (int(await s.scalar(select(func.count()).select_from(Message))),
                int(await s.scalar(select(func.count()).select_from(Contact))))


async def refused(resp, ctx, code: str | None = None) -> dict:
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert await counts(ctx) == (0, 0)
    return body


async def test_a_400_digit_timestamp_header(client, ctx):
    inbox = await make_inbox(ctx)
    body = json.dumps(api_message("t-1")).encode()
    ts = "9" * 400
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body, headers={
        signing.TIMESTAMP_HEADER: ts, signing.SIGNATURE_HEADER: signing.sign(SECRET, ts, body)})
    await refused(resp, ctx, "bad_header")


@pytest.mark.parametrize("ts", ["1_700_000_000", "١٧٠٠٠٠٠٠٠٠", "-5", "1.5e9", "0x65"])
async def test_timestamps_python_would_parse_but_are_not_unix_seconds(client, ctx, ts):
    inbox = await make_inbox(ctx)
    body = json.dumps(api_message("t-2")).encode()
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body, headers={
        signing.TIMESTAMP_HEADER: ts, signing.SIGNATURE_HEADER: signing.sign(SECRET, ts, body)})
    await refused(resp, ctx, "bad_header")


@pytest.mark.parametrize("signature", ["sha256=" + "é" * 64, "sha256=签名", "sha256=" + "0" * 63 + "g"])
async def test_a_signature_that_is_not_hex(client, ctx, signature):
    inbox = await make_inbox(ctx)
    body = json.dumps(api_message("s-1")).encode()
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body, headers={
        signing.TIMESTAMP_HEADER: str(int(time.time())), signing.SIGNATURE_HEADER: signature})
    await refused(resp, ctx, "bad_header")


@pytest.mark.parametrize("inbox_id", [str(2**63), str(2**64 + 5), "9" * 400])
async def test_an_inbox_id_beyond_bigint(client, ctx, inbox_id):
    await make_inbox(ctx)
    body = json.dumps(api_message("i-1")).encode()
    resp = await client.post(f"/webhooks/api/{inbox_id}", data=body, headers=signing.signed_headers(SECRET, body))
    assert resp.status in (400, 404) and (await resp.json())["error"]
    assert await counts(ctx) == (0, 0)


async def test_an_id_beyond_bigint_in_the_rest_api(client, admin_headers):
    resp = await client.get(f"/api/v1/conversations/{2**63}", headers=admin_headers)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_id"


async def test_nul_in_free_text_is_removed_and_the_message_stored(client, ctx):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, api_message("nul-1", text="你\u0000好\u0000", name="张\u0000三"))
    assert resp.status == 200, await resp.text()
    async with ctx.db.session() as s:
        message = await s.scalar(select(Message))
        contact = await s.scalar(select(Contact))
    assert message.text == "你好" and contact.name == "张三"


@pytest.mark.parametrize("payload", [
    api_message("id-\u0000"),
    api_message("nul-2", sender="user\u0000-1"),
    {**api_message("nul-3"), "sender": {"id": "u", "email": "a\u0000@example.com"}},
    {**api_message("nul-4"), "reply_to": "x\u0000"},
], ids=["message_id", "sender_id", "email", "reply_to"])
async def test_nul_in_an_identifier_is_refused(client, ctx, payload):
    inbox = await make_inbox(ctx)
    body = await refused(await post_signed(client, inbox.id, payload), ctx, "invalid_message")
    assert "NUL" in body["error"]["message"]


@pytest.mark.parametrize("raw", [
    b'{"id": "n", "sender": {"id": "u", "attributes": {"score": NaN}}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u", "attributes": {"score": Infinity}}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u", "attributes": {"score": -Infinity}}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u", "attributes": {"score": 1e400}}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u", "attributes": {"n": ' + b"9" * 5000 + b'}}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u", "name": "\\ud800"}, "text": "t"}',
    b'{"id": "n", "sender": {"id": "u"}, "text": "\\udfff lone"}',
    b'{"id": "n", "sender": {"id": "u"}, "text": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
    b"[" * 5000 + b"]" * 5000,
    b'{"id": "n", "sender": {"id": "u", "attributes": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}}",
], ids=["nan", "infinity", "-infinity", "1e400", "5000_digits", "surrogate_name", "surrogate_text",
        "utf8_surrogate", "nested_5000", "nested_100"])
async def test_json_no_database_can_store(client, ctx, raw):
    inbox = await make_inbox(ctx)
    await refused(await post_signed(client, inbox.id, None, raw=raw), ctx, "malformed_json")


@pytest.mark.parametrize("sent_at", ["0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z"])
async def test_a_sent_at_without_a_storable_utc_time(client, ctx, sent_at):
    inbox = await make_inbox(ctx)
    body = await refused(await post_signed(client, inbox.id, api_message("old-1", sent_at=sent_at)), ctx,
                         "invalid_message")
    assert "sent_at" in body["error"]["message"]


async def test_a_sent_at_with_an_offset_is_stored_in_utc(client, ctx):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, api_message("t-ok", sent_at="2026-01-31T08:00:00+14:00"))
    assert resp.status == 200
    async with ctx.db.session() as s:
        message = await s.scalar(select(Message))
    assert message.sent_at.isoformat() == "2026-01-30T18:00:00+00:00"


async def test_telegram_update_with_nul_is_stored_without_it_and_a_hostile_one_gets_400(client, ctx):
    inbox = await make_inbox(ctx, "telegram", name="tg", secrets={"bot_token": "1:x", "webhook_secret": "tg-secret"})
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret"}
    update = {"update_id": 1, "message": {"message_id": 5, "date": 1767225600, "text": "hi\u0000 there",
                                          "chat": {"id": 42, "type": "private", "first_name": "A\u0000"},
                                          "from": {"id": 42, "is_bot": False, "first_name": "A\u0000"}}}
    resp = await client.post(f"/webhooks/telegram/{inbox.id}", json=update, headers=headers)
    assert resp.status == 200, await resp.text()
    async with ctx.db.session() as s:
        assert (await s.scalar(select(Message.text))) == "hi there"
    for raw in (b"[" * 5000, b'{"update_id": 2, "message": {"date": NaN}}',
                json.dumps({**update, "update_id": 3, "message": {**update["message"], "date": 10**30}}).encode()):
        resp = await client.post(f"/webhooks/telegram/{inbox.id}", data=raw, headers=headers)
        assert resp.status == 400, (raw[:40], resp.status)
    assert await counts(ctx) == (1, 1)


async def test_wechat_timestamp_of_400_digits(client, ctx):
    inbox = await make_inbox(ctx, "wechat_oa", name="wx", settings={"app_id": "wx0123456789abcdef"},
                             secrets={"app_secret": "x", "token": "tok"})
    resp = await client.post(f"/webhooks/wechat/{inbox.id}?timestamp={'9' * 400}&nonce=1&signature=x",
                             data=b"<xml></xml>")
    assert resp.status == 403 and (await resp.json())["error"]
