"""Signed visitor tokens, identity validation (identifier_hash) and signed file links for web chat.

A visitor token binds one visitor (the contact identity's external id) to one inbox until it expires:
`v1.<payload>.<mac>`, payload = base64url JSON {"i": inbox, "v": visitor, "x": expiry}, mac =
HMAC-SHA256 with the inbox's `token_key`. The server keeps no session table: a token is valid while
its signature and expiry are, and every new session hands out a fresh one (rotation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

TOKEN_TTL = 30 * 24 * 3600  # a returning visitor keeps their history for a month
FILE_TTL = 24 * 3600
MAX_IDENTIFIER = 128


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bytes(text: str) -> bytes:
    """Any text a client sent as bytes: lone surrogates (JSON "\\ud800") pass instead of raising."""
    return text.encode("utf-8", "surrogatepass")


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison; as bytes, since compare_digest raises on str with non-ASCII characters."""
    return hmac.compare_digest(_bytes(expected), _bytes(given))


def _mac(key: str, data: str) -> str:
    return _b64(hmac.new(key.encode(), _bytes(data), hashlib.sha256).digest())


def new_visitor_id() -> str:
    """An anonymous visitor's id (the identity's external id on the inbox)."""
    return "v:" + secrets.token_urlsafe(16)


def identified_visitor_id(identifier: str) -> str:
    """The identity's external id of a visitor the website vouched for."""
    return "u:" + identifier


def sign_visitor(key: str, inbox_id: int, visitor: str, ttl: int = TOKEN_TTL, now: float | None = None) -> str:
    """A fresh token for `visitor` on `inbox_id`."""
    payload = _b64(json.dumps({"i": inbox_id, "v": visitor, "x": int((now or time.time()) + ttl)},
                              separators=(",", ":")).encode())
    return f"v1.{payload}.{_mac(key, payload)}"


def verify_visitor(key: str, inbox_id: int, token: str | None, now: float | None = None) -> str | None:
    """The visitor a token names, or None if it is forged, expired, malformed or for another inbox."""
    if not token or len(token) > 1024:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "v1":
        return None
    if not _same(_mac(key, parts[1]), parts[2]):
        return None
    try:
        data = json.loads(_unb64(parts[1]))
        inbox, visitor, expiry = int(data["i"]), str(data["v"]), int(data["x"])
    except (ValueError, KeyError, TypeError):
        return None
    if inbox != inbox_id or expiry < (now or time.time()) or not visitor.startswith(("v:", "u:")):
        return None
    return visitor


def identifier_hash(secret: str, identifier: str) -> str:
    """What the website computes: hex HMAC-SHA256 of the identifier with the inbox's hmac_secret."""
    return hmac.new(secret.encode(), _bytes(identifier), hashlib.sha256).hexdigest()


def check_identifier(secret: str, identifier: str, given: str | None) -> bool:
    """True when `given` is the identifier's hash (constant-time compare)."""
    if not given or not identifier or len(identifier) > MAX_IDENTIFIER:
        return False
    return _same(identifier_hash(secret, identifier), given.strip().lower())


def sign_file(key: str, storage_key: str, expiry: int) -> str:
    """The signature of a visitor's link to one stored file."""
    return _mac(key, f"file:{storage_key}:{expiry}")[:32]


def file_path(key: str, inbox_id: int, storage_key: str, now: float | None = None) -> str:
    """A link (path and query) the visitor's browser may fetch the file with until it expires."""
    expiry = int((now or time.time()) + FILE_TTL)
    expiry -= expiry % 3600  # stable for an hour: the browser caches the image instead of refetching it
    expiry += 3600
    return f"/chat/{inbox_id}/files/{storage_key}?e={expiry}&s={sign_file(key, storage_key, expiry)}"


def check_file(key: str, storage_key: str, expiry: str | None, sig: str | None, now: float | None = None) -> bool:
    """True when a file link is genuine and not expired."""
    try:
        exp = int(expiry or "")
    except ValueError:
        return False
    if exp < (now or time.time()) or not sig:
        return False
    return _same(sign_file(key, storage_key, exp), sig)


def origin_of(url: str | None) -> str | None:
    """`https://a.example.com:8443/x` -> `https://a.example.com:8443` (None when there is none)."""
    if not url or url == "null":
        return None
    try:
        parts = urlsplit(url.lower())
    except ValueError:  # "http://[" (an unclosed IPv6 bracket) and the like: no origin, not an error
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port and port != default else "")


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """True when `origin` is listed, or matches a listed `https://*.example.com` (any subdomain)."""
    norm = origin_of(origin)
    if norm is None:
        return False
    scheme, _, rest = norm.partition("://")
    for entry in allowed:
        if entry == norm:
            return True
        e_scheme, _, e_rest = entry.partition("://")
        if e_scheme == scheme and e_rest.startswith("*."):
            suffix = e_rest[1:]  # ".example.com[:port]"
            host_port = rest
            if host_port.endswith(suffix) and len(host_port) > len(suffix):
                return True
    return False
