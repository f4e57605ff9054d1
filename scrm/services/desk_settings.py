"""Desk-wide settings stored in the database (editable by admins at run time, shared by every process)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from bot_flows.conditions import BusinessHours
from scrm.db.models_desk import DeskSetting
from scrm.services.business_time import DEFAULT_HOURS, hours_from_config, validate_hours_config


class CsatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    only_when_human: bool = False  # skip conversations the bot resolved alone
    answer_hours: int = Field(72, ge=1, le=24 * 30)  # replies "1".."5" count for this long
    question_zh: str = "请为本次服务打分（1-5 分，5 分最满意）："
    question_en: str = "How would you rate our service? (1 = poor, 5 = excellent)"
    thanks: str = "感谢您的评价！/ Thank you for your feedback!"


class TicketSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reopen_hours: int = Field(72, ge=0, le=24 * 90)  # a solved ticket reopens when the customer writes within
    notify_customer: bool = True


SECTIONS: dict[str, type[BaseModel] | None] = {"business_hours": None, "csat": CsatSettings, "tickets": TicketSettings}
_cache: dict[str, tuple[float, dict[str, Any]]] = {}
TTL = 5.0  # seconds other processes may see a stale value after an admin edit


def validate_section(key: str, value: Any) -> dict[str, Any]:
    """Check a settings section; raises ValueError with the field at fault."""
    if key not in SECTIONS:
        raise ValueError(f"unknown settings section {key!r}; use one of {sorted(SECTIONS)}")
    model = SECTIONS[key]
    if model is None:
        validate_hours_config(value)
        return dict(value)
    try:
        return model.model_validate(value).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{key}.{where}: {first['msg']}") from None


async def get_section(session: AsyncSession, key: str) -> dict[str, Any]:
    """A settings section with defaults applied (cached briefly)."""
    hit = _cache.get(key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    row = await session.get(DeskSetting, key)
    stored = dict(row.value) if row else {}
    model = SECTIONS.get(key)
    value = (stored or dict(DEFAULT_HOURS)) if model is None else model.model_validate(stored).model_dump()
    _cache[key] = (time.monotonic() + TTL, value)
    return value


async def set_section(session: AsyncSession, key: str, value: Any) -> dict[str, Any]:
    """Validate and store a section."""
    clean = validate_section(key, value)
    row = await session.get(DeskSetting, key)
    if row is None:
        session.add(DeskSetting(key=key, value=clean))
    else:
        row.value = clean
    _cache.pop(key, None)
    return clean


async def business_hours(session: AsyncSession) -> BusinessHours:
    """The desk's business hours (default Mon-Fri 09:00-18:00 Asia/Shanghai)."""
    return hours_from_config(await get_section(session, "business_hours"))


def clear_cache() -> None:
    """Forget cached sections (tests)."""
    _cache.clear()
