"""Close an invalidated SQLite connection without a deadlock (aiosqlite 0.22 with SQLAlchemy's terminate).

When a task using a pooled connection is cancelled, SQLAlchemy invalidates the connection: it starts a
graceful close (aiosqlite's `close()`) in a shielded task and, if the caller is cancelled meanwhile,
force-closes it with `stop()`, which ends the connection's worker thread. aiosqlite's `close()` always ends by
queueing one more `stop()` and waiting for the thread to answer it; after the forced stop the thread is gone,
so that wait never ends. The stuck task then blocks event-loop shutdown forever (a `scrm serve` stopping, a test
tearing down): https://github.com/wapiti-scanner/wapiti/issues/802 describes the same deadlock.

The graceful close here asks the thread once: `stop()` runs after the work already queued, closes the sqlite3
connection and ends the thread, and nothing is queued behind a stop already asked for.

Both closes roll back first, on the connection's thread. A task cancelled mid-transaction still references its
cursor (from its traceback, which the cancelled task keeps), and sqlite3's close of a connection with a statement
not yet finalized leaves a "zombie" that keeps its transaction, and SQLite's write lock, until that cursor is
freed: every other writer then waited out busy_timeout and failed with "database is locked" (CI:
test_a_crash_reports_unknown_only_for_what_was_being_sent). A rollback ends the transaction whatever statements
are still open.
"""

from __future__ import annotations

import asyncio
from typing import Any

_PATCHED = False


def _roll_back(connection: Any) -> None:
    """On the connection's thread, just before its close: end the transaction it may hold."""
    raw = connection._connection  # sqlite3.Connection, None once closed
    if raw is not None and raw.in_transaction:
        raw.rollback()


def _roll_back_and_stop(connection: Any) -> asyncio.Future[Any] | None:
    """aiosqlite's stop() (close the file, end the thread), with a rollback queued just before it."""
    queue = getattr(connection, "_tx", None)
    if queue is not None and getattr(connection, "_running", True) and connection._connection is not None:
        queue.put_nowait((None, lambda: _roll_back(connection)))  # its error, if any, is dropped by the thread
    answered: asyncio.Future[Any] | None = connection.stop()
    return answered


async def _graceful_close(adapted: Any) -> None:
    connection = adapted._connection  # aiosqlite.Connection
    if not getattr(connection, "_running", True):
        return  # force-closed already: its worker thread closes the file and stops
    answered = _roll_back_and_stop(connection)  # queued after the work in hand: a graceful close
    if answered is not None:
        await answered


def _force_close(adapted: Any) -> None:
    _roll_back_and_stop(adapted._connection)


def install() -> None:
    """Use the closes above for every aiosqlite connection SQLAlchemy terminates (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    import aiosqlite
    from sqlalchemy.dialects.sqlite import aiosqlite as dialect

    if not hasattr(aiosqlite.Connection, "stop"):
        return  # an aiosqlite without stop(): SQLAlchemy does not force-close it either
    dialect.AsyncAdapt_aiosqlite_connection._terminate_graceful_close = _graceful_close  # type: ignore[method-assign,assignment]
    dialect.AsyncAdapt_aiosqlite_connection._terminate_force_close = _force_close  # type: ignore[method-assign,assignment]
    _PATCHED = True
