"""Per-inbox pacing in the worker: deliveries wait in their inbox's line, are marked `sending` a little
ahead, then get the rate limiter's go-ahead in arrival order, each go-ahead followed at once by its send.

(A "go-ahead" is a rate-limit slot: the limiter's consent to one send now. "Turn" is the word for a
conversation's turns, scrm/services/conversations/turns.py.)"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from channels.base import RateLimit
from scrm.delivery.slots import SendSlots

# How the margin is chosen. A platform counts our sends by its own clock, in windows of `per` seconds.
# The limiter spaces our go-aheads evenly but lets a sender that woke up late catch up by up to
# RATE_TOLERANCE seconds, and each send then reaches the platform a little early or late (our event
# loop's lag between go-ahead and write, the network, the platform's own stalls): arrival jitter. So
# the go-aheads of `per + RATE_TOLERANCE + jitter` seconds can land in one window of the platform,
# and pacing at rate * per / (per + MARGIN_SECONDS) keeps even that window within the limit while
# RATE_TOLERANCE + jitter <= MARGIN_SECONDS. The margin is time, not a share of the rate: it costs 5%
# of a per-second limit (paced at 0.95 of it: the aim, PACE_TARGET) and 0.09% of a per-minute one
# (20/min is paced at 19.98/min). Measured with bench/telegram_delivery.py (two workers, a shared
# limiter) on a 2-core host at load average 8-12: 30 consecutive arrivals were squeezed by 30-50 ms
# against their go-aheads, so the 37.6 ms left for jitter holds the busiest second at the limit; a
# stall beyond it (a starved worker) can still cost one 429 now and then, which is retried after the
# platform's retry_after. The old margin (92%, 3.5 sends short: 0.883 of 30/s) saw the same busiest second.
PACE_TARGET = 0.95  # of a per-second limit
MARGIN_SECONDS = 1 / PACE_TARGET - 1  # 52.6 ms
RATE_TOLERANCE = 0.015  # catch-up allowed; leaves 37.6 ms of the margin for arrival jitter
# A delivery is marked `sending` (committed) before its go-ahead, not between go-ahead and send: a
# commit takes 10-50 ms under load, and the sends one commit released together had to be spread out
# again, waiting in a queue that held send slots and lost the rate's time (a 300/s channel got
# 255/s of its paced 276). The front of each line is marked ahead by twice the usual commit time
# (the worker measures it), within these bounds, so its head is ready when its go-ahead comes; with
# commits slower than the upper bound a line goes slower than its rate. A worker killed meanwhile
# leaves those few `sending`: resent with the same idempotency key where the channel deduplicates,
# else reported as outcome unknown, like a send cut off half-way.
ARM_AHEAD_MIN = 0.02
ARM_AHEAD_MAX = 0.2
ARM_MIN = 2
# An inbox without a rate limit has its go-aheads at once: this many marked ahead is how many of its sends
# one commit releases together (measured with email next to paced lines, one run each: 8 sent 90/s;
# 16 sent no more but, building that many messages at once, stalled the event loop past 20 ms three
# times as often, and the paced lines lost 2% of their rate).
ARM_UNLIMITED = 8


def paced(limit: RateLimit) -> RateLimit:
    """The rate this worker paces a platform limit at: its `per` window stretched by MARGIN_SECONDS
    (0.95 of a per-second limit, 0.999 of a per-minute one; see MARGIN_SECONDS)."""
    return RateLimit(limit.key, limit.rate * limit.per / (limit.per + MARGIN_SECONDS), limit.per)


class Place:
    """A delivery's place in its inbox's line."""

    __slots__ = ("armable", "left", "limits", "ready", "result")

    def __init__(self, limits: Sequence[RateLimit], armed: bool) -> None:
        loop = asyncio.get_running_loop()
        self.limits = limits
        self.armable: asyncio.Future[None] = loop.create_future()  # near the front: mark it `sending` now
        self.ready: asyncio.Future[None] = loop.create_future()  # marked (or gone): it may have its go-ahead
        self.result: asyncio.Future[float] = loop.create_future()  # 0: send now (holding a slot), or wait first
        self.left = False
        if armed:
            self.armable.set_result(None)
            self.ready.set_result(None)


class Pacer:
    """One inbox's line: marks deliveries `sending` a little ahead, then hands out the limiter's go-aheads in
    arrival order.

    One task asks the limiter for the head of the line, back to back while go-aheads are free, so neither
    a crowd of waiting deliveries polls the limiter nor a go-ahead waits for a waiting task to be
    scheduled. The head takes a send slot (SendSlots) before it asks: the deliveries behind it wait
    holding none. A wait longer than the channel's own interval comes from a narrower limit (one
    chat): that delivery is handed the wait to sleep on its own (without a send slot), and the line
    moves on.
    """

    def __init__(self, limiter: Any, slots: SendSlots | None = None, key: Hashable = None,
                 arm_ahead: Callable[[], float] = lambda: ARM_AHEAD_MAX) -> None:
        self.limiter = limiter
        self.slots = slots
        self.key = key
        self.arm_ahead = arm_ahead  # seconds of go-aheads to mark `sending` ahead
        self._line: deque[Place] = deque()
        self._opened = 0  # places at the front of the line told they may be marked `sending`
        self._task: asyncio.Task[None] | None = None
        self.interval = 0.0  # seconds between two sends of this inbox (its narrowest shared limit)
        # The shared limiter spaces go-aheads on its own clock, as it hands them out. A go-ahead that
        # reached this process late (its event loop stalled meanwhile) would be sent right before the
        # next one: the line also spaces them by when they arrive here (GCRA on the local clock).
        self._local_tat = 0.0

    @property
    def rate(self) -> float:
        """Sends per second this inbox is paced at; 0 when it has no rate limit."""
        return 1.0 / self.interval if self.interval > 0 else 0.0

    def eta(self, limits: Sequence[RateLimit]) -> float:
        """Seconds a delivery joining the line now would wait for its go-ahead."""
        self.interval = min((lim.per / lim.rate for lim in limits), default=0.0)
        return len(self._line) * self.interval

    def ahead(self) -> int:
        """How many deliveries at the front of the line are marked `sending` ahead of their go-ahead."""
        if self.interval <= 0:
            return ARM_UNLIMITED
        return max(ARM_MIN, math.ceil(self.arm_ahead() / self.interval))

    def unmarked_room(self) -> int:
        """How many deliveries joining now would be at the front, among those marked `sending` ahead."""
        return max(0, self.ahead() - len(self._line))

    def join(self, limits: Sequence[RateLimit], armed: bool = False) -> Place:
        """Take a place at the end of the line (`armed`: already marked `sending`)."""
        place = Place(limits, armed)
        self._line.append(place)
        self._open()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return place

    def arm(self, place: Place) -> None:
        """The delivery is marked `sending`: it may have its go-ahead."""
        if not place.ready.done():
            place.ready.set_result(None)

    def leave(self, place: Place) -> None:
        """The delivery gives up its place (idempotent; nothing happens once it had its go-ahead)."""
        place.left = True
        self.arm(place)

    async def go_ahead(self, place: Place) -> float:
        """0 once the limiter's go-ahead was taken for this delivery (and a send slot taken for it, which the
        caller gives back), else the seconds it should wait first (holding no send slot)."""
        try:
            return await place.result
        except asyncio.CancelledError:
            if place.result.done() and not place.result.cancelled() and place.result.result() <= 0:
                self._release_slot()  # granted just as we were cancelled: nobody else gives it back
            raise

    def _open(self) -> None:
        front = min(self.ahead(), len(self._line))
        for place in itertools.islice(self._line, self._opened, front):
            if not place.armable.done():
                place.armable.set_result(None)
        self._opened = max(self._opened, front)

    def _pop(self) -> None:
        self._line.popleft()
        self._opened = max(0, self._opened - 1)
        self._open()

    def _release_slot(self) -> None:
        if self.slots is not None:
            self.slots.release(self.key)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        holding = False  # a send slot taken for the head of the line
        try:
            while self._line:
                place = self._line[0]
                if place.left or place.result.done():  # gone, or its task was cancelled
                    self._pop()
                    continue
                if not place.ready.done():
                    await asyncio.wait((place.ready,))  # not `await`: cancelling us must not cancel it
                    continue
                if not holding and self.slots is not None:
                    await self.slots.acquire(self.key)
                    holding = True
                    continue  # the head may have left meanwhile
                gap = min((lim.per / lim.rate for lim in place.limits), default=0.0)
                early = self._local_tat - RATE_TOLERANCE - loop.time()
                if early > 0:  # see _local_tat
                    await asyncio.sleep(early)
                    continue
                hold = gap * 1.05
                try:
                    wait = await self.limiter.acquire(place.limits, RATE_TOLERANCE)
                except Exception as exc:  # noqa: BLE001 - e.g. Redis down: this delivery gets no go-ahead
                    self._pop()
                    if not place.result.done():
                        place.result.set_exception(exc)
                    continue
                if wait <= 0:
                    self._local_tat = max(self._local_tat, loop.time()) + gap
                if wait <= 0 or wait > hold:
                    self._pop()
                    if not place.result.done():
                        place.result.set_result(max(wait, 0.0))
                        if wait <= 0:
                            holding = False  # the delivery has it now
                    continue
                await asyncio.sleep(wait)
        finally:
            if holding:
                self._release_slot()
