"""Per-inbox pacing in the worker: deliveries marked `sending` a little ahead, then rate-limit turns in
arrival order, each turn followed at once by its send."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from channels.base import RateLimit
from scrm.services.outbox_slots import SendSlots

# Pace at 92% of a platform's limit. The platform counts arrivals by its own clock: the catch-up
# tolerance below and arrival jitter (our loop's lag before the write, the platform's own stalls)
# can squeeze up to ~1.08 s of our turns into one of its seconds, and the margin keeps that under
# the limit (measured: 96% let a loaded machine exceed a 150/s limit by 4%).
RATE_HEADROOM = 0.92
# Seconds of catch-up after a late wake-up (GCRA burst tolerance). A loaded worker's event loop stalls
# 20-45 ms now and then; a line woken that late loses what exceeds this (at 20 ms the lines got
# 90-91% of the configured limits, at 40 ms 92%). The burst it allows, 40 ms of the rate, is part of
# the headroom above (measured peaks at 40 ms: 290-292 of 300, 144-146 of 150, 28-29 of 30).
RATE_TOLERANCE = 0.04
# Arrival jitter is a matter of time, worth a number of sends whatever the rate: 92% of a 30/s limit
# leaves 2.4 sends of margin per second, and a loaded machine squeezed 3 more into one second of the
# platform's (Bot API 429s). Limits of at least 2 * JITTER_SENDS per second keep this many in hand.
JITTER_SENDS = 3.5
# A delivery is marked `sending` (committed) before its turn, not between its turn and its send: a
# commit takes 10-50 ms under load, and the sends one commit released together had to be spread out
# again, waiting in a queue that held send slots and lost the rate's time (a 300/s channel got
# 255/s of its paced 276). The front of each line is marked ahead by twice the usual commit time
# (the worker measures it), within these bounds, so its head is ready when its turn comes; with
# commits slower than the upper bound a line goes slower than its rate. A worker killed meanwhile
# leaves those few `sending`: resent with the same idempotency key where the channel deduplicates,
# else reported as outcome unknown, like a send cut off half-way.
ARM_AHEAD_MIN = 0.02
ARM_AHEAD_MAX = 0.2
ARM_MIN = 2
# An inbox without a rate limit has its turns at once: this many marked ahead is how many of its sends
# one commit releases together (measured with email next to paced lines, one run each: 8 sent 90/s;
# 16 sent no more but, building that many messages at once, stalled the event loop past 20 ms three
# times as often, and the paced lines lost 2% of their rate).
ARM_UNLIMITED = 8


def paced(limit: RateLimit) -> RateLimit:
    """The rate this worker paces a platform limit at: RATE_HEADROOM of it, and JITTER_SENDS short.

    The fixed margin applies to windows of a second or less (arrival jitter is a fraction of a
    second) holding enough sends to spare them: not to a 1/s per-chat or a 20-per-minute limit.
    """
    allowed = limit.rate * RATE_HEADROOM  # sends per `limit.per` seconds
    if limit.per <= 1.0 and limit.rate >= 2 * JITTER_SENDS:
        allowed = min(allowed, limit.rate - JITTER_SENDS)
    return RateLimit(limit.key, allowed, limit.per)


class Turn:
    """A delivery's place in its inbox's line."""

    __slots__ = ("armable", "left", "limits", "ready", "result")

    def __init__(self, limits: Sequence[RateLimit], armed: bool) -> None:
        loop = asyncio.get_running_loop()
        self.limits = limits
        self.armable: asyncio.Future[None] = loop.create_future()  # near the front: mark it `sending` now
        self.ready: asyncio.Future[None] = loop.create_future()  # marked (or gone): it may have its turn
        self.result: asyncio.Future[float] = loop.create_future()  # 0: send now (holding a slot), or wait first
        self.left = False
        if armed:
            self.armable.set_result(None)
            self.ready.set_result(None)


class Pacer:
    """One inbox's line: marks deliveries `sending` a little ahead, then hands out rate-limit turns in
    arrival order.

    One task asks the limiter for the head of the line, back to back while turns are free, so neither
    a crowd of waiting deliveries polls the limiter nor a turn waits for a waiting task to be
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
        self.arm_ahead = arm_ahead  # seconds of turns to mark `sending` ahead
        self._line: deque[Turn] = deque()
        self._opened = 0  # turns at the front of the line told they may be marked `sending`
        self._task: asyncio.Task[None] | None = None
        self.interval = 0.0  # seconds between two sends of this inbox (its narrowest shared limit)

    @property
    def rate(self) -> float:
        """Sends per second this inbox is paced at; 0 when it has no rate limit."""
        return 1.0 / self.interval if self.interval > 0 else 0.0

    def eta(self, limits: Sequence[RateLimit]) -> float:
        """Seconds a delivery joining the line now would wait for its turn."""
        self.interval = min((lim.per / lim.rate for lim in limits), default=0.0)
        return len(self._line) * self.interval

    def ahead(self) -> int:
        """How many deliveries at the front of the line are marked `sending` ahead of their turn."""
        if self.interval <= 0:
            return ARM_UNLIMITED
        return max(ARM_MIN, math.ceil(self.arm_ahead() / self.interval))

    def join(self, limits: Sequence[RateLimit], armed: bool = False) -> Turn:
        """Take a place at the end of the line (`armed`: already marked `sending`)."""
        turn = Turn(limits, armed)
        self._line.append(turn)
        self._open()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return turn

    def arm(self, turn: Turn) -> None:
        """The delivery is marked `sending`: it may have its turn."""
        if not turn.ready.done():
            turn.ready.set_result(None)

    def leave(self, turn: Turn) -> None:
        """The delivery gives up its place (idempotent; nothing happens once it had its turn)."""
        turn.left = True
        self.arm(turn)

    async def turn(self, turn: Turn) -> float:
        """0 once a rate-limit turn was used for this delivery (and a send slot taken for it, which the
        caller gives back), else the seconds it should wait first (holding no send slot)."""
        try:
            return await turn.result
        except asyncio.CancelledError:
            if turn.result.done() and not turn.result.cancelled() and turn.result.result() <= 0:
                self._release_slot()  # granted just as we were cancelled: nobody else gives it back
            raise

    def _open(self) -> None:
        front = min(self.ahead(), len(self._line))
        for turn in itertools.islice(self._line, self._opened, front):
            if not turn.armable.done():
                turn.armable.set_result(None)
        self._opened = max(self._opened, front)

    def _pop(self) -> None:
        self._line.popleft()
        self._opened = max(0, self._opened - 1)
        self._open()

    def _release_slot(self) -> None:
        if self.slots is not None:
            self.slots.release(self.key)

    async def _run(self) -> None:
        holding = False  # a send slot taken for the head of the line
        try:
            while self._line:
                turn = self._line[0]
                if turn.left or turn.result.done():  # gone, or its task was cancelled
                    self._pop()
                    continue
                if not turn.ready.done():
                    await asyncio.wait((turn.ready,))  # not `await`: cancelling us must not cancel it
                    continue
                if not holding and self.slots is not None:
                    await self.slots.acquire(self.key)
                    holding = True
                    continue  # the head may have left meanwhile
                hold = min((lim.per / lim.rate for lim in turn.limits), default=0.0) * 1.05
                try:
                    wait = await self.limiter.acquire(turn.limits, RATE_TOLERANCE)
                except Exception as exc:  # noqa: BLE001 - e.g. Redis down: this delivery fails its turn
                    self._pop()
                    if not turn.result.done():
                        turn.result.set_exception(exc)
                    continue
                if wait <= 0 or wait > hold:
                    self._pop()
                    if not turn.result.done():
                        turn.result.set_result(max(wait, 0.0))
                        if wait <= 0:
                            holding = False  # the delivery has it now
                    continue
                await asyncio.sleep(wait)
        finally:
            if holding:
                self._release_slot()
