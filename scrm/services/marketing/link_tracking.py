"""Click tracking: the links a broadcast's message contains become per-recipient short links /r/{token}.

Only URLs written in the broadcast's template are rewritten (not ones a personalization variable
filled in): each short link is a stored (broadcast, contact, url) row and the redirect goes to that
stored url, so the endpoint can never send anybody anywhere the marketer did not write.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models_campaigns import TrackedLink
from scrm.services.marketing.broadcast_rules import VAR_RE

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
        self.base = (public_url or "").rstrip("/")
        self.urls = template_urls(template, public_url) if public_url else []
        if not public_url and template_urls(template):
            log.warning("broadcast %s: links are not tracked because server.public_url is not set", broadcast_id)
        self._tokens: list[str] = []

    @property
    def active(self) -> bool:
        return bool(self.urls)

    def _token(self) -> str:
        if not self._tokens:  # drawn in bulk: one urandom call per 4096 links, not one per link
            raw = base64.urlsafe_b64encode(os.urandom(12 * 4096)).decode("ascii")
            self._tokens = [raw[i:i + 16] for i in range(0, len(raw), 16)]
        return self._tokens.pop()

    def rewrite(self, contact_id: int, text: str, rows: list[dict[str, Any]]) -> str:
        """`text` with each template URL replaced by this recipient's short link (rows appended to `rows`)."""
        for url in self.urls:  # longest first: a URL that is a prefix of another is replaced after it
            if url in text:
                token = self._token()
                text = text.replace(url, f"{self.base}/r/{token}")
                rows.append({"token": token, "broadcast_id": self.broadcast_id, "contact_id": contact_id, "url": url,
                             "clicks": 0, "first_clicked_at": None, "last_clicked_at": None, "created_at": self.now})
        return text

    def preview(self, text: str) -> str:
        """The text as a recipient sees it, with a placeholder token (previews store nothing)."""
        for url in self.urls:
            text = text.replace(url, f"{self.base}/r/preview")
        return text


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

