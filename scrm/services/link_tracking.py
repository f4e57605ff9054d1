"""Click tracking: the links a broadcast's message contains become per-recipient short links /r/{token}.

Only URLs written in the broadcast's template are rewritten (not ones a personalization variable
filled in): each short link is a stored (broadcast, contact, url) row and the redirect goes to that
stored url, so the endpoint can never send anybody anywhere the marketer did not write.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models_campaigns import TrackedLink
from scrm.services.broadcast_rules import VAR_RE

log = logging.getLogger("scrm.links")

# http(s) URLs up to whitespace, CJK punctuation or a closing bracket/quote; a trailing . , ; : ! ? is
# sentence punctuation, not part of the link.
URL_RE = re.compile(r"https?://[^\s<>\"'()\[\]{}，。！？；：、“”‘’（）【】《》]+", re.IGNORECASE)
TRAILING = ".,;:!?"
MAX_LINKS = 20  # per message: more is a spreadsheet, not a message


def template_urls(template: str, own_base: str | None = None) -> list[str]:
    """The distinct URLs written in the template (outside {{variables}}), longest first."""
    literal = VAR_RE.sub(" ", template)
    found: list[str] = []
    for m in URL_RE.finditer(literal):
        url = m.group(0).rstrip(TRAILING)
        if own_base and url.startswith(own_base.rstrip("/") + "/"):
            continue  # our own pages (unsubscribe links) are not campaign links
        if url not in found:
            found.append(url)
    return sorted(found[:MAX_LINKS], key=len, reverse=True)


def short_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/r/{token}"


class LinkRewriter:
    """Rewrites one broadcast's template URLs for each recipient, collecting the rows to insert."""

    def __init__(self, broadcast_id: int, template: str, public_url: str | None, now: datetime) -> None:
        self.broadcast_id = broadcast_id
        self.now = now
        self.base = public_url
        self.urls = template_urls(template, public_url) if public_url else []
        if not public_url and template_urls(template):
            log.warning("broadcast %s: links are not tracked because server.public_url is not set", broadcast_id)
        self._re = re.compile("|".join(re.escape(u) for u in self.urls)) if self.urls else None

    @property
    def active(self) -> bool:
        return self._re is not None

    def rewrite(self, contact_id: int, text: str, rows: list[dict[str, Any]]) -> str:
        """`text` with each template URL replaced by this recipient's short link (rows appended to `rows`)."""
        if self._re is None:
            return text
        tokens: dict[str, str] = {}

        def sub(m: re.Match[str]) -> str:
            url = m.group(0)
            token = tokens.get(url)
            if token is None:
                token = tokens[url] = secrets.token_urlsafe(12)
                rows.append({"token": token, "broadcast_id": self.broadcast_id, "contact_id": contact_id, "url": url,
                             "clicks": 0, "first_clicked_at": None, "last_clicked_at": None, "created_at": self.now})
            assert self.base is not None
            return short_url(self.base, token)

        return self._re.sub(sub, text)

    def preview(self, text: str) -> str:
        """The text as a recipient sees it, with a placeholder token (previews and test sends store nothing)."""
        return self._re.sub(lambda m: short_url(self.base or "", "preview"), text) if self._re else text


async def record_click(session: AsyncSession, token: str, now: datetime) -> str | None:
    """Count a click on `token`; returns the stored URL to redirect to, or None for an unknown token."""
    if not token or len(token) > 32:
        return None
    url = await session.scalar(select(TrackedLink.url).where(TrackedLink.token == token))
    if url is None:
        return None
    # One UPDATE: concurrent clicks all count and the first click time is kept.
    await session.execute(update(TrackedLink).where(TrackedLink.token == token).values(
        clicks=TrackedLink.clicks + 1, last_clicked_at=now,
        first_clicked_at=case((TrackedLink.first_clicked_at.is_(None), now), else_=TrackedLink.first_clicked_at)))
    return str(url)


async def clicked_contacts(session: AsyncSession, broadcast_id: int) -> tuple[int, int]:
    """(recipients who clicked at least once, total clicks) of a broadcast."""
    row = (await session.execute(
        select(func.count(func.distinct(TrackedLink.contact_id)), func.coalesce(func.sum(TrackedLink.clicks), 0))
        .where(TrackedLink.broadcast_id == broadcast_id, TrackedLink.clicks > 0))).one()
    return int(row[0] or 0), int(row[1] or 0)

