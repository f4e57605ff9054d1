"""HMAC-SHA256 request signing shared by the HTTP API channel (inbound and outbound)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "X-SCRM-Signature"
TIMESTAMP_HEADER = "X-SCRM-Timestamp"
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "1_0", " 10", "١٠"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers to send with a signed body."""
    ts = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, tolerance: float,
           now: float | None = None) -> str | None:
    """Return None when valid, else the reason it is not (constant-time comparison)."""
    if not timestamp or not signature:
        return "missing signature or timestamp header"
    if not _UNIX_SECONDS.fullmatch(timestamp):
        return "timestamp is not a unix time"
    current = now if now is not None else time.time()
    if abs(current - int(timestamp)) > tolerance:
        return "stale timestamp"
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a mismatch).
    given = signature.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), given):
        return "signature mismatch"
    return None
