"""Send slots of one outbox worker: how many deliveries may be sending at once, shared by inbox.

A delivery takes a slot when its inbox's line gives it its go-ahead (see Pacer) and gives it back when
its channel answered: waiting in line holds none, so a slow channel's backlog cannot fill the slots
a fast channel needs (64 slots held mostly by deliveries waiting for a 150/s or a 30/s channel's
go-ahead left a 300/s channel at 85-92% of its paced rate). While several inboxes want slots, each may
hold an even share, so one whose channel hangs (sends running into their timeout) leaves the others
theirs.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Hashable


class SendSlots:
    """At most `total` sends at once; while several inboxes want slots, each holds at most an even share."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used: Counter[Hashable] = Counter()
        self._in_use = 0
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}  # by inbox, each in arrival order

    @property
    def in_use(self) -> int:
        return self._in_use

    def share(self) -> int:
        """Slots each inbox using or wanting slots may hold."""
        keys = len(self._used.keys() | self._waiting.keys())
        return -(-self.total // max(1, keys))

    def _fits(self, key: Hashable) -> bool:
        return self._in_use < self.total and self._used[key] < self.share()

    async def acquire(self, key: Hashable) -> None:
        """Wait for a slot for `key` (an inbox); in arrival order within the inbox."""
        if key not in self._waiting and self._fits(key):
            self._take(key)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # granted just as we were cancelled: hand it on
            else:
                line = self._waiting.get(key)
                if line is not None and future in line:
                    line.remove(future)
                    if not line:
                        del self._waiting[key]
                self._grant()  # the share may have grown
            raise

    def release(self, key: Hashable) -> None:
        """Give back a slot taken for `key`."""
        self._in_use -= 1
        self._used[key] -= 1
        if self._used[key] <= 0:
            del self._used[key]
        if self._waiting:
            self._grant()

    def _take(self, key: Hashable) -> None:
        self._in_use += 1
        self._used[key] += 1

    def _grant(self) -> None:
        for key in list(self._waiting):
            line = self._waiting[key]
            while line and self._fits(key):
                future = line.popleft()
                if not future.done():
                    self._take(key)
                    future.set_result(None)
            if not line:
                del self._waiting[key]
