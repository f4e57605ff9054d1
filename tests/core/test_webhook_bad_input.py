"""Bad input on the HTTP API channel webhook: right status, JSON error, nothing stored."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from channels import signing
from scrm.db.models import Contact, Message
from tests.conftest import api_message, make_inbox, post_signed


async def stored(ctx) -> int:
    async with ctx.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Message))) + int(
            await s.scalar(select(func.count()).select_from(Contact)))


async def test_valid_signed_message_is_accepted(client, ctx):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, api_message("ok-1"))
    assert resp.status == 200
    assert (await resp.json())["results"][0]["duplicate"] is False


@pytest.mark.parametrize("case", ["missing", "wrong", "stale", "future", "other_secret"])
async def test_bad_signatures_get_401(client, ctx, case):
    inbox = await make_inbox(ctx)
    body = json.dumps(api_message("sig-1")).encode()
    headers = signing.signed_headers("s" * 32, body)
    if case == "missing":
        headers = {}
    elif case == "wrong":
        headers[signing.SIGNATURE_HEADER] = "sha256=" + "0" * 64
    elif case == "stale":
        headers = signing.signed_headers("s" * 32, body, now=time.time() - 3600)
    elif case == "future":
        headers = signing.signed_headers("s" * 32, body, now=time.time() + 3600)
    else:
        headers = signing.signed_headers("t" * 32, body)
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body, headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "bad_signature"
    assert await stored(ctx) == 0


async def test_malformed_json_gets_400(client, ctx):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, None, raw=b'{"id": "x", "sender": ')
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "malformed_json"
    assert await stored(ctx) == 0


@pytest.mark.parametrize("payload", [
    {"id": "x", "text": "no sender"},
    {"id": 5, "sender": {"id": ["not", "a", "string"]}, "text": "t"},
    {"id": "x", "sender": {"id": "u"}, "text": "t", "attachments": "not-a-list"},
    {"id": "x", "sender": {"id": "u"}, "content_type": "hologram"},
    [1, 2, 3],
])
async def test_wrong_field_types_get_400_naming_the_field(client, ctx, payload):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, payload)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "invalid_message" and "invalid message" in body["error"]["message"]
    assert await stored(ctx) == 0


async def test_unknown_inbox_gets_404(client, ctx):
    resp = await post_signed(client, 999, api_message("u-1"))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_inbox"
    resp = await client.post("/webhooks/nosuchchannel/1", data=b"{}")
    assert resp.status == 404


async def test_inbox_of_another_channel_type_gets_404(client, ctx):
    inbox = await make_inbox(ctx, "memory", name="sim")
    resp = await post_signed(client, inbox.id, api_message("u-1"))
    assert resp.status == 404


async def test_body_over_the_limit_gets_413(client, ctx, settings):
    inbox = await make_inbox(ctx)
    big = api_message("big-1", text="汉" * (settings.server.max_body_bytes // 2))
    resp = await post_signed(client, inbox.id, big)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"
    assert await stored(ctx) == 0


async def test_batch_of_messages_is_stored_in_order(client, ctx):
    inbox = await make_inbox(ctx)
    resp = await post_signed(client, inbox.id, {"messages": [api_message(f"b{i}", text=str(i)) for i in range(3)]})
    assert resp.status == 200
    ids = [r["message_id"] for r in (await resp.json())["results"]]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_database_unavailable_gets_503(aiohttp_client, settings):
    from scrm.bootstrap import build_context
    from scrm.settings import load_settings
    from scrm.web.app import create_app

    down = load_settings(env={}, overrides={"database": {"url": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
                                                         "auto_migrate": False},
                                            "storage": {"path": settings.storage.path},
                                            "security": {"secret_key": settings.security.secret_key}})
    ctx = await build_context(down)
    try:
        client = await aiohttp_client(create_app(down, ctx=ctx, run_background=False))
        resp = await post_signed(client, 1, api_message("down-1"))
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"]["code"] == "unavailable"
        ready = await client.get("/readyz")
        assert ready.status == 503
    finally:
        await ctx.close()
