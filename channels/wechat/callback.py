"""Opening a WeChat callback: signature, timestamp window, safe XML parsing and AES decryption.

Everything here raises WebhookError (403 for authentication, 400 for malformed input) so the
adapter never hands anything unauthenticated or malformed to the ingest sink.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from xml.parsers import expat

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import WeChatSigner

from scrm.domain import WebhookError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # real callbacks are a few KB; anything bigger is not WeChat
REQUIRED_FIELDS = ("ToUserName", "FromUserName", "CreateTime", "MsgType")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9_.\-]+)[\"']", re.IGNORECASE)
_GB_ENCODINGS = {"gbk", "gb2312", "gb18030", "cp936"}
CallbackMode = Literal["plaintext", "compatible", "safe"]


@dataclass(frozen=True)
class Callback:
    """An authenticated callback: its fields, the plaintext XML and how to answer it."""

    fields: Mapping[str, Any]
    xml: str
    crypto: WeChatCrypto | None  # set when the request was encrypted: the reply must be too
    nonce: str


def signature(*parts: str) -> str:
    """WeChat's SHA-1 over the sorted parts (token, timestamp, nonce[, encrypt])."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def check_timestamp(timestamp: str | None, window: float, now: float) -> None:
    """Refuse replays: the callback's timestamp must be within `window` seconds of now."""
    # ASCII digits of a plausible length: int() also takes "1_0" or "١٠", and 400 digits overflow a float.
    if not timestamp or len(timestamp) > 12 or not timestamp.isascii() or not timestamp.isdigit():
        raise WebhookError(403, "missing or invalid timestamp", code="bad_timestamp")
    ts = int(timestamp)
    if abs(now - ts) > window:
        log.warning("wechat callback refused: timestamp %s outside the %ss window", ts, window)
        raise WebhookError(403, "timestamp outside the accepted window", code="stale_timestamp")


def check_plain_signature(token: str, query: Mapping[str, str]) -> None:
    """Verify `signature` = sha1(sorted(token, timestamp, nonce)); 403 otherwise."""
    given = query.get("signature", "")
    expected = signature(token, query.get("timestamp", ""), query.get("nonce", ""))
    if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        log.warning("wechat callback refused: bad signature")
        raise WebhookError(403, "invalid signature", code="bad_signature")


def decode_xml(body: bytes) -> str:
    """Bytes -> text (UTF-8, or GBK/GB18030 when declared), declaration removed; 400 otherwise."""
    if not body.strip():
        raise WebhookError(400, "empty body", code="bad_xml")
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(400, f"body larger than {MAX_BODY_BYTES} bytes", code="too_large")
    match = _ENCODING.match(body)
    encoding = match.group(1).decode().lower() if match else "utf-8"
    codec = "gb18030" if encoding in _GB_ENCODINGS else "utf-8-sig"
    try:
        text = body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise WebhookError(400, f"body is not valid {encoding}", code="bad_xml") from None
    return _DECLARATION.sub("", text, count=1)


class _Forbidden(Exception):
    pass


def _forbid(*_args: Any) -> NoReturn:
    raise _Forbidden


def parse_xml(text: str) -> dict[str, Any]:
    """Parse a callback document; DTDs / entities (billion laughs, XXE) and non-XML -> 400."""
    data = text.encode("utf-8")
    # A first expat pass only to refuse any DOCTYPE before entities could ever be expanded.
    probe = expat.ParserCreate("utf-8")
    probe.StartDoctypeDeclHandler = _forbid
    probe.EntityDeclHandler = _forbid
    probe.ExternalEntityRefHandler = _forbid
    try:
        probe.Parse(data, True)
        parsed = xmltodict.parse(data, disable_entities=True)
    except _Forbidden:
        log.warning("wechat callback refused: XML with a DOCTYPE / entity declaration")
        raise WebhookError(400, "XML document type declarations are not allowed", code="xml_dtd") from None
    except (expat.ExpatError, ValueError):
        raise WebhookError(400, "body is not well-formed XML", code="bad_xml") from None
    root = parsed.get("xml") if isinstance(parsed, dict) else None
    if not isinstance(root, dict):
        raise WebhookError(400, "expected an <xml> document", code="bad_xml")
    return root


def require_fields(fields: Mapping[str, Any]) -> None:
    """A message must name its sender, account, time and type; 400 otherwise."""
    missing = [name for name in REQUIRED_FIELDS if not isinstance(fields.get(name), str) or not fields[name]]
    if missing:
        raise WebhookError(400, f"missing fields: {', '.join(missing)}", code="missing_fields")
    try:
        int(fields["CreateTime"])
    except ValueError:
        raise WebhookError(400, "CreateTime is not a number", code="missing_fields") from None


def decrypt(
    envelope: Mapping[str, Any], query: Mapping[str, str], cryptos: Sequence[WeChatCrypto]
) -> tuple[str, WeChatCrypto]:
    """Check msg_signature over the Encrypt field and decrypt with the current, then previous key."""
    encrypted = envelope.get("Encrypt")
    if not isinstance(encrypted, str) or not encrypted:
        raise WebhookError(400, "encrypted callback without Encrypt", code="missing_fields")
    if not cryptos:
        raise WebhookError(403, "encrypted callbacks need an EncodingAESKey", code="no_aes_key")
    given = query.get("msg_signature", "")
    expected = signature(cryptos[0].token, query.get("timestamp", ""), query.get("nonce", ""), encrypted)
    if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        log.warning("wechat callback refused: bad msg_signature")
        raise WebhookError(403, "invalid msg_signature", code="bad_signature")
    wrong_app = False
    for crypto in cryptos:
        try:
            plain = crypto.decrypt_message(
                {"Encrypt": encrypted}, given, query.get("timestamp", ""), query.get("nonce", "")
            )
            return str(plain), crypto
        except InvalidSignatureException:  # pragma: no cover - checked above with the same token
            raise WebhookError(403, "invalid msg_signature", code="bad_signature") from None
        except InvalidAppIdException:
            wrong_app = True
        except Exception:  # garbage ciphertext: bad base64, padding, UTF-8, length
            continue
    if wrong_app:
        log.warning("wechat callback refused: AppID after decryption does not match")
        raise WebhookError(403, "decrypted message is for another AppID", code="wrong_app_id")
    raise WebhookError(400, "cannot decrypt the message", code="bad_ciphertext")


def open_callback(
    query: Mapping[str, str],
    body: bytes,
    *,
    token: str,
    cryptos: Sequence[WeChatCrypto],
    window: float,
    now: float,
    mode: CallbackMode = "compatible",
) -> Callback:
    """Authenticate and parse a POST callback in plaintext, compatible or safe mode.

    `mode` is the inbox's setting, never the query's `encrypt_type` (anyone can rewrite a query
    string): in safe mode a body without <Encrypt> is refused, and a body that carries <Encrypt> is
    decrypted whatever the query says. Plaintext bodies (callback.crypto is None) must still pass
    the caller's replay check: their signature does not cover the body.
    """
    encrypted = mode == "safe" or query.get("encrypt_type", "raw").lower() == "aes"
    if encrypted:
        if "signature" in query:  # WeChat sends both; the URL signature must hold as well
            check_plain_signature(token, query)
    else:
        check_plain_signature(token, query)
    check_timestamp(query.get("timestamp"), window, now)
    fields = parse_xml(decode_xml(body))
    envelope = fields.get("Encrypt")
    if not encrypted and cryptos and isinstance(envelope, str) and envelope:
        encrypted = True  # "encrypt_type=raw" on an encrypted body: a downgrade attempt, the ciphertext wins
    if mode == "safe" and not (isinstance(envelope, str) and envelope):
        log.warning("wechat callback refused: plaintext body while the inbox is in safe mode")
        raise WebhookError(403, "plaintext callbacks are refused (the inbox is in safe mode)", code="plaintext_refused")
    crypto: WeChatCrypto | None = None
    xml_text = ""
    if encrypted:
        plain, crypto = decrypt(fields, query, cryptos)
        xml_text = decode_xml(plain.encode("utf-8"))
        fields = parse_xml(xml_text)
    else:
        xml_text = decode_xml(body)
    require_fields(fields)
    return Callback(fields=fields, xml=xml_text, crypto=crypto, nonce=query.get("nonce", ""))
