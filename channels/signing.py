"""HMAC-SHA256 request signing shared by the HTTP API channel (inbound and outbound)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "X-SCRM-Signature"
TIMESTAMP_HEADER = "X-SCRM-Timestamp"
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "1_0", " 10", "١٠"
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers to send with a signed body."""
    ts = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}


def check(secret: str, timestamp: str | None, signature: str | None, body: bytes, tolerance: float,
          now: float | None = None) -> tuple[int, str] | None:
    """None when valid, else (HTTP status, reason): 400 for headers that are not a signature at all
    (a 400-digit or non-numeric timestamp, a signature that is not `sha256=<hex>`), 401 for a missing,
    stale or wrong one. Constant-time comparison."""
    if not timestamp or not signature:
        return 401, "missing signature or timestamp header"
    if not _UNIX_SECONDS.fullmatch(timestamp):
        return 400, f"{TIMESTAMP_HEADER} is not a unix time in seconds"
    given = signature.strip()
    if not _SIGNATURE.fullmatch(given):
        return 400, f"{SIGNATURE_HEADER} is not sha256=<64 hex digits>"
    current = now if now is not None else time.time()
    if abs(current - int(timestamp)) > tolerance:
        return 401, "stale timestamp"
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a mismatch).
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), given.lower().encode()):
        return 401, "signature mismatch"
    return None


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, tolerance: float,
           now: float | None = None) -> str | None:
    """Return None when valid, else the reason it is not (see `check`)."""
    problem = check(secret, timestamp, signature, body, tolerance, now)
    return None if problem is None else problem[1]
