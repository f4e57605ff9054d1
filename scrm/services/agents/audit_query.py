"""Reading the audit log: filtered, newest first, and as CSV for export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Agent, AuditLog
from scrm.domain import safe_row

CSV_COLUMNS = ("id", "created_at", "agent_id", "agent", "action", "target_type", "target_id", "data")


@dataclass
class AuditFilter:
    agent_id: int | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("ticket.")
    target_type: str | None = None
    target_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def _conditions(f: AuditFilter) -> list[Any]:
    conds: list[Any] = []
    if f.agent_id is not None:
        conds.append(AuditLog.agent_id == f.agent_id)
    if f.action:
        conds.append(AuditLog.action.startswith(f.action, autoescape=True) if f.action.endswith(".")
                     else AuditLog.action == f.action)
    if f.target_type:
        conds.append(AuditLog.target_type == f.target_type)
    if f.target_id is not None:
        conds.append(AuditLog.target_id == f.target_id)
    if f.since is not None:
        conds.append(AuditLog.created_at >= f.since)
    if f.until is not None:
        conds.append(AuditLog.created_at < f.until)
    return conds


async def query(session: AsyncSession, f: AuditFilter, *, before_id: int | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    """Entries matching `f`, newest first, with the agent's name."""
    conds = _conditions(f)
    if before_id:
        conds.append(AuditLog.id < before_id)
    rows = (await session.execute(
        select(AuditLog, Agent.display_name, Agent.login).outerjoin(Agent, Agent.id == AuditLog.agent_id)
        .where(*conds).order_by(AuditLog.id.desc()).limit(limit))).all()
    return [{"id": a.id, "created_at": a.created_at.isoformat() if a.created_at else None, "agent_id": a.agent_id,
             "agent": name or login, "action": a.action, "target_type": a.target_type, "target_id": a.target_id,
             "data": a.data or {}} for a, name, login in rows]


async def actions(session: AsyncSession) -> list[str]:
    """The action names recorded so far (for the filter's choices)."""
    return sorted((await session.scalars(select(AuditLog.action).distinct())).all())


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Entries as CSV (data as compact JSON); cells that a spreadsheet would run as formulas are quoted."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = [r["id"], r["created_at"], r["agent_id"], r["agent"], r["action"], r["target_type"], r["target_id"],
                  json.dumps(r["data"], ensure_ascii=False, sort_keys=True, default=str)]
        writer.writerow(safe_row("" if v is None else v for v in values))
    return out.getvalue()
