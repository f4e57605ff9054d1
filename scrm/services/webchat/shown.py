"""What one visitor client has been shown: a cursor that also looks back for late commits.

Message ids are drawn before the commit, so a bot reply can commit after a later message was shown.
A reader therefore asks for the rows after its cursor *and* the rows created in the last LATE_COMMIT
(visitors.messages(recent_since=...)), and shows those it has not shown yet. `Shown` keeps the ids of
the recent rows it has shown, so each message is shown once: over a socket it lives in the connection
(the client names the ids of its newest messages when it connects), over long polling it travels as
the opaque `cursor` string the client sends back with its next poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_RECENT = 500  # a longer cursor is refused (a visitor's rows in one LATE_COMMIT window are far fewer)
_MAX_ID = 2**62


class Shown:
    """The highest id shown (`after`) plus the ids shown among the recent rows."""

    __slots__ = ("after", "recent", "seeded")

    def __init__(self, after: int = 0, recent: Iterable[int] | None = None) -> None:
        self.after = after
        self.recent: set[int] = set(recent or ())
        # Without the client's list (a reconnect, a first poll), whatever the client had up to its cursor
        # counts as shown: the first rows read settle which recent ones those were.
        self.seeded = recent is not None

    def take(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of `found` (a read after `after` with the lookback, oldest first) not shown yet;
        from now on they count as shown."""
        if not self.seeded:
            self.seeded = True
            self.recent = {m["id"] for m in found if m["id"] <= self.after}
        items = [m for m in found if m["id"] not in self.recent]
        # Every row of this read is shown now. A recent id missing from it has aged out of the window
        # and is at most `after`: no later read returns it, so it need not be remembered.
        self.recent = {m["id"] for m in found}
        if items:
            self.after = max(self.after, *(m["id"] for m in items))
        return items

    def has(self, message_id: int) -> bool:
        """Was this message shown (recently)? A push about it needs no read."""
        return message_id in self.recent

    def cursor(self) -> str:
        """The long-poll cursor: `after`, then the recent ids shown, dot-separated."""
        return ".".join(str(i) for i in (self.after, *sorted(self.recent)))

    @classmethod
    def parse(cls, cursor: str) -> Shown:
        """A cursor from `cursor()`; ValueError when it is not one."""
        parts = cursor.split(".")
        if len(parts) > MAX_RECENT + 1 or not all(p.isdigit() and len(p) <= 19 for p in parts):
            raise ValueError("not a cursor")
        ids = [int(p) for p in parts]
        if any(i >= _MAX_ID for i in ids):
            raise ValueError("not a cursor")
        return cls(ids[0], ids[1:])
