"""How many deliveries one outbox worker keeps claimed per inbox, and when it claims more.

A rate-limited inbox is claimed for about CLAIM_HORIZON seconds of its paced rate, from its own queue:
enough that its line never runs dry between two claims, not so much that it hoards rows another
worker could send. (Claims used to take the oldest rows across all inboxes up to the worker's
concurrency, so a 30/s channel held as many rows as a 300/s one, mostly waiting for their turn,
while the 300/s line ran short.) An inbox without a rate limit may hold the worker's concurrency and
a little more. An inbox is topped up once REFILL_SHARE of its budget has left, so claims come in
batches, not one per finished send; one whose due rows a claim took to the last (or found none) is
not claimed for again until new work is announced for it, an outcome finds a row of its contact waiting
behind it, or the poll interval passes: a claim that would find nothing is not made.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

CLAIM_HORIZON = 0.5  # seconds of an inbox's paced rate a worker keeps claimed
REFILL_SHARE = 0.25
# An inbox without a rate limit whose channel drops repeats by our idempotency key (the API channel's
# callbacks) may hold this many times the worker's concurrency, every one marked `sending` as it is claimed
# or handed over by a consumer batch: they wait for a send slot in memory rather than in the queue, where
# each one left over cost a claim transaction later, and often one more to mark it `sending` (at 400
# replies/s three of four bot replies took that way, bench/bot_reply.py). A kill -9 leaves them `sending`:
# resent with the same idempotency key, which the receiver drops if it had it (recovery.py).
RESENDABLE_AHEAD = 4


class ClaimBudget:
    """One worker's claimed-and-unfinished deliveries by inbox, and what it may claim next."""

    def __init__(self, concurrency: int, min_claim: int) -> None:
        self.concurrency = concurrency
        self.min_claim = min_claim
        self.rates: dict[int, float] = {}  # inbox -> paced sends per second (0: no limit), once known
        self.resendable: set[int] = set()  # inboxes without a rate limit, sending idempotently (RESENDABLE_AHEAD)
        self.inboxes: set[int] = set()  # every inbox, as of the worker's last look
        self.held: Counter[int] = Counter()
        self._ids: set[int] = set()
        # Inboxes whose last claim took every due row there was: not claimed for again until new work
        # is announced or the poll interval passes.
        self._drained: set[int] = set()

    def budget(self, inbox_id: int) -> int:
        rate = self.rates.get(inbox_id)
        if rate is None:  # not paced yet: a few rows, until its first delivery tells its rate
            return self.min_claim
        if rate <= 0:
            if inbox_id in self.resendable:
                return RESENDABLE_AHEAD * self.concurrency
            return self.concurrency + self.min_claim
        return max(self.min_claim, math.ceil(rate * CLAIM_HORIZON))

    def _extra(self, inbox_id: int) -> int:
        """The room a resendable inbox has beyond an ordinary one: for replies only. A broadcast's deliveries
        claimed ahead are marked `sending` and go out even if the broadcast is paused meanwhile (pause holds
        the queued ones), so they keep to the ordinary room."""
        if inbox_id not in self.resendable:
            return 0
        return max(0, self.budget(inbox_id) - (self.concurrency + self.min_claim))

    def room(self, inbox_id: int) -> int:
        return self.budget(inbox_id) - self.held[inbox_id]

    def _step(self, inbox_id: int) -> int:
        return max(1, math.ceil(self.budget(inbox_id) * REFILL_SHARE))

    def _wants(self, inbox_id: int) -> bool:
        return inbox_id not in self._drained and self.room(inbox_id) >= self._step(inbox_id)

    def wants_claim(self) -> bool:
        """Whether a claim is due: an inbox that may have work (not drained) is down to its refill step
        (one holding nothing always is). With every inbox drained a claim would find nothing."""
        return any(self._wants(i) for i in self._all())

    def wanted(self) -> dict[int, int]:
        """Inboxes due a claim, with the room each has."""
        return {i: self.room(i) for i in self._all() if self._wants(i)}

    def _all(self) -> set[int]:
        return self.inboxes | self.rates.keys() | self.held.keys()

    def undrain(self, inbox_id: int | None = None) -> None:
        """Claim for an inbox (new work was announced for it), or all (the poll interval passed), again."""
        if inbox_id is not None:
            self._drained.discard(inbox_id)
            return
        self._drained.clear()

    def pick(self, rows: Sequence[Any], limit: int, complete: Iterable[int] = ()) -> list[int]:
        """Ids of the claimable rows, oldest first, within each inbox's room and `limit` in all.

        `complete`: inboxes all of whose claimable rows are among `rows`; those left with room once their
        rows are picked are drained. (A row waiting behind an earlier row of its ordering key is not among
        them: the worker claims for its inbox again when that row's outcome finds it waiting.)
        """
        room: dict[int, int] = {}
        picked: list[int] = []
        skipped: set[int] = set()
        for row in sorted(rows, key=lambda r: r.id):
            inbox = row.inbox_id
            if inbox not in room:
                room[inbox] = self.room(inbox)
            if room[inbox] <= 0:
                continue
            if getattr(row, "kind", None) == "broadcast" and room[inbox] <= self._extra(inbox):
                skipped.add(inbox)  # left queued: a paused broadcast holds it (not drained)
                continue
            if len(picked) >= limit:
                skipped.add(inbox)  # rows were left over: it is not drained
                continue
            picked.append(row.id)
            room[inbox] -= 1
        for inbox in complete:
            if inbox not in skipped and room.get(inbox, self.room(inbox)) > 0:
                self._drained.add(inbox)
        return picked

    def add(self, delivery: Any) -> None:
        self._ids.add(delivery.id)
        self.held[delivery.inbox_id] += 1

    def release(self, delivery: Any) -> bool:
        """Forget a finished delivery; True when this makes a claim due."""
        if delivery.id not in self._ids:
            return False
        self._ids.discard(delivery.id)
        self.held[delivery.inbox_id] -= 1
        if self.held[delivery.inbox_id] <= 0:
            del self.held[delivery.inbox_id]
        return self._wants(delivery.inbox_id)
