"""Large bodies over a real socket: every webhook reads the whole body up to server.max_body_bytes and
answers 413 above it, with Content-Length and chunked (no Content-Length) alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from channels import signing
from scrm.db.models import Message
from tests.conftest import api_message, make_inbox

SECRET = "s" * 32


def signed_body_of_size(size: int) -> bytes:
    """A valid API batch whose JSON body is exactly `size` bytes (texts of up to 60,000 characters)."""
    count = size // 60_000 + 1
    texts = [60_000] * (count - 1) + [0]
    frame = len(json.dumps({"messages": [api_message(f"big-{i}", text="") for i in range(count)]}).encode())
    texts[-1] = size - frame - sum(texts)
    assert 0 <= texts[-1] <= 60_000
    body = json.dumps({"messages": [api_message(f"big-{i}", text="x" * n) for i, n in enumerate(texts)]}).encode()
    assert len(body) == size
    return body


async def chunks(body: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """The body in pieces with pauses: the server sees it arrive over several reads."""
    for start in range(0, len(body), size):
        yield body[start:start + size]
        await asyncio.sleep(0.001)


async def stored(ctx) -> int:
    async with ctx.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Message)))


async def test_a_large_signed_batch_is_read_whole(client, ctx):
    """807 KB of signed batch (the size the issue saw refused with 401 'signature mismatch')."""
    inbox = await make_inbox(ctx)
    messages = [api_message(f"batch-{i}", sender=f"u{i}", text="汉字" * 1345) for i in range(100)]
    body = json.dumps({"messages": messages}, ensure_ascii=False).encode()
    assert 800_000 < len(body) < 1_048_576
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body,
                             headers={"Content-Type": "application/json", **signing.signed_headers(SECRET, body)})
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["results"]) == 100
    assert await stored(ctx) == 100


@pytest.mark.parametrize("over", [False, True], ids=["at_the_limit", "one_byte_over"])
async def test_a_chunked_signed_body_at_and_over_the_limit(client, ctx, settings, over):
    inbox = await make_inbox(ctx)
    limit = settings.server.max_body_bytes
    body = signed_body_of_size(limit + 1 if over else limit)
    headers = {"Content-Type": "application/json", **signing.signed_headers(SECRET, body)}
    resp = await client.post(f"/webhooks/api/{inbox.id}", data=chunks(body), headers=headers)
    assert "Content-Length" not in resp.request_info.headers  # really chunked
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    if over:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"
        assert await stored(ctx) == 0
    else:
        assert resp.status == 200, await resp.text()
        assert await stored(ctx) == len(json.loads(body)["messages"])


@pytest.mark.parametrize("channel,channel_type,secrets", [
    ("api", "api", None),
    ("telegram", "telegram", {"bot_token": "123:abc", "webhook_secret": "chunk-secret"}),
    ("wechat", "wechat_oa", {"app_secret": "x", "token": "tok"}),
    ("memory", "memory", {}),
])
async def test_every_webhook_refuses_a_chunked_body_over_the_limit(client, ctx, settings, channel, channel_type,
                                                                  secrets):
    inbox = await make_inbox(ctx, channel_type, name=channel, secrets=secrets,
                             settings={"app_id": "wx0123456789abcdef"} if channel == "wechat" else None)
    body = b"{" + b" " * settings.server.max_body_bytes + b"}"
    resp = await client.post(f"/webhooks/{channel}/{inbox.id}", data=chunks(body, 64 * 1024))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"
    assert await stored(ctx) == 0


async def test_an_api_json_body_over_the_limit_gets_413(client, admin_headers, settings):
    body = json.dumps({"name": "x" * settings.server.max_body_bytes, "channel_type": "memory"}).encode()
    resp = await client.post("/api/v1/inboxes", data=chunks(body), headers=admin_headers)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"
