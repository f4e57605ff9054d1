"""Definitions of custom contact attributes admins manage: define, rename or change choices, delete.

The type of a definition never changes (stored values were checked against it); deleting a definition
leaves the stored values on contacts."""

from __future__ import annotations

from sqlalchemy import select

from scrm.db.models_marketing import AttributeDefinition
from scrm.services.agents import audit
from scrm.services.contacts.attributes import AttributeError_, check_definition
from scrm.services.uow import Tx


class DefinitionExists(AttributeError_):
    """A definition with this key exists already."""


async def define(tx: Tx, by: int | None, key: str, label: str, type_: str,
                 choices: list[str] | None) -> AttributeDefinition:
    """A new typed attribute (AttributeError_ on a bad key/type/choices, DefinitionExists on a taken key)."""
    checked = check_definition(key, type_, choices)
    if await tx.session.scalar(select(AttributeDefinition).where(AttributeDefinition.key == key)):
        raise DefinitionExists(f"attribute {key!r} already exists")
    d = AttributeDefinition(key=key, label=label, type=type_, choices=checked)
    tx.session.add(d)
    await tx.session.flush()
    audit.record(tx, by, "attribute.define", "attribute", d.id, key=d.key, type=d.type)
    return d


async def update(tx: Tx, by: int | None, definition_id: int, label: str | None,
                 choices: list[str] | None) -> AttributeDefinition | None:
    """Rename or change the choices; None when there is no such definition."""
    d = await tx.session.get(AttributeDefinition, definition_id)
    if d is None:
        return None
    if label:
        d.label = label
    if choices is not None:
        d.choices = check_definition(d.key, d.type, choices)
    audit.record(tx, by, "attribute.update", "attribute", d.id, key=d.key)
    return d


async def delete(tx: Tx, by: int | None, definition_id: int) -> bool:
    """Remove a definition; False when there is none."""
    d = await tx.session.get(AttributeDefinition, definition_id)
    if d is None:
        return False
    await tx.session.delete(d)
    audit.record(tx, by, "attribute.delete", "attribute", d.id, key=d.key)
    return True
