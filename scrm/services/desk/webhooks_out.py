"""Outgoing webhooks: integrators subscribe to events; each delivery is a logged, signed, retried POST.

An event only inserts delivery rows (after the commit that caused it); a background sender posts
them, so a slow or failing endpoint never holds up message processing. Bodies are signed like the
HTTP API channel (channels/signing.py): X-SCRM-Signature = sha256=HMAC(secret, "<ts>." + body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets as pysecrets
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from channels import signing
from scrm.db.models import utcnow
from scrm.db.models_desk import WebhookDelivery, WebhookSubscription
from scrm.events import Event
from scrm.outbound import OutboundRefused
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.webhooks_out")
EVENTS = (
    "message.created", "message.updated", "conversation.created", "conversation.status_changed",
    "conversation.assigned", "conversation.handler_changed", "contact.updated", "delivery.updated",
    "ticket.opened", "ticket.updated", "sla.warning", "sla.breached", "csat.answered",
)
MAX_ATTEMPTS = 6
BACKOFF_BASE = 10.0  # seconds; x4 per attempt: 10 s, 40 s, 160 s, ~11 min, ~43 min
BACKOFF_MAX = 3600.0
LEASE = 60.0  # a row "sending" longer than this is retried (the sender died)
TIMEOUT = 10.0
POLL = 2.0
WAKE_KEY = "desk.webhooks.wake"


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=50)
    secret: str | None = Field(None, min_length=16, max_length=128)
    active: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e != "*" and e not in EVENTS]
        if bad:
            raise ValueError(f"unknown event {bad[0]!r}; use '*' or any of {', '.join(EVENTS)}")
        return sorted(set(v))


def new_secret() -> str:
    return pysecrets.token_urlsafe(32)


_subs_cache: tuple[float, list[tuple[int, list[str]]]] | None = None
SUBS_TTL = 5.0


def invalidate_cache() -> None:
    global _subs_cache
    _subs_cache = None


async def _subscriptions(ctx: AppContext) -> list[tuple[int, list[str]]]:
    global _subs_cache
    if _subs_cache and _subs_cache[0] > time.monotonic():
        return _subs_cache[1]
    async with ctx.db.session() as s:
        rows = (await s.execute(select(WebhookSubscription.id, WebhookSubscription.events)
                                .where(WebhookSubscription.active.is_(True)))).all()
    subs = [(r.id, list(r.events or [])) for r in rows]
    _subs_cache = (time.monotonic() + SUBS_TTL, subs)
    return subs


async def wanted(ctx: AppContext, name: str) -> bool:
    """Does any active subscription want this event (cached like the subscriptions)?"""
    return name in EVENTS and any("*" in names or name in names for _, names in await _subscriptions(ctx))


async def subscribed_events(ctx: AppContext) -> frozenset[str]:
    """The events some active subscription wants (cached like the subscriptions: event_interest.py)."""
    names = {name for _, names in await _subscriptions(ctx) for name in names}
    return frozenset(EVENTS) if "*" in names else frozenset(names) & frozenset(EVENTS)


def _insert(dialect: str) -> Any:
    return pg_insert if dialect == "postgresql" else sqlite_insert


def _payload(event: Event, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data = {k: v for k, v in event.data.items() if k != "automation_chain"}
    return {"id": event.id, "event": event.name, "at": event.at, "data": data, **(extra or {})}


async def enqueue_event(ctx: AppContext, event: Event) -> int:
    """Queue a delivery for every active subscription to this event; returns how many."""
    wanted = [sid for sid, names in await _subscriptions(ctx) if "*" in names or event.name in names]
    if not wanted or event.name not in EVENTS:
        return 0
    async with ctx.db.transaction() as s:
        ins = _insert(ctx.db.dialect)
        for sid in wanted:
            await s.execute(ins(WebhookDelivery).values(
                webhook_id=sid, event_id=event.id, event=event.name, payload=_payload(event), status="queued",
                attempts=0, next_attempt_at=utcnow(), created_at=utcnow(),
            ).on_conflict_do_nothing())
    wake(ctx)
    return len(wanted)


async def enqueue_for_webhook(tx: Tx, webhook_id: int, event: Event, extra: dict[str, Any]) -> bool:
    """Automation's "call a webhook": one delivery to that endpoint, in the rule's transaction."""
    hook = await tx.session.get(WebhookSubscription, webhook_id)
    if hook is None or not hook.active:
        return False
    tx.session.add(WebhookDelivery(webhook_id=hook.id, event_id=f"{event.id}:rule{extra.get('rule_id')}",
                                   event="automation.rule", payload=_payload(event, {"automation": extra}),
                                   status="queued", attempts=0, next_attempt_at=utcnow()))
    return True


def wake(ctx: AppContext) -> None:
    flag = ctx.extras.get(WAKE_KEY)
    if isinstance(flag, asyncio.Event):
        flag.set()


def backoff(attempts: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * 4 ** max(attempts - 1, 0))


async def _claim(ctx: AppContext, now: datetime, limit: int) -> list[tuple[WebhookDelivery, WebhookSubscription]]:
    async with ctx.db.transaction() as s:
        # A "sending" row is only taken over once its lease really expired (the sender died).
        due = or_(and_(WebhookDelivery.status == "queued", WebhookDelivery.next_attempt_at <= now),
                  and_(WebhookDelivery.status == "sending", WebhookDelivery.next_attempt_at <= utcnow()))
        stmt = (select(WebhookDelivery).where(due)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit))
        if ctx.db.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list((await s.scalars(stmt)).all())
        out = []
        for d in rows:
            d.status = "sending"
            d.attempts += 1
            d.next_attempt_at = now + timedelta(seconds=LEASE)
            hook = await s.get(WebhookSubscription, d.webhook_id)
            if hook is not None:
                out.append((d, hook))
    return out


async def _post(http: aiohttp.ClientSession, d: WebhookDelivery, hook: WebhookSubscription) -> tuple[int | None, str | None]:
    body = json.dumps({**d.payload, "delivery_id": d.id, "attempt": d.attempts}, ensure_ascii=False,
                      default=str).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "scrm-webhooks/1",
               "X-SCRM-Event": d.event, "X-SCRM-Delivery": str(d.id),
               "Idempotency-Key": f"scrm-{hook.id}-{d.event_id}", **signing.signed_headers(hook.secret, body)}
    try:
        # No redirects (a receiver must answer itself); the session's policy checks the destination.
        async with http.post(hook.url, data=body, headers=headers, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
            if 200 <= resp.status < 300:
                return resp.status, None
            return resp.status, f"HTTP {resp.status}"  # never the body: admins read the delivery log
    except OutboundRefused as exc:
        return None, f"refused: {exc.reason}"
    except TimeoutError:
        return None, f"timed out after {TIMEOUT:g} s"
    except aiohttp.ClientError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]


async def deliver_due(ctx: AppContext, now: datetime | None = None, limit: int = 50) -> int:
    """Send every delivery due at `now` (concurrently); returns how many were attempted."""
    now = now or utcnow()
    claimed = await _claim(ctx, now, limit)
    if not claimed:
        return 0
    results = await asyncio.gather(*(_post(ctx.http_session, d, h) for d, h in claimed))
    async with ctx.db.transaction() as s:
        for (d, _hook), (status, error) in zip(claimed, results, strict=True):
            values: dict[str, Any] = {"response_status": status, "last_error": error}
            if error is None:
                values |= {"status": "delivered", "delivered_at": utcnow()}
            elif d.attempts >= MAX_ATTEMPTS:
                values |= {"status": "failed"}
            else:
                values |= {"status": "queued", "next_attempt_at": utcnow() + timedelta(seconds=backoff(d.attempts))}
            await s.execute(update(WebhookDelivery).where(WebhookDelivery.id == d.id,
                                                          WebhookDelivery.status == "sending").values(**values))
            if error:
                log.warning("webhook %s delivery %s attempt %s failed: %s", d.webhook_id, d.id, d.attempts, error)
    return len(claimed)


async def redeliver(tx: Tx, delivery_id: int) -> WebhookDelivery | None:
    """Queue a delivery again now (the "redeliver" button in the delivery log)."""
    d = await tx.session.get(WebhookDelivery, delivery_id)
    if d is None:
        return None
    d.status, d.attempts, d.next_attempt_at, d.last_error = "queued", 0, utcnow(), None
    return d


async def run_webhook_sender(ctx: AppContext, stop: asyncio.Event) -> None:
    """Background sender: wakes on new deliveries, else polls for retries that fell due."""
    flag = ctx.extras.setdefault(WAKE_KEY, asyncio.Event())
    while not stop.is_set():
        flag.clear()
        try:
            while await deliver_due(ctx) > 0 and not stop.is_set():
                pass
        except Exception:
            log.exception("outgoing webhook sender failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_first(flag, stop), POLL)


async def _first(a: asyncio.Event, b: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


__all__ = ["EVENTS", "WebhookIn", "backoff", "deliver_due", "enqueue_event", "new_secret", "redeliver",
           "run_webhook_sender"]
