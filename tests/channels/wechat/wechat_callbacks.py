"""Build signed / encrypted callbacks exactly as WeChat's servers do."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.utils import WeChatSigner

from scrm.domain import WebhookRequest

SHARED = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "wechat"
if not SHARED.exists():  # the checkout may live elsewhere; /work/shared is the canonical place
    SHARED = Path("/work/shared/fixtures/wechat")
OWN = Path(__file__).resolve().parent / "fixtures"

TOKEN = "callback-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
NONCE = "1320562132"  # URL verification; callbacks get a fresh nonce each, as WeChat's servers send


def fresh_nonce() -> str:
    return str(secrets.randbelow(10**10))


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def get_request(echostr: str = "echo-123", *, token: str = TOKEN, ts: int | None = None) -> WebhookRequest:
    ts_s = str(ts if ts is not None else int(time.time()))
    query = {"signature": sign(token, ts_s, NONCE), "timestamp": ts_s, "nonce": NONCE, "echostr": echostr}
    return WebhookRequest(method="GET", path="/webhooks/wechat/1", query=query, headers={}, body=b"")


def plain_request(
    body: bytes | str, *, token: str = TOKEN, ts: int | None = None, signature: str | None = None
) -> WebhookRequest:
    ts_s = str(ts if ts is not None else int(time.time()))
    nonce = fresh_nonce()
    query = {
        "signature": signature or sign(token, ts_s, nonce),
        "timestamp": ts_s,
        "nonce": nonce,
        "openid": "fromUser",
    }
    data = body.encode("utf-8") if isinstance(body, str) else body
    return WebhookRequest(method="POST", path="/webhooks/wechat/1", query=query, headers={}, body=data)


def encrypt(xml: str | bytes, *, app_id: str, key: str = AES_KEY) -> str:
    raw_key = base64.b64decode(key + "=")
    return PrpCrypto(raw_key).encrypt(xml, app_id).decode()


def encrypted_request(
    xml: str,
    *,
    app_id: str,
    key: str = AES_KEY,
    token: str = TOKEN,
    compatible: bool = False,
    ts: int | None = None,
    encrypted: str | None = None,
    msg_signature: str | None = None,
) -> WebhookRequest:
    """Safe mode: only <Encrypt>; compatible mode: the plaintext fields too (ignored by us)."""
    ts_s = str(ts if ts is not None else int(time.time()))
    enc = encrypted if encrypted is not None else encrypt(xml, app_id=app_id, key=key)
    inner = xml.strip()[len("<xml>"):-len("</xml>")] if compatible else "<ToUserName><![CDATA[gh_1]]></ToUserName>"
    body = f"<xml>{inner}<Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
    nonce = fresh_nonce()
    query = {
        "signature": sign(token, ts_s, nonce),
        "timestamp": ts_s,
        "nonce": nonce,
        "openid": "fromUser",
        "encrypt_type": "aes",
        "msg_signature": msg_signature or sign(token, ts_s, nonce, enc),
    }
    return WebhookRequest(
        method="POST", path="/webhooks/wechat/1", query=query, headers={}, body=body.encode("utf-8")
    )


def decrypt_reply(body: bytes, *, app_id: str, key: str = AES_KEY, token: str = TOKEN) -> str:
    """Open our encrypted passive reply as WeChat would (checks its MsgSignature)."""
    import xmltodict

    envelope = xmltodict.parse(body)["xml"]
    crypto = WeChatCrypto(token, key, app_id)
    return str(
        crypto.decrypt_message(body, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"])
    )


def text_xml(content: str = "你好，我想咨询订单", msg_id: str = "6200000000000000001", sender: str = "oUser1") -> str:
    return (
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>"
        f"<FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
