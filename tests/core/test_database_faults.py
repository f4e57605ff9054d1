"""While the database cannot serve, senders get 503 + Retry-After (they retry), never 500.

The errors are told by their cause (scrm/db/errors.py); the real-process test restarts a scratch
PostgreSQL cluster of its own while requests flow, through its "starting up" window (57P03).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from channels import signing
from scrm.bootstrap import build_context
from scrm.db.database import DatabaseUnavailable
from scrm.db.errors import BAD_INPUT, UNAVAILABLE, classify
from scrm.db.migrate import upgrade
from scrm.db.models import Inbox, Message
from scrm.settings import load_settings
from scrm.web.app import create_app
from tests.conftest import TEST_SECRET_KEY, api_message
from tests.scratch import ScratchPostgres

SECRET = "s" * 32


def _wrapped(exc: BaseException, cls: type[DBAPIError] = DBAPIError) -> DBAPIError:
    """The error as SQLAlchemy hands it to a handler: a wrapper whose `orig` was raised from the driver's."""
    class AdaptError(Exception):
        pass

    adapted = AdaptError(str(exc))
    adapted.sqlstate = getattr(exc, "sqlstate", None)  # type: ignore[attr-defined]
    adapted.__cause__ = exc
    return cls("SELECT 1", {}, adapted)


@pytest.mark.parametrize("exc", [
    _wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
    _wrapped(asyncpg.AdminShutdownError("terminating connection due to administrator command")),
    _wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")),
    _wrapped(asyncpg.TooManyConnectionsError("sorry, too many clients already")),
    _wrapped(asyncpg.exceptions.ConnectionFailureError("connection failure")),
    _wrapped(sqlite3.OperationalError("database is locked"), OperationalError),
    ConnectionRefusedError(111, "Connection refused"),
    DatabaseUnavailable("ping failed"),
], ids=["57P03_starting_up", "57P01_admin_shutdown", "08003_gone", "53300_too_many", "08006_failure",
        "sqlite_locked", "refused", "ping"])
def test_errors_of_a_database_that_cannot_serve_now_are_unavailable(exc):
    assert classify(exc) == UNAVAILABLE


@pytest.mark.parametrize("exc", [
    _wrapped(asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00")),
    _wrapped(asyncpg.exceptions.NumericValueOutOfRangeError("value out of range")),
    _wrapped(asyncpg.exceptions.DatetimeFieldOverflowError("date/time field value out of range")),
], ids=["22021_nul", "22003_range", "22008_datetime"])
def test_values_the_database_refuses_are_bad_input(exc):
    assert classify(exc) == BAD_INPUT


@pytest.mark.parametrize("exc", [
    _wrapped(asyncpg.exceptions.UndefinedTableError("relation does not exist"), ProgrammingError),
    IntegrityError("INSERT", {}, Exception("duplicate key")),
    _wrapped(sqlite3.OperationalError("no such table: x"), OperationalError),
    KeyError("bug"),
], ids=["undefined_table", "integrity", "sqlite_no_table", "bug"])
def test_everything_else_is_a_bug(exc):
    assert classify(exc) is None


async def test_a_value_out_of_range_in_a_query_is_a_400_on_either_backend(ctx):
    """The database itself refuses the value (the request layer would normally catch it first)."""
    with pytest.raises(Exception) as caught:
        async with ctx.db.session() as s:
            await s.execute(text("SELECT id FROM inboxes WHERE id = :id"), {"id": 2**70})
    assert classify(caught.value) == BAD_INPUT


@pytest.mark.slow
@pytest.mark.skipif(not ScratchPostgres.available(), reason="needs initdb/pg_ctl and root or the postgres user")
async def test_503_not_500_while_postgresql_restarts_and_starts_up(aiohttp_client, tmp_path):
    pg = ScratchPostgres()
    pg.init()
    pg.start()
    ctx = None
    try:
        await upgrade(pg.url)
        settings = load_settings(env={}, overrides={"database": {"url": pg.url, "auto_migrate": False, "pool_size": 4},
                                                    "storage": {"path": str(tmp_path / "files")},
                                                    "security": {"secret_key": TEST_SECRET_KEY}})
        ctx = await build_context(settings)
        async with ctx.db.transaction() as s:
            inbox = Inbox(name="API", channel_type="api", settings={}, secrets={"secret": SECRET})
            s.add(inbox)
            await s.flush()
        client = await aiohttp_client(create_app(settings, ctx=ctx, run_background=False))
        answers: list[tuple[float, int, str | None, str]] = []  # (at, status, Retry-After, message id)
        stop = asyncio.Event()

        async def sender(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                mid = f"s{n}-{i}"
                body = json.dumps(api_message(mid, sender=f"u{n}")).encode()
                try:
                    resp = await client.post(f"/webhooks/api/{inbox.id}", data=body,
                                             headers=signing.signed_headers(SECRET, body))
                    answers.append((time.monotonic(), resp.status, resp.headers.get("Retry-After"), mid))
                    await resp.read()
                except Exception as exc:  # noqa: BLE001 - a dropped connection would be a failure too
                    answers.append((time.monotonic(), -1, None, f"{mid}: {exc!r}"))
                await asyncio.sleep(0.005)

        senders = [asyncio.create_task(sender(n)) for n in range(4)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg.stop, "fast")  # requests in flight lose their connections
        await asyncio.sleep(0.3)
        await asyncio.to_thread(pg.start_in_recovery)  # "the database system is starting up"
        starting = time.monotonic()
        with pytest.raises(asyncpg.CannotConnectNowError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
        await asyncio.sleep(1.5)
        started = time.monotonic()
        await asyncio.to_thread(pg.promote)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(pg.stop, "immediate")  # a crash: recovery on the next start
        await asyncio.to_thread(pg.start)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*senders)

        statuses = {status for _, status, _, _ in answers}
        assert statuses <= {200, 503}, sorted(statuses)
        assert all(after == "5" for _, status, after, _ in answers if status == 503)
        during_startup = [status for at, status, _, _ in answers if starting <= at <= started]
        assert during_startup and set(during_startup) == {503}
        assert answers[-1][1] == 200  # and it recovers by itself
        acknowledged = {mid for _, status, _, mid in answers if status == 200}
        async with ctx.db.session() as s:
            stored = set((await s.scalars(select(Message.external_id).where(Message.direction == "in"))).all())
        assert acknowledged <= stored  # nothing acknowledged was lost
    finally:
        if ctx is not None:
            await ctx.close()
        await asyncio.to_thread(pg.close)
