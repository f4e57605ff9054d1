"""WeChat callback modes and the replay cache, over HTTP against the real app (issue 19, item 2).

With an EncodingAESKey the inbox is in safe mode unless told otherwise: a plaintext body is refused
whatever `encrypt_type` the query claims, and an encrypted body is decrypted even when the query says
`raw`. In plaintext mode a (timestamp, nonce) pair is good for one body; WeCom callbacks share the cache.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from scrm.db.models import Message
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET
from tests.channels.wechat.wechat_callbacks import (
    AES_KEY,
    TOKEN,
    encrypted_request,
    plain_request,
    sign,
    text_xml,
)
from tests.channels.wecom import wecom_samples as wc
from tests.conftest import make_inbox


async def _wechat_inbox(ctx, **settings):  # type: ignore[no-untyped-def]
    secrets = {"app_secret": APP_SECRET, "token": TOKEN}
    if settings.pop("aes", True):
        secrets["encoding_aes_key"] = AES_KEY
    return await make_inbox(ctx, "wechat_oa", name="公众号",
                            settings={"app_id": APP_ID, "api_base_url": "http://127.0.0.1:9", **settings},
                            secrets=secrets)


async def _post(client, inbox_id, request, **query):  # type: ignore[no-untyped-def]
    return await client.post(f"/webhooks/wechat/{inbox_id}", params={**request.query, **query}, data=request.body,
                             headers={"Content-Type": "text/xml"})


async def _stored(ctx) -> list[str]:  # type: ignore[no-untyped-def]
    async with ctx.db.session() as s:
        return list((await s.scalars(select(Message.text).where(Message.direction == "in").order_by(Message.id))).all())


async def test_with_an_aes_key_plaintext_is_refused_and_the_query_cannot_downgrade(client, ctx) -> None:
    inbox = await _wechat_inbox(ctx)
    for query in ({}, {"encrypt_type": "raw"}):
        resp = await _post(client, inbox.id, plain_request(text_xml("明文伪造")), **query)
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["error"]["code"] == "plaintext_refused"
    # An encrypted body is decrypted even when the query says raw (or says nothing).
    enc = encrypted_request(text_xml("加密消息", msg_id="6200000000000000002"), app_id=APP_ID)
    resp = await _post(client, inbox.id, enc, encrypt_type="raw")
    assert resp.status == 200, await resp.text()
    assert await _stored(ctx) == ["加密消息"]


async def test_compatible_mode_accepts_plaintext_only_once_per_timestamp_and_nonce(client, ctx) -> None:
    inbox = await _wechat_inbox(ctx, callback_mode="compatible")
    first = plain_request(text_xml("第一条", msg_id="6200000000000000011"))
    assert (await _post(client, inbox.id, first)).status == 200
    # The platform retrying (same query, same body) is fine, and stored once.
    assert (await _post(client, inbox.id, first)).status == 200
    # Someone who saw the query sends another body under it: the signature would pass, the cache does not.
    forged = text_xml("转账给我", msg_id="6200000000000000012").encode()
    resp = await client.post(f"/webhooks/wechat/{inbox.id}", params=first.query, data=forged)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "replayed"
    assert await _stored(ctx) == ["第一条"]


async def test_plaintext_mode_without_a_key_refuses_a_replayed_pair(client, ctx) -> None:
    inbox = await _wechat_inbox(ctx, aes=False)
    ts = str(int(time.time()))
    query = {"signature": sign(TOKEN, ts, "42"), "timestamp": ts, "nonce": "42"}
    one = text_xml("你好", msg_id="6200000000000000021").encode()
    two = text_xml("再见", msg_id="6200000000000000022").encode()
    assert (await client.post(f"/webhooks/wechat/{inbox.id}", params=query, data=one)).status == 200
    assert (await client.post(f"/webhooks/wechat/{inbox.id}", params=query, data=two)).status == 403
    assert await _stored(ctx) == ["你好"]


async def test_wecom_callbacks_share_the_replay_cache(client, ctx) -> None:
    inbox = await make_inbox(ctx, "wecom_contacts", name="企业微信通讯录",
                             settings={"corp_id": wc.CORP_ID, "api_base_url": "http://127.0.0.1:9"},
                             secrets={"secret": wc.CONTACTS_SECRET, "token": wc.TOKEN, "encoding_aes_key": wc.AES_KEY})
    ts, nonce = str(int(time.time())), "777"

    def signed(xml: str) -> tuple[dict[str, str], bytes]:
        encrypted = wc.encrypt(xml)
        body = f"<xml><ToUserName><![CDATA[{wc.CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        return {"msg_signature": wc.sign(wc.TOKEN, ts, nonce, encrypted), "timestamp": ts, "nonce": nonce}, body.encode()

    event = ("<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
             "<CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unknown_{n}]]></Event></xml>")
    q1, b1 = signed(event.format(corp=wc.CORP_ID, ts=ts, n=1))
    q2, b2 = signed(event.format(corp=wc.CORP_ID, ts=ts, n=2))
    assert (await client.post(f"/webhooks/wecom-contacts/{inbox.id}", params=q1, data=b1)).status == 200
    assert (await client.post(f"/webhooks/wecom-contacts/{inbox.id}", params=q1, data=b1)).status == 200  # a retry
    resp = await client.post(f"/webhooks/wecom-contacts/{inbox.id}", params=q2, data=b2)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "replayed"
