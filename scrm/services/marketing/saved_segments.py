"""Saved segments: a name and rules marketers keep, each change audited (rules checked by compiling them)."""

from __future__ import annotations

from typing import Any

from scrm.db.models_marketing import Segment
from scrm.services.agents import audit
from scrm.services.marketing import segments
from scrm.services.uow import Tx


async def save(tx: Tx, by: int | None, name: str, rules: Any, segment: Segment | None = None) -> Segment:
    """Create a segment or replace one's name and rules; SegmentError when the rules do not compile."""
    await segments.compile_rules(tx.session, rules)
    if segment is None:
        segment = Segment(name=name, rules=rules, created_by=by)
        tx.session.add(segment)
        await tx.session.flush()
        audit.record(tx, by, "segment.create", "segment", segment.id, name=name)
    else:
        segment.name, segment.rules = name, rules
        audit.record(tx, by, "segment.update", "segment", segment.id)
    return segment


async def delete(tx: Tx, by: int | None, segment: Segment) -> None:
    """Remove a saved segment (broadcasts keep the snapshot they took when they started)."""
    await tx.session.delete(segment)
    audit.record(tx, by, "segment.delete", "segment", segment.id)
