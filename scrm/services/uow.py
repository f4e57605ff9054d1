"""A write transaction that records its events in the event log and publishes them after commit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from scrm.event_interest import LISTENING_FACT
from scrm.events import Event

if TYPE_CHECKING:
    from scrm.context import AppContext, ChannelRules


@dataclass
class Tx:
    session: AsyncSession
    channels: ChannelRules  # what each channel type can do, from the context (never the adapter registry)
    events: list[Event] = field(default_factory=list)

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event: logged in this transaction if a consumer may act on it, pushed live after commit,
        dropped on rollback."""
        self.events.append(Event(name, data))


@contextlib.asynccontextmanager
async def unit_of_work(ctx: AppContext) -> AsyncIterator[Tx]:
    """`async with unit_of_work(ctx) as tx:` ... log tx.events, commit, then publish them.

    Inside a consumer's shared transaction (a listener at work) it joins that transaction, and its
    events are logged and published with the consumer's commit. Which events are logged is decided by
    event_interest.py, with a snapshot of the rules, webhooks and inboxes that listen, taken before the
    transaction (cached reads: no statement while fresh) or once per consumer batch.
    """
    shared = ctx.db.joined()
    log = ctx.bus.log
    listening = None
    if shared is None and log is not None:
        listening = await log.listening(ctx)
    elif shared is not None and log is not None and LISTENING_FACT not in shared.facts:
        shared.facts[LISTENING_FACT] = await log.listening(ctx)
    logged = 0
    async with ctx.db.transaction() as session:
        tx = Tx(session, ctx.adapters)
        yield tx
        if shared is None and tx.events:
            logged = await ctx.bus.event_log().append(session, tx.events, listening)
    if shared is not None:
        shared.events.extend(tx.events)
    elif tx.events:
        await ctx.bus.publish(tx.events, wake=logged > 0)  # nothing logged: no consumer has work to look for
