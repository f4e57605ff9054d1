"""Opening a WeCom callback: msg_signature over the Encrypt text, AES decryption, the receive id check.

WeCom callbacks are always encrypted (unlike the Official Account's plaintext mode). URL
verification answers the *decrypted* echostr. The plaintext ends with the receive id, which must be
our CorpID: wechatpy.enterprise.crypto checks it (InvalidCorpIdException). Everything here raises
WebhookError: 403 for forged or misaddressed requests, 400 for malformed ones.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException

from channels.wechat.callback import check_timestamp, decode_xml, parse_xml, signature
from scrm.domain import WebhookError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeComCallback:
    """An authenticated, decrypted callback: its fields and plaintext XML."""

    fields: Mapping[str, Any]
    xml: str


def _check_signature(token: str, query: Mapping[str, str], encrypted: str) -> None:
    given = query.get("msg_signature", "")
    expected = signature(token, query.get("timestamp", ""), query.get("nonce", ""), encrypted)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("wecom callback refused: bad msg_signature")
        raise WebhookError(403, "invalid msg_signature", code="bad_signature")


def _decrypt(crypto: WeChatCrypto, encrypted: str) -> str:
    try:
        return str(PrpCrypto(crypto.key).decrypt(encrypted, crypto.corp_id))
    except InvalidCorpIdException:
        log.warning("wecom callback refused: receive id after decryption is not our CorpID")
        raise WebhookError(403, "decrypted message is for another CorpID", code="wrong_corp_id") from None
    except Exception:  # bad base64, padding, length, UTF-8
        raise WebhookError(400, "cannot decrypt the message", code="bad_ciphertext") from None


def verify_url(crypto: WeChatCrypto, query: Mapping[str, str], *, window: float, now: float) -> str:
    """URL verification (GET): check the signature over echostr and return the decrypted echostr."""
    echostr = query.get("echostr")
    if not echostr:
        raise WebhookError(400, "missing echostr", code="missing_fields")
    # aiohttp has URL-decoded the query once already; a "+" that arrived unencoded stays a "+".
    echostr = unquote(echostr) if "%" in echostr else echostr
    _check_signature(crypto.token, query, echostr)
    check_timestamp(query.get("timestamp"), window, now)
    return _decrypt(crypto, echostr)


def open_callback(
    crypto: WeChatCrypto, query: Mapping[str, str], body: bytes, *, window: float, now: float
) -> WeComCallback:
    """Authenticate, decrypt and parse a POST callback (self-built app or third-party suite envelope)."""
    envelope = parse_xml(decode_xml(body))
    encrypted = envelope.get("Encrypt")
    if not isinstance(encrypted, str) or not encrypted:
        raise WebhookError(400, "callback without Encrypt", code="missing_fields")
    _check_signature(crypto.token, query, encrypted)
    check_timestamp(query.get("timestamp"), window, now)
    xml = decode_xml(_decrypt(crypto, encrypted).encode("utf-8"))
    return WeComCallback(fields=parse_xml(xml), xml=xml)


def event_name(fields: Mapping[str, Any]) -> str:
    """The event of a callback in either envelope: `Event` (self-built app) or `InfoType` (suite)."""
    value = fields.get("Event") or fields.get("InfoType") or ""
    return value if isinstance(value, str) else ""


def text(fields: Mapping[str, Any], name: str) -> str:
    """A field's text ('' when absent or not text)."""
    value = fields.get(name)
    return value.strip() if isinstance(value, str) else ""
