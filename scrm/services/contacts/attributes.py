"""Typed custom contact attributes: definitions (text, number, date, choice) and value validation."""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models_marketing import AttributeDefinition

if TYPE_CHECKING:
    from scrm.db.models import Contact

TYPES = ("text", "number", "date", "choice")
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Keys the application itself writes (ingest attribution, consent, channel preference); usable
# in segments and templates without a definition.
BUILTIN: dict[str, str] = {"source": "text", "preferred_channel": "text", "lifecycle_stage": "text"}


class AttributeError_(ValueError):
    """A definition or a value is invalid; the message says which and why."""


def check_definition(key: str, type_: str, choices: list[Any] | None) -> list[str]:
    """Validate a new definition; returns the normalized choices."""
    if not KEY_RE.match(key):
        raise AttributeError_(f"attribute key {key!r} must be lowercase letters, digits and _ (start with a letter)")
    if key in BUILTIN or key == "consent":
        raise AttributeError_(f"attribute key {key!r} is reserved")
    if type_ not in TYPES:
        raise AttributeError_(f"attribute type must be one of {', '.join(TYPES)}, not {type_!r}")
    clean = [str(c).strip() for c in (choices or []) if str(c).strip()]
    if type_ == "choice" and not clean:
        raise AttributeError_("a choice attribute needs at least one choice")
    if type_ != "choice" and clean:
        raise AttributeError_("only choice attributes take choices")
    return clean


def coerce(type_: str, value: Any, choices: list[Any] | None = None, *, key: str = "value") -> Any:
    """Return `value` as stored for the type (number -> float/int, date -> 'YYYY-MM-DD'), or raise."""
    if type_ == "text":
        if isinstance(value, (dict, list)):
            raise AttributeError_(f"{key}: expected text, got {type(value).__name__}")
        return str(value)
    if type_ == "number":
        if isinstance(value, bool):
            raise AttributeError_(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return value
        try:
            text = str(value).strip().replace(",", "")
            number = float(text)
        except ValueError:
            raise AttributeError_(f"{key}: expected a number, got {value!r}") from None
        return int(number) if number.is_integer() and "." not in text else number
    if type_ == "date":
        try:
            return date.fromisoformat(str(value).strip().replace("/", "-")).isoformat()
        except ValueError:
            raise AttributeError_(f"{key}: expected a date YYYY-MM-DD, got {value!r}") from None
    if type_ == "choice":
        if str(value) not in [str(c) for c in choices or []]:
            raise AttributeError_(f"{key}: {value!r} is not one of {', '.join(map(str, choices or []))}")
        return str(value)
    raise AttributeError_(f"unknown attribute type {type_!r}")


async def definitions(session: AsyncSession) -> dict[str, AttributeDefinition]:
    """All definitions by key."""
    return {d.key: d for d in (await session.scalars(select(AttributeDefinition))).all()}


async def attribute_types(session: AsyncSession) -> dict[str, tuple[str, list[Any]]]:
    """Type (and choices) of every attribute usable in segments and templates."""
    out: dict[str, tuple[str, list[Any]]] = {k: (t, []) for k, t in BUILTIN.items()}
    for d in (await definitions(session)).values():
        out[d.key] = (d.type, list(d.choices or []))
    return out


async def validate_values(session: AsyncSession, values: dict[str, Any]) -> dict[str, Any]:
    """Validate attribute values against their definitions; None removes. Unknown keys are errors."""
    types = await attribute_types(session)
    out: dict[str, Any] = {}
    errors = []
    for key, value in values.items():
        if value is None or value == "":
            out[key] = None
            continue
        if key == "consent":
            if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
                errors.append("consent: expected {channel: true|false}")
                continue
            out[key] = value
            continue
        if key not in types:
            errors.append(f"{key}: no such attribute (define it first)")
            continue
        type_, choices = types[key]
        try:
            out[key] = coerce(type_, value, choices, key=key)
        except AttributeError_ as exc:
            errors.append(str(exc))
    if errors:
        raise AttributeError_("; ".join(errors))
    return out


async def set_values(session: AsyncSession, contact: Contact, values: dict[str, Any]) -> dict[str, Any]:
    """The one write path for a contact's custom attributes (profile edits, the attributes API, imports):
    validate against the definitions, then merge (None removes). Returns {key: {"from", "to"}} of what
    changed; raises AttributeError_ naming every invalid value. The caller audits and emits."""
    typed = await validate_values(session, values)
    attrs = dict(contact.attributes or {})
    changes: dict[str, Any] = {}
    for key, value in typed.items():
        if attrs.get(key) != value:
            changes[key] = {"from": attrs.get(key), "to": value}
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    contact.attributes = attrs
    return changes
