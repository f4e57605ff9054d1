"""The consumer batch's facts (event_batch.py): read once for the batch, dropped as soon as the batch writes
the table they come from, so a listener later in the batch never decides on a stale fact."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from scrm.db.database import batch_fact
from scrm.db.models import Contact, ContactTag
from scrm.event_batch import hold_back_conversation_writes


async def _contact(ctx: Any) -> int:
    async with ctx.db.transaction() as s:
        contact = Contact(name="c", attributes={})
        s.add(contact)
        await s.flush()
        return contact.id


async def test_a_fact_is_dropped_when_the_batch_adds_a_row_to_its_table(ctx) -> None:
    contact_id = await _contact(ctx)
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.facts |= {"contact_tags": {contact_id: []}, "tickets_waiting": {1: False}}
        assert batch_fact(shared.session, "contact_tags") == {contact_id: []}
        shared.session.add(ContactTag(contact_id=contact_id, tag="vip"))
        await shared.session.flush()
        assert batch_fact(shared.session, "contact_tags") is None  # the reader asks the database again
        assert batch_fact(shared.session, "tickets_waiting") == {1: False}  # another table's fact stays


async def test_a_fact_is_dropped_when_the_batch_deletes_from_its_table_with_a_statement(ctx) -> None:
    contact_id = await _contact(ctx)
    async with ctx.db.shared_transaction() as shared:
        hold_back_conversation_writes(shared)
        shared.facts["contact_tags"] = {contact_id: ["vip"]}
        await shared.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id))
        assert batch_fact(shared.session, "contact_tags") is None


async def test_outside_a_batch_there_is_no_fact(ctx) -> None:
    async with ctx.db.session() as s:
        assert batch_fact(s, "contact_tags") is None
