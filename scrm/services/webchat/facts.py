"""What a visitor socket needs to open (identity id, blocked), looked up for many sockets in one statement.

After a network blip every socket of a site reconnects at once: a lookup per socket (a pooled
connection, a round trip, SQLAlchemy's per-statement work) was 6% of the serve process's CPU in
bench/web_chat.py. Sockets that open while a lookup is in flight wait for the next one, which serves
them all; an idle server looks up at once.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from scrm.db.models import ContactIdentity

if TYPE_CHECKING:
    from scrm.context import AppContext

KEY = "webchat_facts"
Facts = tuple[int, bool] | None  # (identity id, blocked), or None before the visitor's first message


@functools.cache
def identities_select(sqlite: bool) -> Any:
    """The identities of some visitors (`visitors`) of an inbox (`inbox`): built once; on PostgreSQL one SQL
    text for any number of visitors (= ANY(array))."""
    c = ContactIdentity.__table__.c
    wanted = bindparam("visitors", expanding=True) if sqlite else any_(bindparam("visitors", type_=ARRAY(Text)))
    return select(c.id, c.external_id, c.attributes).where(
        c.inbox_id == bindparam("inbox"), c.external_id.in_(wanted) if sqlite else c.external_id == wanted)


class FactsLookup:
    """This process's batched lookups of visitor identities."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.waiting: dict[tuple[int, str], list[asyncio.Future[Facts]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, inbox_id: int, visitor: str) -> Facts:
        """(identity id, blocked) of a visitor of an inbox, or None before their first message."""
        future: asyncio.Future[Facts] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault((inbox_id, visitor), []).append(future)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, {}
                by_inbox: dict[int, list[str]] = {}
                for inbox_id, visitor in batch:
                    by_inbox.setdefault(inbox_id, []).append(visitor)
                for inbox_id, visitors in by_inbox.items():
                    try:
                        rows = await self.ctx.db.hot_read(identities_select(self.ctx.db.is_sqlite),
                                                               {"inbox": inbox_id, "visitors": visitors})
                    except Exception as exc:  # noqa: BLE001 - each waiting socket gets the error (and closes)
                        for visitor in visitors:
                            _settle(batch[(inbox_id, visitor)], exc)
                        continue
                    found: dict[str, Facts] = {
                        row.external_id: (row.id, bool((row.attributes or {}).get("blocked"))) for row in rows}
                    for visitor in visitors:
                        _settle(batch[(inbox_id, visitor)], found.get(visitor))
        finally:
            self._task = None


def _settle(futures: list[asyncio.Future[Facts]], result: Facts | BaseException) -> None:
    for future in futures:
        if future.done():  # the socket went away meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def facts_lookup(ctx: AppContext) -> FactsLookup:
    """This process's batched lookup."""
    found: FactsLookup | None = ctx.extras.get(KEY)
    if found is None:
        found = ctx.extras[KEY] = FactsLookup(ctx)
    return found
