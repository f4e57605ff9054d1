"""Property-based fuzzing (Hypothesis) of the WeCom callbacks and the web chat's visitor endpoints, as
tests/core/test_webhook_fuzz.py does for the other webhooks, with its driver (tests/core/fuzzing.py): whatever arrives, the answer is never a 5xx,
and nothing is stored unless the answer is a 2xx.

WeCom: correctly encrypted and signed callbacks (so the code after decryption is reached) whose XML fields
are hostile, next to forged, stale, garbled or misaddressed ones, for both WeCom inbox types.
Web chat: the widget API (session, messages, read, pre-chat form, transcript, history, files, config) with
hostile JSON, tokens, origins and ids; uploads with hostile multipart bodies; and the WebSocket: the
handshake (origin, path) and hostile frames after it, after which the socket must still answer a ping.
Examples per endpoint are bounded for CI (SCRM_FUZZ_EXAMPLES, default 40).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import strategies as st

from scrm.services.wecom import contacts as wecom_contacts
from scrm.services.wecom.kf_sync import wait_pulls
from tests.channels.wecom.fake_wecom_api import serving
from tests.channels.wecom.wecom_samples import (
    CORP_ID,
    OTHER_CORP,
    TOKEN,
    callback_query,
    encrypt,
    envelope,
    sign,
)
from tests.core.fuzzing import (
    EXAMPLES,
    dumps,
    free_text,
    fuzz_endpoint,
    garbage,
    hostile_str,
    json_value,
    numbers,
    run_examples,
    scalar,
    stored_counts,
    xml_escape,
    xml_text,
)
from tests.integration.wecom_helpers import contacts_inbox, kf_inbox
from tests.web.webchat_helpers import make_web_inbox

SITE = "https://shop.example.com"


def _xml(fields: dict[str, Any]) -> str:
    return "<xml>" + "".join(f"<{k}>{xml_escape(v)}</{k}>" for k, v in fields.items()) + "</xml>"


# --- WeCom --------------------------------------------------------------------------------------------------
wecom_value = st.one_of(xml_text, scalar, st.sampled_from(["9" * 400, "١٧٠٠٠٠٠٠٠٠", "²", "-1", "0", ""]))
KF_EVENTS = ["kf_msg_or_event", "kf_account_auth_change", "enter_session", "x", ""]
CONTACT_CHANGES = ["add_external_contact", "edit_external_contact", "add_half_external_contact",
                   "del_external_contact", "del_follow_user", "transfer_fail", "x"]


@st.composite
def wecom_fields(draw: Callable[..., Any]) -> dict[str, Any]:
    event = draw(st.sampled_from(["kf_msg_or_event", "kf_account_auth_change", "change_external_contact",
                                  "change_external_tag", "x"]))
    fields: dict[str, Any] = {"ToUserName": CORP_ID, "CreateTime": draw(st.one_of(st.just(int(time.time())),
                                                                                   wecom_value)),
                              "MsgType": "event", "Event": event}
    for name in draw(st.lists(st.sampled_from(["Token", "OpenKfId", "AuthAddOpenKfId", "AuthDelOpenKfId",
                                               "ChangeType", "UserID", "ExternalUserID", "State", "WelcomeCode",
                                               "FailReason", "TimeStamp", "Id", "TagType"]), max_size=6,
                              unique=True)):
        fields[name] = draw(wecom_value)
    if event == "change_external_contact" or draw(st.booleans()):
        fields["Event"] = "change_external_contact"
        fields["ChangeType"] = draw(st.sampled_from(CONTACT_CHANGES))
        fields.setdefault("ExternalUserID", draw(st.one_of(xml_text, st.just("wmEXT123"))))
    return fields


@st.composite
def wecom_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    """A drawn plan; the callback is encrypted when sent ("make"), as encryption uses random padding."""
    valid = draw(st.booleans())  # encrypted for us, signed and fresh: only the decrypted XML is hostile
    plain = _xml(draw(wecom_fields())) if draw(st.integers(0, 5)) else draw(st.one_of(
        st.just("<xml/>"), st.just("not xml"), st.just("<!DOCTYPE x [<!ENTITY a 'b'>]><xml>&a;</xml>"),
        st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
    corp = CORP_ID if valid else draw(st.sampled_from([CORP_ID, OTHER_CORP]))
    cipher = "ok" if valid else draw(st.sampled_from(["ok", "ok", "cut", "hostile", "@@@", ""]))
    hostile_cipher = draw(hostile_str.map(xml_escape))
    stamp = "now" if valid else draw(st.sampled_from(["now", "now", "9" * 400, "x", "", "-1", "١٧٠٠"]))
    signature = "ok" if valid else draw(st.sampled_from(["ok", "ok", "other"]))
    bad_signature = draw(st.text(max_size=45))
    method = "POST" if valid else draw(st.sampled_from(["POST", "POST", "GET", "PUT"]))
    body_kind = "ok" if valid else draw(st.sampled_from(["ok", "ok", "garbage"]))
    junk = draw(garbage)
    echostr = draw(st.sampled_from(["ok", "hostile", "%zz%"]))
    inbox = "{id}" if valid else draw(st.sampled_from(["{id}", "{id}", str(2**63), "9" * 30]))

    def make() -> dict[str, Any]:
        encrypted = {"ok": lambda: encrypt(plain, corp_id=corp), "cut": lambda: encrypt(plain, corp_id=corp)[:-4],
                     "hostile": lambda: hostile_cipher}.get(cipher, lambda: cipher)()
        query = callback_query(encrypted)
        if stamp != "now":
            query["timestamp"] = stamp
        signed = encrypted
        if method == "GET":  # URL verification with a hostile echostr
            query["echostr"] = signed = {"ok": encrypted, "hostile": hostile_cipher}.get(echostr, echostr)
        query["msg_signature"] = (sign(TOKEN, query["timestamp"], query["nonce"], signed) if signature == "ok"
                                  else bad_signature)
        body = (f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
                "<AgentID>1</AgentID></xml>").encode() if body_kind == "ok" else junk
        return {"method": method, "path": f"/webhooks/{{segment}}/{inbox}", "data": body, "params": query,
                "headers": {"Content-Type": "text/xml"}}

    return {"make": make, "plan": (plain[:200], corp, cipher, stamp, signature, method, body_kind, inbox)}


@pytest.mark.parametrize("kind", ["wecom_kf", "wecom_contacts"])
async def test_wecom_callback_fuzz(client, ctx, kind):
    async with serving() as fake:
        inbox = await (kf_inbox(ctx, fake) if kind == "wecom_kf" else contacts_inbox(ctx, fake))
        segment = "wecom" if kind == "wecom_kf" else "wecom-contacts"

        async def settle() -> None:
            await wait_pulls(ctx)
            await wecom_contacts.wait_background(ctx)
            await ctx.bus.drain(5)

        seen = await fuzz_endpoint(client, ctx, wecom_requests(), EXAMPLES,
                          lambda s: s.replace("{segment}", segment).replace("{id}", str(inbox.id)), settle=settle)
        await settle()
    assert 200 in seen


# --- web chat: the widget API -------------------------------------------------------------------------------
client_id = st.one_of(st.text(st.sampled_from("abcXYZ019_-"), min_size=8, max_size=20), hostile_str, numbers)
origin = st.one_of(st.just(SITE), st.just(SITE), st.none(),
                   st.sampled_from(["null", "http://[", "https://evil.example", "http://a:99999", "javascript:x",
                                    "https://shop.example.com:bad", "https://é.example", "http://[::1"]),
                   st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_categories=("Cc",)),
                           max_size=30))
token_header = st.one_of(st.just("{token}"), st.just("{token}"), st.just("{token}x"), st.just(""),
                         st.sampled_from(["v1.e30.x", "v1..", "v1.é.é", "v1." + "A" * 2000 + ".x"]),
                         st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_categories=("Cc",)),
                                 max_size=40))
message_body = st.one_of(
    st.fixed_dictionaries({"client_id": client_id}, optional={"text": st.one_of(free_text, scalar), "choice": scalar,
                                                              "source": scalar, "lang": scalar}),
    st.fixed_dictionaries({"client_id": st.text(st.sampled_from("abcdef0123"), min_size=8, max_size=12),
                           "text": free_text.filter(lambda t: t.strip() != "")}),
    json_value)
session_body = st.fixed_dictionaries({}, optional={
    "identifier": scalar, "identifier_hash": st.one_of(scalar, st.just("é" * 64)), "token": st.one_of(
        scalar, st.just("{token}"), st.just("v1.é.é")), "name": scalar, "email": scalar, "phone": scalar,
    "attributes": st.one_of(st.dictionaries(hostile_str, scalar, max_size=3), scalar), "mode": st.sampled_from(
        ["page", "widget", None])})
form_body = st.fixed_dictionaries({"fields": st.one_of(st.dictionaries(
    st.sampled_from(["name", "email", "phone", "x", "\u0000"]), st.one_of(free_text, scalar), max_size=3), scalar)},
    optional={"offline": scalar, "source": scalar, "lang": scalar})
id_value = st.one_of(st.integers(min_value=-5, max_value=2**70), st.sampled_from(["x", "", "1e3", "٣", "9" * 400]))


def _json_body(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(strategy.map(dumps), strategy.map(dumps), strategy.map(dumps), garbage)


@st.composite
def widget_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    endpoint = draw(st.sampled_from(["session", "messages", "messages", "read", "prechat", "transcript", "history",
                                     "file", "config", "page"]))
    inbox = draw(st.sampled_from(["{id}"] * 6 + [str(2**63), "9" * 40, "0"]))
    headers = {"Content-Type": "application/json", "X-Scrm-Visitor": draw(token_header)}
    if (o := draw(origin)) is not None:
        headers["Origin"] = o
    base = f"/chat/{inbox}"
    if endpoint == "session":
        return {"path": f"{base}/session", "data": draw(_json_body(session_body)), "headers": headers}
    if endpoint == "messages":
        return {"path": f"{base}/messages", "data": draw(_json_body(message_body)), "headers": headers}
    if endpoint == "read":
        body = st.fixed_dictionaries({"upto": st.one_of(numbers, scalar, st.integers(1, 10**6))})
        return {"path": f"{base}/read", "data": draw(_json_body(body)), "headers": headers}
    if endpoint == "prechat":
        return {"path": f"{base}/prechat", "data": draw(_json_body(form_body)), "headers": headers}
    if endpoint == "transcript":
        body = st.fixed_dictionaries({"email": st.one_of(scalar, st.just("a@b.cn"))}, optional={"lang": scalar})
        return {"path": f"{base}/transcript", "data": draw(_json_body(body)), "headers": headers}
    if endpoint == "history":
        params = {name: str(draw(id_value)) for name in draw(st.lists(st.sampled_from(["after", "before"]), max_size=2))}
        return {"method": "GET", "path": f"{base}/messages", "params": params, "headers": headers}
    if endpoint == "file":
        key = draw(st.sampled_from(["x.png", "../../etc/passwd", "a/b", "%00", "é.png", "x" * 300]))
        params = {"e": str(draw(id_value)), "s": draw(st.one_of(st.text(max_size=40), st.just("é" * 32)))}
        return {"method": "GET", "path": f"{base}/files/{key}", "params": params, "headers": headers}
    if endpoint == "config":
        return {"method": draw(st.sampled_from(["GET", "OPTIONS"])), "path": f"{base}/config", "headers": headers,
                "params": {"lang": draw(st.sampled_from(["zh", "en", "é", ""]))}}
    return {"method": "GET", "path": draw(st.sampled_from([base, f"{base}/widget", f"{base}/qr.svg"])),
            "params": {"lang": draw(st.sampled_from(["zh", "x"])), "source": draw(hostile_str.map(xml_escape))},
            "headers": headers}


async def _web_inbox_and_token(client: Any, ctx: Any, **settings: Any) -> tuple[Any, str]:
    inbox = await make_web_inbox(ctx, [SITE], prechat_fields=[{"name": "name"}, {"name": "email"}],
                                 prechat_enabled=True, **settings)
    resp = await client.post(f"/chat/{inbox.id}/session", json={}, headers={"Origin": SITE})
    assert resp.status == 200, await resp.text()
    return inbox, (await resp.json())["token"]


async def test_web_chat_widget_api_fuzz(client, ctx):
    inbox, token = await _web_inbox_and_token(client, ctx, messages_per_minute=10_000,
                                              messages_per_minute_per_ip=10_000, sessions_per_minute_per_ip=10_000)
    await fuzz_endpoint(client, ctx, widget_requests(), EXAMPLES * 3,
               lambda s: s.replace("{id}", str(inbox.id)).replace("{token}", token))


# --- web chat: uploads --------------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
filename = st.one_of(st.sampled_from(["a.png", "../../x.png", "a.html", "", "é.png", "a\u0000.png", "%2e%2e/a.png",
                                      "x" * 400 + ".png", "a.exe"]), hostile_str.map(xml_escape))


@st.composite
def upload_requests(draw: Callable[..., Any]) -> dict[str, Any]:
    valid = draw(st.booleans())  # a well-formed upload of a PNG by the visitor: only names and fields are hostile
    boundary = "b0undary" if valid else draw(st.sampled_from(["b0undary", "", "x" * 80, "é"]))
    parts = []
    if valid or draw(st.integers(0, 4)):
        content = PNG if valid else draw(st.one_of(st.just(PNG), st.binary(max_size=200),
                                                   st.just(b"<html>hi</html>")))
        name = (draw(st.sampled_from(["a.png", "../../x.png", "é.png", "%2e%2e/a.png", "x" * 400 + ".png", "", "a"]))
                if valid else draw(filename).replace('"', ""))
        ctype = "image/png" if valid else draw(st.sampled_from(["image/png", "text/html", "", "application/octet-stream"]))
        parts.append(f'Content-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'
                     .encode("utf-8", "surrogatepass") + content)
    cid = draw(st.one_of(st.text(st.sampled_from("abcdef0123"), min_size=8, max_size=12),
                         *([] if valid else [hostile_str])))
    parts.append(b'Content-Disposition: form-data; name="client_id"\r\n\r\n' + cid.encode("utf-8", "surrogatepass"))
    for field in draw(st.lists(st.sampled_from(["text", "lang", "source", "other"]), max_size=2)):
        parts.append(f'Content-Disposition: form-data; name="{field}"\r\n\r\n'.encode()
                     + draw(hostile_str).encode("utf-8", "surrogatepass"))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    if not valid:
        body = draw(st.one_of(st.just(body), st.just(body[: len(body) // 2]), garbage))
    ctype = f"multipart/form-data; boundary={boundary}" if valid else draw(st.sampled_from([
        f"multipart/form-data; boundary={boundary}", "multipart/form-data", "multipart/mixed; boundary=b0undary",
        "application/json", "text/plain"]))
    token = "{token}" if valid else draw(st.sampled_from(["{token}", "bad"]))
    return {"path": "/chat/{id}/upload", "data": body,
            "headers": {"Content-Type": ctype, "X-Scrm-Visitor": token, "Origin": SITE}}


async def test_web_chat_upload_fuzz(client, ctx):
    inbox, token = await _web_inbox_and_token(client, ctx, messages_per_minute=10_000,
                                              messages_per_minute_per_ip=10_000)
    await fuzz_endpoint(client, ctx, upload_requests(), EXAMPLES,
               lambda s: s.replace("{id}", str(inbox.id)).replace("{token}", token))


# --- web chat: the WebSocket --------------------------------------------------------------------------------
ws_frame = st.one_of(
    st.fixed_dictionaries({"type": st.just("message"), "client_id": client_id},
                          optional={"text": st.one_of(free_text, scalar), "choice": scalar}),
    st.fixed_dictionaries({"type": st.just("read"), "upto": st.one_of(numbers, st.integers(1, 100))}),
    st.fixed_dictionaries({"type": st.sampled_from(["typing", "sync", "ping", "x", None])}),
    json_value)


@st.composite
def ws_sessions(draw: Callable[..., Any]) -> dict[str, Any]:
    auth = draw(st.one_of(
        st.fixed_dictionaries({"type": st.just("auth"), "token": st.just("{token}")},
                              optional={"after": st.one_of(numbers, st.integers(0, 100))}),
        st.fixed_dictionaries({"type": st.just("auth"), "token": st.one_of(scalar, st.just("v1.é.é"))}),
        json_value))
    frames = [dumps(f).decode() for f in draw(st.lists(ws_frame, max_size=4))]
    frames += draw(st.lists(st.sampled_from(["{", "", "null", "[1]", '"x"', "\ud800"]), max_size=1))
    return {"inbox": draw(st.sampled_from(["{id}"] * 5 + [str(2**63), "9" * 40])),
            "origin": draw(origin), "auth": dumps(auth).decode(), "frames": frames}


async def test_web_chat_websocket_fuzz(client, ctx):
    inbox, token = await _web_inbox_and_token(client, ctx, messages_per_minute=10_000,
                                              messages_per_minute_per_ip=10_000)
    outcomes: list[str] = []

    def fill(s: str) -> str:
        return s.replace("{id}", str(inbox.id)).replace("{token}", token)

    async def one(case: dict[str, Any]) -> None:
        before = await stored_counts(ctx)
        headers = {"Origin": case["origin"]} if case["origin"] is not None else {}
        try:
            ws = await client.ws_connect(f"/chat/{fill(case['inbox'])}/ws", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:  # refused before the upgrade: a clear 4xx
            assert exc.status < 500, f"handshake answered {exc.status} for {case!r}"
            assert await stored_counts(ctx) == before
            outcomes.append(f"refused {exc.status}")
            return
        try:
            with contextlib.suppress(ConnectionError, RuntimeError):  # the server may have closed already
                await ws.send_str(fill(case["auth"]))
                for frame in case["frames"]:
                    await ws.send_str(frame.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
                await ws.send_str(json.dumps({"type": "ping"}))
            while True:  # the socket still serves after whatever came before: it answers the ping
                msg = await ws.receive(timeout=10)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    assert ws.close_code in (4401, 4403), f"closed {ws.close_code} for {case!r}"
                    outcomes.append(f"closed {ws.close_code}")
                    return
                if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == "pong":
                    outcomes.append("served")
                    return
        finally:
            await ws.close()

    await run_examples(ws_sessions(), EXAMPLES, one)
    assert "served" in outcomes, sorted(set(outcomes))


# --- what the fuzzing found, kept as plain examples ---------------------------------------------------------
async def test_web_chat_hostile_examples_get_clear_4xx(client, ctx):
    inbox, token = await _web_inbox_and_token(client, ctx)
    base = f"/chat/{inbox.id}"
    ok_headers = {"X-Scrm-Visitor": token, "Origin": SITE}

    async def status(method: str, path: str, **kw: Any) -> tuple[int, str]:
        resp = await client.request(method, path, **kw)
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, (body.get("error") or {}).get("code", "")

    # Tokens, hashes and file signatures with non-ASCII characters are wrong, not a crash (compare_digest).
    assert await status("POST", f"{base}/messages", json={"client_id": "abcdefgh", "text": "hi"},
                        headers={"X-Scrm-Visitor": "v1.é.é", "Origin": SITE}) == (401, "bad_visitor_token")
    assert await status("POST", f"{base}/session", data=b'{"token": "v1.\\ud800.x"}',
                        headers={"Origin": SITE}) == (400, "malformed_json")  # a lone surrogate stores nowhere
    assert await status("POST", f"{base}/session", json={"identifier": "u1", "identifier_hash": "é" * 64},
                        headers={"Origin": SITE}) == (401, "bad_identity")
    assert (await status("GET", f"{base}/files/x.png", params={"e": "99999999999", "s": "é" * 32}))[0] == 403
    # An Origin that is not a URL is an origin that is not allowed.
    assert await status("POST", f"{base}/messages", json={"client_id": "abcdefgh", "text": "hi"},
                        headers={"X-Scrm-Visitor": token, "Origin": "http://["}) == (403, "origin_not_allowed")
    # Bodies: nested past any use, message ids past BIGINT or true, inbox ids past BIGINT.
    deep = b'{"client_id": "abcdefgh", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert await status("POST", f"{base}/messages", data=deep, headers=ok_headers) == (400, "malformed_json")
    for upto in (2**70, True, -1):
        assert await status("POST", f"{base}/read", json={"upto": upto}, headers=ok_headers) == (400, "invalid_request")
    assert await status("GET", f"/chat/{2**63}/config") == (404, "unknown_inbox")
    # Uploads whose multipart is broken: a boundary over 70 characters, a NUL in a part's header.
    for boundary, name in (("x" * 80, "a.png"), ("b0undary", "a\x00.png")):
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + PNG + f"\r\n--{boundary}--\r\n".encode()
        assert await status("POST", f"{base}/upload", data=body, headers={
            **ok_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}) == (400, "bad_upload")
    # A picture with a client id the message would refuse is not kept either.
    files = sorted(p for p in ctx.storage.root.rglob("*") if p.is_file()) if ctx.storage.root.exists() else []
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="client_id"\r\n\r\nbad id!\r\n'
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--b0undary--\r\n")
    assert await status("POST", f"{base}/upload", data=body, headers={
        **ok_headers, "Content-Type": "multipart/form-data; boundary=b0undary"}) == (400, "invalid_request")
    assert (sorted(p for p in ctx.storage.root.rglob("*") if p.is_file()) if ctx.storage.root.exists() else []) == files
    # Nothing of it was stored; a proper message still is.
    before = await stored_counts(ctx)
    assert (await status("POST", f"{base}/messages", json={"client_id": "abcdefgh", "text": "你好"},
                         headers=ok_headers))[0] == 201
    assert (await stored_counts(ctx))[0] == before[0] + 1


async def test_web_chat_socket_survives_hostile_frames(client, ctx):
    inbox, token = await _web_inbox_and_token(client, ctx)
    async with client.ws_connect(f"/chat/{inbox.id}/ws", headers={"Origin": SITE}) as ws:
        await ws.send_str(json.dumps({"type": "auth", "token": token, "after": 2**70}))
        await ws.send_str(json.dumps({"type": "message", "client_id": "abcdefgh", "text": "在吗"}))
        for frame in ({"type": "read", "upto": 2**70}, {"type": "read", "upto": True}, "[" * 5000 + "]" * 5000,
                      {"type": "message", "client_id": "abcdefgi", "text": "a\u0000b"}, {"type": "ping"}):
            await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        kinds = []
        while "pong" not in kinds:
            kinds.append(json.loads((await ws.receive(timeout=10)).data)["type"])
    assert "ack" in kinds and "error" not in kinds, kinds


async def test_wecom_contacts_callback_with_a_time_that_is_not_one(client, ctx):
    async with serving() as fake:
        inbox = await contacts_inbox(ctx, fake)
        for created in ("²", "253402300800", "9" * 400):
            xml = _xml({"ToUserName": CORP_ID, "CreateTime": created, "MsgType": "event",
                        "Event": "change_external_contact", "ChangeType": "edit_external_contact",
                        "UserID": "zhangsan", "ExternalUserID": "wmEXT-time"})
            query, body = envelope(xml)
            resp = await client.post(f"/webhooks/wecom-contacts/{inbox.id}", params=query, data=body,
                                     headers={"Content-Type": "text/xml"})
            assert resp.status == 200, (created, await resp.text())
        await wecom_contacts.wait_background(ctx)
