"""Desk-wide settings stored in the database (editable by admins at run time, shared by every process)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from bot_flows.conditions import BusinessHours
from scrm.db.models_desk import DeskSetting
from scrm.services.desk.business_time import DEFAULT_HOURS, hours_from_config, validate_hours_config


class CsatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    only_when_human: bool = False  # skip conversations the bot resolved alone
    answer_hours: int = Field(72, ge=1, le=24 * 30)  # replies "1".."5" count for this long
    question_zh: str = "请为本次服务打分（1-5 分，5 分最满意）："
    question_en: str = "How would you rate our service? (1 = poor, 5 = excellent)"
    thanks: str = "感谢您的评价！/ Thank you for your feedback!"


TEMPLATE_CHANNELS = ("wechat_oa",)  # channels whose adapter sends template messages
# What a ticket-update template field can be filled with (see ticket_workflow.template_values).
TICKET_TEMPLATE_VALUES = ("text", "text_en", "number", "subject", "status", "status_en", "updated_at")


class TicketTemplate(BaseModel):
    """A WeChat template message for ticket updates, sent when the 48 h customer-service window is closed.

    `fields` maps a field of the template as approved in the WeChat console ("first", "keyword1",
    "remark", ...) to a ticket value: text (the notice in Chinese), text_en, number ("#1042"),
    subject, status (中文), status_en, updated_at (local time).
    """

    model_config = ConfigDict(extra="forbid")
    template_id: str = Field(min_length=1, max_length=128)
    fields: dict[str, str] = Field(default_factory=lambda: {"first": "text", "keyword1": "number", "keyword2": "status"})
    url: str | None = Field(None, max_length=1000)  # opened when the customer taps the notice

    @field_validator("fields")
    @classmethod
    def _known_values(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("map at least one template field to a ticket value")
        for name, value in v.items():
            if not name or len(name) > 64:
                raise ValueError(f"template field name {name!r} must be 1-64 characters")
            if value not in TICKET_TEMPLATE_VALUES:
                raise ValueError(f"template field {name!r}: unknown value {value!r}; use one of "
                                 + ", ".join(TICKET_TEMPLATE_VALUES))
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("https://", "http://")):
            raise ValueError("must start with http:// or https://")
        return v or None


class TicketSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reopen_hours: int = Field(72, ge=0, le=24 * 90)  # a solved ticket reopens when the customer writes within
    notify_customer: bool = True
    # Inbox id -> template for ticket updates outside WeChat's reply window (template ids belong to
    # one official account, so each inbox names its own). Without one the change is noted in the thread.
    wechat_templates: dict[str, TicketTemplate] = Field(default_factory=dict)

    @field_validator("wechat_templates")
    @classmethod
    def _inbox_ids(cls, v: dict[str, TicketTemplate]) -> dict[str, TicketTemplate]:
        bad = [k for k in v if not k.isdigit()]
        if bad:
            raise ValueError(f"keys must be inbox ids, got {bad[0]!r}")
        return v


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
    if key == "tickets":
        await _check_template_inboxes(session, clean["wechat_templates"])
    row = await session.get(DeskSetting, key)
    if row is None:
        session.add(DeskSetting(key=key, value=clean))
    else:
        row.value = clean
    _cache.pop(key, None)
    return clean


async def _check_template_inboxes(session: AsyncSession, templates: dict[str, Any]) -> None:
    from sqlalchemy import select

    from scrm.db.models import Inbox

    if not templates:
        return
    ids = [int(k) for k in templates]
    found = dict((await session.execute(select(Inbox.id, Inbox.channel_type).where(Inbox.id.in_(ids)))).all())
    for inbox_id in ids:
        if inbox_id not in found:
            raise ValueError(f"tickets.wechat_templates.{inbox_id}: no inbox with this id")
        if found[inbox_id] not in TEMPLATE_CHANNELS:
            raise ValueError(f"tickets.wechat_templates.{inbox_id}: inbox is a {found[inbox_id]} inbox; "
                             "template messages exist only on WeChat official accounts (wechat_oa)")


_hours: list[Any] = [None, None]  # the cached section last parsed, and its hours (asked for every customer message)


async def business_hours(session: AsyncSession) -> BusinessHours:
    """The desk's business hours (default Mon-Fri 09:00-18:00 Asia/Shanghai)."""
    section = await get_section(session, "business_hours")
    if _hours[0] is not section:  # the same cached section: parsed already (no key to build for the parse cache)
        _hours[:] = [section, hours_from_config(section)]
    hours: BusinessHours = _hours[1]
    return hours


def clear_cache() -> None:
    """Forget cached sections (tests)."""
    _cache.clear()
