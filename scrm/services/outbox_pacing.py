"""Per-inbox pacing in the worker: rate-limit turns in arrival order, and the spacing of actual sends."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from channels.base import RateLimit

# Pace at 92% of a platform's limit. The platform counts arrivals by its own clock: the catch-up
# tolerance below, the group commit between our slot and the send, and network jitter can squeeze
# up to ~1.08 s of our slots into one of its seconds, and the margin keeps that under the limit
# (measured: 96% let a loaded machine exceed a 150/s limit by 4%).
RATE_HEADROOM = 0.92
RATE_TOLERANCE = 0.02  # seconds of catch-up after a late wake-up (GCRA burst tolerance)
# Arrival jitter is a matter of time, worth a number of sends whatever the rate: 92% of a 30/s limit
# leaves 2.4 sends of margin per second, and a loaded machine squeezed 3 more into one second of the
# platform's (Bot API 429s). Limits of at least 2 * JITTER_SENDS per second keep this many in hand.
JITTER_SENDS = 3.5
# Sends released together (by a commit, a stalled loop) go out spaced at this share of the platform's
# rate, the pacing's own: the platform counts one-second windows on its own clock, and arrival
# jitter squeezes our spacing (measured: draining at 96% let arrivals reach 151 in a second at a
# 150/s limit, and a Telegram 429; at 92% the peaks stayed at 141-145 and throughput rose).
SPACING_SHARE = 0.92
# Sends that fell behind the schedule (a stalled loop woke them late) catch up no closer than this
# share of the interval, or than the interval less WAKE_UP_LAG where that is less: the schedule is
# kept, but a stall's backlog does not leave in one burst (measured: such bursts cost a Telegram
# 429 now and then), while a 300/s channel, whose interval is close to the loop's ordinary wake-up
# lag, can still catch up (at 90% of its interval it lost 8% of its rate).
CATCH_UP_SPACING = 0.9
WAKE_UP_LAG = 0.002


def paced(limit: RateLimit) -> RateLimit:
    """The rate this worker paces a platform limit at: RATE_HEADROOM of it, and JITTER_SENDS short.

    The fixed margin applies to windows of a second or less (arrival jitter is a fraction of a
    second) holding enough sends to spare them: not to a 1/s per-chat or a 20-per-minute limit.
    """
    allowed = limit.rate * RATE_HEADROOM  # sends per `limit.per` seconds
    if limit.per <= 1.0 and limit.rate >= 2 * JITTER_SENDS:
        allowed = min(allowed, limit.rate - JITTER_SENDS)
    return RateLimit(limit.key, allowed, limit.per)


class Pacer:
    """Hands out one inbox's rate-limit slots in arrival order.

    One task asks the limiter for the deliveries waiting in line, back to back while slots are
    free, so neither a crowd of waiting deliveries polls the limiter nor a slot waits for a waiting
    task to be scheduled. A wait longer than the channel's own interval comes from a narrower limit
    (one chat): that delivery is handed the wait to sleep on its own, and the line moves on.
    """

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter
        self._line: deque[tuple[Sequence[RateLimit], asyncio.Future[float]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.interval = 0.0  # seconds between two sends of this inbox (its narrowest shared limit)
        self._next_send = 0.0  # the next free send slot on the loop's clock
        self._last_send = float("-inf")  # when the last send actually left

    def eta(self, limits: Sequence[RateLimit]) -> float:
        """Seconds a delivery joining the line now would wait for its turn."""
        self.interval = min((lim.per / lim.rate for lim in limits), default=0.0)
        return len(self._line) * self.interval

    def backlog(self) -> float:
        return len(self._line) * self.interval

    async def spaced(self) -> None:
        """Keep this worker's actual sends of the inbox at least an interval apart (see SPACING_SHARE).

        Slots are granted smoothly, but a commit or a stalled event loop can release several at
        once; spreading them again here keeps every one-second window under the platform's limit.
        Each send reserves the next slot of a fixed schedule and sleeps until it: a late wake-up
        does not push the later slots back (spacing each send from the previous one's actual time
        instead lost the loop's wake-up lag on every send: a 300/s channel got 130/s). Sends that
        are behind the schedule still leave a little less than an interval apart (CATCH_UP_SPACING).
        """
        # `interval` is the paced one (see `paced`); at SPACING_SHARE == RATE_HEADROOM they coincide.
        gap = self.interval * RATE_HEADROOM / SPACING_SHARE
        if gap <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(self._next_send, now)
        self._next_send = slot + gap
        if slot > now:
            await asyncio.sleep(slot - now)
        min_gap = min(gap * CATCH_UP_SPACING, gap - WAKE_UP_LAG)
        while True:
            now = loop.time()
            earliest = self._last_send + min_gap
            if now >= earliest:
                self._last_send = now
                return
            await asyncio.sleep(earliest - now)

    async def turn(self, limits: Sequence[RateLimit]) -> float:
        """0 once a slot was consumed for this delivery, else the seconds it should wait first."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._line.append((limits, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._line:
            limits, future = self._line[0]
            if future.done():  # the delivery was cancelled
                self._line.popleft()
                continue
            hold = min((lim.per / lim.rate for lim in limits), default=0.0) * 1.05
            try:
                wait = await self.limiter.acquire(limits, RATE_TOLERANCE)
            except Exception as exc:  # noqa: BLE001 - e.g. Redis down: this delivery fails its turn
                self._line.popleft()
                if not future.done():
                    future.set_exception(exc)
                continue
            if wait <= 0 or wait > hold:
                self._line.popleft()
                if not future.done():
                    future.set_result(max(wait, 0.0))
                continue
            await asyncio.sleep(wait)
