"""What a database error means for the caller, told by its cause rather than by SQLAlchemy's wrapper class.

SQLAlchemy wraps every driver error in a few classes (DBAPIError, OperationalError, InterfaceError)
whose names say little: asyncpg's "the database system is starting up" (CannotConnectNowError,
SQLSTATE 57P03) arrives as a plain DBAPIError, and a client-side "value out of int64 range" as an
InterfaceError. Here the chain of causes is walked and the original error decides:

- `UNAVAILABLE`: the database cannot serve now (down, starting, shutting down, restarting, out of
  connections, a dropped connection, SQLite's file locked past its busy timeout): answer 503 with
  Retry-After, the sender retries and nothing is lost;
- `BAD_INPUT`: the database refused a value the request carried (SQLSTATE class 22, a number out
  of range, text it cannot encode): answer 400, retrying would not help;
- `None`: anything else is a bug, answered 500 and logged with its traceback.

A plain OSError anywhere in the chain (a refused or reset socket, a timeout) counts as unavailable.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from scrm.db.database import DatabaseUnavailable

Kind = Literal["unavailable", "bad_input"]
UNAVAILABLE: Kind = "unavailable"
BAD_INPUT: Kind = "bad_input"

# SQLSTATEs of a server that cannot serve now: class 08 (connection exceptions) and these.
_UNAVAILABLE_STATES = {
    "57P01",  # admin_shutdown: terminating connection due to administrator command
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the database system is starting up / shutting down / in recovery
    "53300",  # too_many_connections
    "53000",  # insufficient_resources
    "58000",  # system_error (I/O error on the server)
}
_SQLITE_UNAVAILABLE = ("database is locked", "database table is locked", "unable to open database file",
                       "disk i/o error", "database or disk is full")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (`.orig`) and what caused it, each once."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return seen


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def classify(exc: BaseException) -> Kind | None:
    """UNAVAILABLE, BAD_INPUT or None (a bug) for an error raised while using the database."""
    chain = _chain(exc)
    for item in chain:
        if getattr(item, "connection_invalidated", False) or isinstance(item, DisconnectionError | PoolTimeoutError):
            return UNAVAILABLE
        state = _sqlstate(item)
        if state and (state.startswith("08") or state in _UNAVAILABLE_STATES):
            return UNAVAILABLE
        if _is_connection_class(item):
            return UNAVAILABLE
        if isinstance(item, sqlite3.OperationalError) and str(item).lower().startswith(_SQLITE_UNAVAILABLE):
            return UNAVAILABLE
    for item in chain:
        state = _sqlstate(item)
        if state and state.startswith("22"):
            return BAD_INPUT
        if isinstance(item, UnicodeEncodeError | OverflowError) and _from_database(exc):
            return BAD_INPUT
    # A refused or dropped socket, a connect timeout: the server is not there (or not reachable).
    if any(isinstance(item, OSError | DatabaseUnavailable) for item in chain):
        return UNAVAILABLE
    return None


def _is_connection_class(item: BaseException) -> bool:
    try:
        import asyncpg.exceptions as pg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(item, pg.PostgresConnectionError | pg.CannotConnectNowError | pg.ConnectionDoesNotExistError
                      | pg.AdminShutdownError | pg.CrashShutdownError | pg.TooManyConnectionsError)


def _from_database(exc: BaseException) -> bool:
    """Whether the error was raised inside SQLAlchemy or a database driver (sqlite3 raises a plain
    OverflowError for an integer beyond 64 bits), not by some other code."""
    for item in _chain(exc):
        if isinstance(item, DBAPIError):
            return True
        tb = item.__traceback__
        while tb is not None:
            if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
                return True
            tb = tb.tb_next
    return False


_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")
