"""Signed one-use rating links for channels without buttons or numbered replies that suit them (email).

A token is "<survey id>.<expiry, unix seconds>.<HMAC-SHA256>" signed with a secret the application
generates once and keeps in the database (so every `scrm serve` process, and a restart, agree on it).
It names the survey, so nobody can rate another one; it stops working when it expires or once the
survey is answered (one use). The page needs no login and no CSRF token: the token is the credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models_desk import DeskSetting

SECRET_KEY = "_csat_link_secret"  # a desk_settings row; not an editable settings section
MAX_TOKEN_LENGTH = 120


class LinkError(ValueError):
    """A link that cannot be used; `status` is the HTTP status the page answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LinkToken:
    survey_id: int
    expires_at: datetime


async def _stored_secret(session: AsyncSession) -> bytes | None:
    row = await session.get(DeskSetting, SECRET_KEY, populate_existing=True)
    value = (row.value or {}).get("secret") if row else None
    return bytes.fromhex(value) if isinstance(value, str) and value else None


async def signing_secret(session: AsyncSession) -> bytes:
    """The link-signing secret, created on first use (a concurrent first use keeps the winner's)."""
    found = await _stored_secret(session)
    if found is not None:
        return found
    try:
        async with session.begin_nested():
            session.add(DeskSetting(key=SECRET_KEY, value={"secret": secrets.token_hex(32)}))
    except IntegrityError:
        pass  # another process created it first
    found = await _stored_secret(session)
    assert found is not None
    return found


def _mac(secret: bytes, survey_id: int, expires: int) -> str:
    digest = hmac.new(secret, f"csat-link:{survey_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, survey_id: int, expires_at: datetime) -> str:
    """A token for one survey, valid until `expires_at`."""
    expires = int(expires_at.timestamp())
    return f"{survey_id}.{expires}.{_mac(secret, survey_id, expires)}"


def link_url(public_url: str, token: str) -> str:
    """The public page of a token (public_url is the server's external base URL)."""
    return f"{public_url.rstrip('/')}/csat/{token}"


async def verify(session: AsyncSession, token: str, now: datetime | None = None) -> LinkToken:
    """Check a token's shape, signature and expiry; raises LinkError (404 invalid, 410 expired)."""
    parts = token.split(".") if token and len(token) <= MAX_TOKEN_LENGTH else []
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 11 for p in parts[:2]):
        raise LinkError("链接无效 / This link is not valid.", 404)
    survey_id, expires = int(parts[0]), int(parts[1])
    secret = await _stored_secret(session)
    if secret is None or not hmac.compare_digest(parts[2].encode("utf-8", "surrogateescape"),
                                                   _mac(secret, survey_id, expires).encode()):
        raise LinkError("链接无效 / This link is not valid.", 404)
    expires_at = datetime.fromtimestamp(expires, UTC)
    if expires_at <= (now or datetime.now(UTC)):
        raise LinkError("评分链接已过期 / This rating link has expired.", 410)
    return LinkToken(survey_id, expires_at)
