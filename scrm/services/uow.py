"""A write transaction that records its events in the event log and publishes them after commit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from scrm.events import Event

if TYPE_CHECKING:
    from scrm.context import AppContext, ChannelRules


@dataclass
class Tx:
    session: AsyncSession
    channels: ChannelRules  # what each channel type can do, from the context (never the adapter registry)
    events: list[Event] = field(default_factory=list)

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event: logged in this transaction, pushed live after commit, dropped on rollback."""
        self.events.append(Event(name, data))


@contextlib.asynccontextmanager
async def unit_of_work(ctx: AppContext) -> AsyncIterator[Tx]:
    """`async with unit_of_work(ctx) as tx:` ... log tx.events, commit, then publish them.

    Inside a consumer's shared transaction (a listener at work) it joins that transaction, and its
    events are logged and published with the consumer's commit.
    """
    shared = ctx.db.joined()
    async with ctx.db.transaction() as session:
        tx = Tx(session, ctx.adapters)
        yield tx
        if shared is None and tx.events:
            await ctx.bus.event_log().append(session, tx.events)
    if shared is not None:
        shared.events.extend(tx.events)
    elif tx.events:
        await ctx.bus.publish(tx.events)
