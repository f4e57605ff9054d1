"""Which outbox workers are alive: each counts heartbeats in the database, and the others watch the counts.

A delivery's lease (worker.lease_seconds, 60 s by default) has to outlast the slowest send, so
waiting for it made the contacts whose deliveries a killed worker left `claimed` or `sending` wait
a minute. A heartbeat only has to outlast a stall of the event loop: a worker whose count has not
moved for DEAD_AFTER_BEATS heartbeats of the watcher is dead, and its deliveries are recovered then.

The watcher measures that time on its own monotonic clock between two reads of the count, so clocks
that differ between hosts do not matter. It only judges others while its own heartbeats go through:
after a database outage (when nobody could beat) everybody starts watching afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from scrm.db.models import WorkerHeartbeat, utcnow

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.delivery.worker")

DEAD_AFTER_BEATS = 5


class Liveness:
    """This worker's heartbeat, and the workers whose heartbeats stopped."""

    def __init__(self, ctx: AppContext, name: str, interval: float) -> None:
        self.ctx = ctx
        self.name = name
        self.interval = interval
        self.dead_after = DEAD_AFTER_BEATS * interval
        self._seen: dict[str, tuple[int, float]] = {}  # worker -> (beats, when first seen at that count)
        self._healthy_since: float | None = None  # our heartbeats have gone through since then

    async def beat(self) -> set[str]:
        """Count one heartbeat; return the workers found dead (not yet recovered). Raises on database errors."""
        loop = asyncio.get_running_loop()
        try:
            async with self.ctx.db.transaction() as s:
                now = utcnow()
                done = await s.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.name == self.name)
                                       .values(beats=WorkerHeartbeat.beats + 1, beat_at=now))
                if not done.rowcount:  # type: ignore[attr-defined]
                    s.add(WorkerHeartbeat(name=self.name, beats=1, started_at=now, beat_at=now))
            async with self.ctx.db.session() as s:
                counts = dict((await s.execute(select(WorkerHeartbeat.name, WorkerHeartbeat.beats))).all())
        except Exception:
            self._healthy_since, self._seen = None, {}  # judge nobody on what we could not watch
            raise
        at = loop.time()
        if self._healthy_since is None:
            self._healthy_since = at
        dead: set[str] = set()
        for name, beats in counts.items():
            if name == self.name:
                continue
            seen = self._seen.get(name)
            if seen is None or seen[0] != beats:
                self._seen[name] = (beats, at)
            elif at - seen[1] >= self.dead_after and at - self._healthy_since >= self.dead_after:
                dead.add(name)
        for name in set(self._seen) - counts.keys():
            del self._seen[name]
        return dead

    async def forget(self, names: set[str]) -> None:
        """Remove the rows of dead workers whose deliveries were recovered."""
        async with self.ctx.db.transaction() as s:
            await s.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name.in_(sorted(names))))
        for name in names:
            self._seen.pop(name, None)

    async def stop(self) -> None:
        """A clean stop: this worker's row goes (nothing of it is left to recover)."""
        await self.forget({self.name})


async def keep_beating(liveness: Liveness, stop: asyncio.Event, recover: Callable[[set[str]], Awaitable[int]]) -> None:
    """Beat every `liveness.interval` seconds until `stop`; hand the workers found dead to `recover`."""
    while not stop.is_set():
        try:
            dead = await liveness.beat()
            if dead:
                recovered = await recover(dead)
                await liveness.forget(dead)
                log.warning("worker(s) %s stopped: recovered %d of their deliveries without waiting for their lease",
                            ", ".join(sorted(dead)), recovered)
        except Exception as exc:  # noqa: BLE001 - e.g. the database is restarting: beat again later
            log.warning("worker heartbeat failed: %s", type(exc).__name__)
        try:
            async with asyncio.timeout(liveness.interval):
                await stop.wait()
        except TimeoutError:
            pass
