"""The bulk side of starting a broadcast: channel decisions, delivery ids drawn ahead, background writes.

The writer inserts (COPY on PostgreSQL) one chunk while the caller builds the next one.
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import JSON, func, insert, select, text

from scrm.db.models import Delivery
from scrm.db.models_campaigns import TrackedLink
from scrm.db.models_marketing import BroadcastRecipient
from scrm.services.marketing.broadcast_compose import contact_dict
from scrm.services.marketing.broadcast_rules import Chooser, Decision, IdentityInfo
from scrm.services.uow import Tx


def group_decisions(rows: Sequence[Any], chooser: Chooser) -> Iterator[tuple[int, dict[str, Any], Decision]]:
    """Group the (contact x identity) rows by contact and pick each contact's channel."""
    cid: int | None = None
    contact: dict[str, Any] = {}
    idents: list[IdentityInfo] = []
    for r in rows:  # ordered by contact id
        if r.id != cid:
            if cid is not None:
                yield cid, contact, chooser(contact, idents)
            cid, contact, idents = r.id, contact_dict(r), []
            contact["opt_outs"] = _json_object(r.opt_outs)
        if r.iid is not None:
            idents.append(IdentityInfo(r.iid, r.inbox_id, r.external_id, r.reachable, r.subscribed,
                                       r.last_inbound_at, _json_object(r.iattrs)))
    if cid is not None:
        yield cid, contact, chooser(contact, idents)


def _json_object(raw: str | None) -> dict[str, Any]:
    """A JSON column read as text: most are empty, and skipping their decoding adds up over 100k rows."""
    if not raw or raw in ("{}", "null"):
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


async def allocate_delivery_ids(tx: Tx, n: int) -> list[int]:
    """Ids for `n` new deliveries, drawn before inserting so recipients can point at them directly."""
    if n == 0:
        return []
    s = tx.session
    if s.get_bind().dialect.name == "postgresql":
        # One array, not n rows: decoding 100k result rows cost more than drawing the numbers.
        return list(await s.scalar(text(
            "SELECT array_agg(nextval(pg_get_serial_sequence('deliveries', 'id'))) FROM generate_series(1, :n)"),
            {"n": n}) or [])
    # SQLite: write transactions hold the database's write lock (BEGIN IMMEDIATE), so max(id) is ours.
    top = await s.scalar(select(func.max(Delivery.id))) or 0
    return list(range(top + 1, top + 1 + n))


class BulkWriter:
    """Inserts deliveries and recipients in the background while the caller builds the next chunk."""

    def __init__(self, tx: Tx) -> None:
        self.tx = tx
        self.queue: asyncio.Queue[tuple[list[dict[str, Any]], ...] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())
        self.busy = 0.0  # seconds spent in the database's inserts

    async def write(self, deliveries: list[dict[str, Any]], recipients: list[dict[str, Any]],
                    links: list[dict[str, Any]] | None = None) -> None:
        if self.task.done():
            await self.task  # raises what went wrong
        self.queue.put_nowait((deliveries, recipients, links or []))
        await asyncio.sleep(0)  # let the writer send this chunk before the next one is built

    async def close(self) -> None:
        self.queue.put_nowait(None)
        await self.task

    def cancel(self) -> None:
        """Stop the writer if the caller failed half-way (the transaction is rolled back)."""
        if not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        s = self.tx.session
        copy = None
        if s.get_bind().dialect.name == "postgresql":
            raw = await (await s.connection()).get_raw_connection()
            copy = raw.driver_connection.copy_records_to_table  # type: ignore[union-attr]
        while (item := await self.queue.get()) is not None:
            deliveries, recipients, links = item
            for table, rows in ((Delivery.__table__, deliveries), (BroadcastRecipient.__table__, recipients),
                                (TrackedLink.__table__, links)):
                if not rows:
                    continue
                t0 = time.perf_counter()
                if copy is None:
                    await s.execute(insert(table), rows)
                else:
                    # Plain columns through one C-level itemgetter per row, then the JSON ones
                    # serialized (per-cell generator expressions were a third of the Python time).
                    json_cols = [c for c in rows[0] if isinstance(table.c[c].type, JSON)]
                    plain = [c for c in rows[0] if c not in json_cols]
                    get = operator.itemgetter(*plain) if len(plain) > 1 else lambda r, c=plain[0]: (r[c],)
                    dumps = json.JSONEncoder(ensure_ascii=False).encode
                    if json_cols:
                        get_json = operator.itemgetter(*json_cols) if len(json_cols) > 1 else None
                        if get_json is None:
                            only = json_cols[0]
                            records = [(*get(r), dumps(r[only])) for r in rows]
                        else:
                            records = [(*get(r), *map(dumps, get_json(r))) for r in rows]
                    else:
                        records = [get(r) for r in rows]
                    t0 = time.perf_counter()
                    await copy(table.name, records=records, columns=plain + json_cols)
                self.busy += time.perf_counter() - t0
