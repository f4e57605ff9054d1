"""session.get answered from the identity map (scrm/db/sessions.py): the same objects and the same statements
as AsyncSession.get, only without its cost when the session holds the object already."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

from scrm.context import AppContext
from scrm.db.models import ContactTag, Inbox
from scrm.db.sessions import Session, loaded
from tests.conftest import make_inbox


def _counting(ctx: AppContext) -> list[str]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_execute)
    return seen


async def test_sessions_are_the_fast_get_kind(ctx: AppContext) -> None:
    async with ctx.db.session() as s:
        assert isinstance(s, Session)
    async with ctx.db.transaction() as s:
        assert isinstance(s, Session)


async def test_a_held_object_comes_back_without_a_statement_and_a_missing_one_is_read(ctx: AppContext) -> None:
    inbox = await make_inbox(ctx)
    seen = _counting(ctx)
    async with ctx.db.transaction() as s:
        first = await s.get(Inbox, inbox.id)  # not in this session yet: read
        reads = len(seen)
        assert first is not None and first.name == "API" and reads >= 1
        assert await s.get(Inbox, inbox.id) is first  # held: the same object, no statement
        assert len(seen) == reads
        assert await s.get(Inbox, inbox.id + 1000) is None  # missing: asked (and not found)
        assert len(seen) > reads


async def test_locking_refreshing_and_expired_objects_still_go_to_the_database(ctx: AppContext) -> None:
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        held = await s.get(Inbox, inbox.id)
        assert held is not None
        # Renamed behind the ORM's back (a plain statement leaves the held object as it was).
        await s.execute(text("UPDATE inboxes SET name = 'renamed' WHERE id = :id"), {"id": inbox.id})
        assert (await s.get(Inbox, inbox.id)).name == "API"  # held as it was read, like AsyncSession.get
        assert (await s.get(Inbox, inbox.id, populate_existing=True)).name == "renamed"  # a refresh reads
        s.expire(held)
        assert loaded(s, Inbox, inbox.id) is None  # expired: get reloads it with a statement
        assert (await s.get(Inbox, inbox.id)) is held and held.name == "renamed"


async def test_composite_keys_and_odd_identities(ctx: AppContext) -> None:
    inbox = await make_inbox(ctx)
    async with ctx.db.transaction() as s:
        assert loaded(s, Inbox, None) is None
        assert loaded(s, Inbox, {"id": inbox.id}) is None  # a dict identity: the full path
        assert loaded(s, ContactTag, (1,)) is None  # the wrong number of key columns
        held = await s.get(Inbox, inbox.id)
        assert loaded(s, Inbox, (inbox.id,)) is held
        assert loaded(s, ContactTag, (inbox.id, "x")) is None
