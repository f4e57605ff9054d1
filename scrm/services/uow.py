"""A write transaction that collects events and publishes them only after it has committed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from scrm.events import Event

if TYPE_CHECKING:
    from scrm.context import AppContext


@dataclass
class Tx:
    session: AsyncSession
    events: list[Event] = field(default_factory=list)

    def emit(self, name: str, **data: Any) -> None:
        """Queue an event; it is published after commit, or dropped on rollback."""
        self.events.append(Event(name, data))


@contextlib.asynccontextmanager
async def unit_of_work(ctx: AppContext) -> AsyncIterator[Tx]:
    """`async with unit_of_work(ctx) as tx:` ... commit, then publish tx.events."""
    async with ctx.db.transaction() as session:
        tx = Tx(session)
        yield tx
    if tx.events:
        await ctx.bus.publish(tx.events)
