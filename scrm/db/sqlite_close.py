"""Close an invalidated SQLite connection without a deadlock (aiosqlite 0.22 with SQLAlchemy's terminate).

When a task using a pooled connection is cancelled, SQLAlchemy invalidates the connection: it starts a
graceful close (aiosqlite's `close()`) in a shielded task and, if the caller is cancelled meanwhile,
force-closes it with `stop()`, which ends the connection's worker thread. aiosqlite's `close()` always ends by
queueing one more `stop()` and waiting for the thread to answer it; after the forced stop the thread is gone,
so that wait never ends. The stuck task then blocks event-loop shutdown forever (a `scrm serve` stopping, a test
tearing down): https://github.com/wapiti-scanner/wapiti/issues/802 describes the same deadlock.

The graceful close here asks the thread once: `stop()` runs after the work already queued, closes the sqlite3
connection and ends the thread, and nothing is queued behind a stop already asked for.
"""

from __future__ import annotations

from typing import Any

_PATCHED = False


async def _graceful_close(adapted: Any) -> None:
    connection = adapted._connection  # aiosqlite.Connection
    if not getattr(connection, "_running", True):
        return  # force-closed already: its worker thread closes the file and stops
    answered = connection.stop()  # queued after the work in hand: a graceful close
    if answered is not None:
        await answered


def install() -> None:
    """Use the close above for every aiosqlite connection SQLAlchemy terminates (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    import aiosqlite
    from sqlalchemy.dialects.sqlite import aiosqlite as dialect

    if not hasattr(aiosqlite.Connection, "stop"):
        return  # an aiosqlite without stop(): SQLAlchemy does not force-close it either
    dialect.AsyncAdapt_aiosqlite_connection._terminate_graceful_close = _graceful_close  # type: ignore[method-assign,assignment]
    _PATCHED = True
