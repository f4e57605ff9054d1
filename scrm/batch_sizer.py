"""How many events an event-log consumer claims per batch (scrm/event_log.py EventConsumer).

A batch shares its per-batch statements (the claim, a read per table, the writes, the commit) among its
events, so under a backlog a longer batch can work more events per second. But every event of a batch
waits for the whole batch: its follow-up (the bot's answer) commits with the last one. A batch that
doubled whenever one came back full (the old rule) kept doubling when the per-event work dominated and a
longer batch worked no faster: bench/web_chat.py's new visitors (five events per question) filled the
16-event batches of a busy consumer, the batches grew to 64 and took four times as long for the same
rate, the questions' wait grew from 60 to 300 ms and stayed there until the backlog ran dry.

So a longer batch has to earn its place: the sizer keeps the rate (events per second of batch time) it
measured at each size for full batches, and doubles only while the doubled size is untried, its
measurement is stale, or it worked faster (GAIN: a longer batch that raises the rate stays, so a backlog
drains as fast as before; measured under load in bench/web_chat.py, 32 worked ~1.7 times the rate of 16
and 64 ~1.2 times that of 32); a size that turns out no faster than half of it goes back down. A batch that comes back short (no backlog) returns to the base size, so a lone message is
never held up by a long batch.

Linger (`gap`, `claim_limit`): a batch costs the same few statements whether it holds 2 events or 30,
and at a steady rate the consumer's claims come as fast as its batches end, each catching the few events
that arrived meanwhile (bench/bot_reply.py at 200 msg/s: ~5.6 events per batch; a batch's own cost, ~8 ms
of the worker's CPU, was a third of the worker's). While events arrive faster than LINGER_FROM per second
(counted over the last RATE_WINDOW) a process starts at most one claim per LINGER, with room for what
arrives meanwhile: an event waits at most LINGER longer (a small share of the 1 s a customer may wait at
such rates), a lone message (a low rate) not at all. After a full batch (a backlog) the next claim does not
wait. Measured (bench/bot_reply.py --rate, one worker, the run before without linger): at 200 msg/s the
worker's CPU 2.27 ms/msg (3.08) and its PostgreSQL backends' 1.11 (1.51); at 300 msg/s 1.96 (2.54) and 0.95
(1.21), and the replies kept up (p99 0.96 s) where they had fallen behind (p99 4.3 s).

Peers: batches are per process, the arrivals cluster-wide. With two worker processes each saw half the events
and spaced its own claims by LINGER, so claims came twice as often and caught half as many events each, and
below 2 x LINGER_FROM neither lingered at all (bench/bot_reply.py --rate 320 --workers 2: 537 batches for 7,787
events where one worker took 362, and 24% more follow-up CPU per message). Event ids are the log's own count
of what was logged: a process that claimed `own` events while the ids it claimed rose by `span` over the last
RATE_WINDOW shares the log with about span / own processes (`peers`, at most MAX_PEERS). It counts the
cluster's rate (its own times peers) against LINGER_FROM and spaces its claims by LINGER x peers: the cluster
then claims about once per LINGER, as one process does, each claim finding as many events. One process alone
sees its own ids (peers 1: as before). Measured in three alternating pairs at 320 msg/s with two workers: 348-425
batches for the same events (before: 497-571), the follow-up's CPU per message 7-11% lower relative to the bench
process's own in the same run (raw, within this host's drift: +11%, -13%, -11%), reply p50 125-261 ms (122-212).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

GAIN = 1.1  # a doubled batch must work this many times the events per second of the size below it
SMOOTHING = 0.3  # weight of a new measurement in a size's rate (one batch is noisy on a shared machine)
STALE = 10.0  # seconds after which a size's rate is measured again (the load and the machine change)
LINGER_FROM = 150.0  # events per second claimed over RATE_WINDOW from which claims are spaced (gap)
LINGER = 0.05  # seconds between the starts of a process's claims while spaced (what an event may wait more)
FILL = 0.75  # the share of its limit a spaced claim expects to find (room for a rate that varies)
RATE_WINDOW = 0.5  # seconds over which the arrival rate is counted
MAX_PEERS = 4  # the most processes a claim's spacing counts on (ids a process never sees: rollbacks' gaps)


class BatchSizer:
    """The batch size of one consumer process (its tasks share what they measure)."""

    def __init__(self, base: int, most: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.most = max(base, most)
        self.limit = base
        self._clock = clock
        self._rates: dict[int, tuple[float, float]] = {}  # size -> (events per second, when measured)
        # (when, events, the highest event id claimed) of the claims of the last RATE_WINDOW
        self._claims: deque[tuple[float, int, int | None]] = deque()
        self._claimed = 0  # events of those claims
        self._full = False  # the last claim came back full (a backlog)

    def claimed(self, count: int, limit: int, top: int | None = None) -> None:
        """A claim with `limit` found `count` events, the highest of id `top` (the arrival rate and the
        peers `gap` spaces claims by)."""
        now = self._clock()
        self._claims.append((now, count, top))
        self._claimed += count
        self._full = count >= limit
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._claims and now - self._claims[0][0] > RATE_WINDOW:
            self._claimed -= self._claims.popleft()[1]

    def _rate(self) -> float:
        self._expire(self._clock())
        return self._claimed / RATE_WINDOW

    def peers(self) -> int:
        """About how many processes claim from the log with this one (see the docstring): 1 when unknown."""
        self._expire(self._clock())
        tops = [(top, count) for _, count, top in self._claims if top is not None]
        if len(tops) < 2:
            return 1
        span = max(top for top, _ in tops) - tops[0][0]
        own = sum(count for _, count in tops[1:])  # claimed after the first claim of the window
        if own <= 0 or span <= own:
            return 1
        return min(MAX_PEERS, round(span / own))

    def gap(self) -> float:
        """Seconds the next claim's start should keep from the previous one's (0: claim now; see the docstring)."""
        if self._full:
            return 0.0
        peers = self.peers()
        return 0.0 if self._rate() * peers < LINGER_FROM else LINGER * peers

    def claim_limit(self, gap: float) -> int:
        """How many events a claim may take: the sizer's limit, or room for what a spaced claim collects."""
        if gap <= 0:
            return self.limit
        return max(self.limit, min(self.most, math.ceil(self._rate() * gap / FILL)))

    def rate(self, size: int) -> float | None:
        """The measured rate of full batches of `size` (None: untried or stale)."""
        found = self._rates.get(size)
        if found is None or self._clock() - found[1] > STALE:
            return None
        return found[0]

    def reset(self) -> None:
        """Back to the base size (a batch failed: its events are worked one by one first)."""
        self.limit = self.base

    def worked(self, claimed: int, limit: int, seconds: float) -> None:
        """A batch claimed with `limit` came back with `claimed` events and took `seconds` (claim to commit)."""
        if claimed < limit:  # no backlog: short batches, short waits
            self.limit = self.base
            return
        measured = claimed / max(seconds, 1e-6)
        before = self.rate(limit)
        self._rates[limit] = (measured if before is None else before + SMOOTHING * (measured - before),
                              self._clock())
        here = self.rate(limit) or measured
        below = self.rate(limit // 2) if limit > self.base else None
        if below is not None and here < below * GAIN:
            self.limit = max(self.base, limit // 2)  # the longer batch did not pay for its longer wait
            return
        bigger = min(limit * 2, self.most)
        above = self.rate(bigger) if bigger > limit else None
        if bigger > limit and (above is None or above >= here * GAIN):
            self.limit = bigger
        else:
            self.limit = limit
