"""Hostile input to the visitor endpoints: forged tokens, junk frames, odd origins and settings get clear answers."""

from __future__ import annotations

import json

import pytest
from aiohttp import WSMsgType

from channels.web.config import WebSettings, normalize_origin
from channels.web.tokens import check_file, origin_allowed, sign_visitor, verify_visitor
from tests.channels.web.conftest import Visitor

KEY = "k" * 48


@pytest.mark.parametrize("token", [None, "", "v1", "v1..", "v1.a.b", "v2.x.y", "v1." + "A" * 2000 + ".x",
                                   "v1.eyJpIjoxfQ.", "v1.%%%.***", "v1.bnVsbA.abc"])
def test_malformed_tokens_name_no_visitor(token):
    assert verify_visitor(KEY, 1, token) is None


def test_a_token_is_bound_to_its_inbox_key_and_lifetime():
    token = sign_visitor(KEY, 1, "v:abc", ttl=60, now=1000)
    assert verify_visitor(KEY, 1, token, now=1030) == "v:abc"
    assert verify_visitor(KEY, 2, token, now=1030) is None  # another inbox
    assert verify_visitor("x" * 48, 1, token, now=1030) is None  # another key
    assert verify_visitor(KEY, 1, token, now=1061) is None  # expired
    assert not check_file(KEY, "ab/cd", "not-a-number", "sig") and not check_file(KEY, "ab/cd", "99999999999", None)


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://shop.example.com", True), ("https://SHOP.example.com:443", True), ("https://a.b.example.cn", True),
    ("https://example.cn", False), ("http://shop.example.com", False), ("https://shop.example.com.evil.io", False),
    ("https://evilexample.cn", False), ("null", False), ("", False), ("javascript:alert(1)", False),
    ("https://shop.example.com:8443", False), ("file:///etc/passwd", False)])
def test_origin_matching(origin, allowed):
    assert origin_allowed(origin, ["https://shop.example.com", "https://*.example.cn"]) is allowed


@pytest.mark.parametrize("bad", ["shop.example.com", "https://shop.example.com/path", "ftp://x.com", "https://",
                                 "https://user@x.com", "https://x.com:99999", "https://ex ample.com"])
def test_bad_origins_in_settings_are_refused_with_the_reason(bad):
    with pytest.raises(ValueError):
        normalize_origin(bad)
    with pytest.raises(ValueError):
        WebSettings.model_validate({"allowed_origins": [bad]})


async def test_inbox_api_names_the_bad_setting(client, admin_headers):
    r = await client.post("/api/v1/inboxes", headers=admin_headers, json={
        "name": "Site", "channel_type": "web", "settings": {"allowed_origins": ["shop.example.com"]}})
    assert r.status == 400 and "allowed_origins" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/inboxes", headers=admin_headers, json={
        "name": "Site", "channel_type": "web", "settings": {"color": "red"}})
    assert r.status == 400 and "color" in (await r.json())["error"]["message"]
    r = await client.post("/api/v1/inboxes", headers=admin_headers, json={"name": "Site", "channel_type": "web"})
    created = await r.json()
    assert r.status == 201 and len(created["secrets"]["hmac_secret"]) >= 32 and created["secrets"]["token_key"]


async def test_junk_frames_are_ignored_and_bad_messages_get_an_error_frame(visitor: Visitor, client):
    await visitor.session()
    ws = await client.ws_connect(f"/chat/{visitor.inbox.id}/ws")
    await ws.send_json({"type": "auth", "token": visitor.token})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    for junk in ("not json", "[]", "42", json.dumps({"type": None}), json.dumps({"type": "read", "upto": "x"})):
        await ws.send_str(junk)
    await ws.send_bytes(b"\x00\x01")
    await ws.send_json({"type": "message", "client_id": "x", "text": "short client id"})
    await ws.send_json({"type": "message", "client_id": "ok-client-1", "text": {"not": "text"}})
    await ws.send_json({"type": "message", "client_id": "ok-client-2", "text": ""})
    await ws.send_json({"type": "ping"})
    codes = []
    while True:
        frame = await ws.receive_json(timeout=5)
        if frame["type"] == "error":
            codes.append(frame["code"])
        if frame["type"] == "pong":
            break
    assert codes == ["invalid_request", "invalid_request", "empty_message"]
    await ws.close()


async def test_a_socket_that_never_authenticates_is_closed(client, web_inbox):
    ws = await client.ws_connect(f"/chat/{web_inbox.id}/ws")
    await ws.send_str("hello?")
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.CLOSE and msg.data == 4401


async def test_unknown_or_other_channel_inboxes_are_404(client, ctx):
    from tests.conftest import make_inbox

    api = await make_inbox(ctx)
    for path in (f"/chat/{api.id}", f"/chat/{api.id}/config", "/chat/999999/widget"):
        assert (await client.get(path)).status == 404
    r = await client.post(f"/chat/{api.id}/session", json={})
    assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_inbox"
