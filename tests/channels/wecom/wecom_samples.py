"""The shared WeCom fixtures, and callbacks encrypted exactly as WeCom's servers do."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

from wechatpy.enterprise.crypto import PrpCrypto
from wechatpy.utils import WeChatSigner

from scrm.domain import WebhookRequest

SHARED = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "wecom"
if not SHARED.exists():  # the checkout may live elsewhere; /work/shared is the canonical place
    SHARED = Path("/work/shared/fixtures/wecom")

CORP_ID = "ww1234567890abcdef"
OTHER_CORP = "ww9999999999999999"
TOKEN = "wecom-callback-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SECRET = "kf-app-secret-0123456789"
CONTACTS_SECRET = "contacts-secret-0123456789"
OPEN_KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
NONCE = "1597212914"


def sample(name: str) -> Any:
    """A shared fixture: JSON parsed, XML as text."""
    path = SHARED / name
    return json.loads(path.read_text("utf-8")) if name.endswith(".json") else path.read_text("utf-8")


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def encrypt(xml: str, *, corp_id: str = CORP_ID, key: str = AES_KEY) -> str:
    return PrpCrypto(base64.b64decode(key + "=")).encrypt(xml, corp_id).decode()


def callback_query(encrypted: str, *, token: str = TOKEN, ts: int | None = None) -> dict[str, str]:
    ts_s = str(ts if ts is not None else int(time.time()))
    nonce = str(secrets.randbelow(10**10))  # a fresh nonce per callback, as WeCom's servers send
    return {"msg_signature": sign(token, ts_s, nonce, encrypted), "timestamp": ts_s, "nonce": nonce}


def envelope(xml: str, *, corp_id: str = CORP_ID, key: str = AES_KEY, token: str = TOKEN,
             ts: int | None = None) -> tuple[dict[str, str], bytes]:
    """(query, body) of an encrypted POST callback carrying `xml`."""
    encrypted = encrypt(xml, corp_id=corp_id, key=key)
    body = (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
            "<AgentID><![CDATA[3010151]]></AgentID></xml>").encode()
    return callback_query(encrypted, token=token, ts=ts), body


def post_request(xml: str, **kw: Any) -> WebhookRequest:
    query, body = envelope(xml, **kw)
    return WebhookRequest(method="POST", path="/webhooks/wecom/1", query=query, headers={}, body=body)


def kf_event_xml(token: str = "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR", open_kfid: str | None = OPEN_KFID,
                 corp_id: str = CORP_ID) -> str:
    kfid = f"<OpenKfId><![CDATA[{open_kfid}]]></OpenKfId>" if open_kfid else ""
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token>{kfid}</xml>")


def text_item(msgid: str, customer: str, content: str, *, open_kfid: str = OPEN_KFID, origin: int = 3,
              menu_id: str | None = None, servicer: str | None = None) -> dict[str, Any]:
    """A sync_msg item in the live shape (real capture: origin, send_time, no servicer unless origin 5)."""
    item: dict[str, Any] = {"msgid": msgid, "open_kfid": open_kfid, "external_userid": customer,
                            "send_time": int(time.time()), "origin": origin, "msgtype": "text",
                            "text": {"content": content}}
    if menu_id:
        item["text"]["menu_id"] = menu_id
    if servicer:
        item["servicer_userid"] = servicer
    return item


def event_item(msgid: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"msgid": msgid, "send_time": int(time.time()), "origin": 4, "msgtype": "event", "event": event}
