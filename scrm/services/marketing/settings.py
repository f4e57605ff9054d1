"""Marketing settings admins edit at run time: the conversion attribution window and the churn-risk rules.

Stored as the "marketing" row of desk_settings (shared by every process); defaults apply until saved.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models_desk import DeskSetting

KEY = "marketing"


class ChurnWeights(BaseModel):
    """Points each rule adds to a contact's churn risk (the score is capped at 100)."""

    model_config = ConfigDict(extra="forbid")
    silent: int = Field(35, ge=0, le=100)  # no message from the contact for `silent_days`
    fading: int = Field(20, ge=0, le=100)  # fewer messages in the last period than in the one before
    unanswered: int = Field(15, ge=0, le=100)  # their last message is still waiting for an answer
    low_csat: int = Field(20, ge=0, le=100)  # they rated us 1 or 2 recently
    open_tickets: int = Field(10, ge=0, le=100)  # per open ticket, at most twice
    opted_out: int = Field(25, ge=0, le=100)  # they opted out of broadcasts on a channel


class ChurnSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: ChurnWeights = Field(default_factory=ChurnWeights)
    threshold: int = Field(60, ge=1, le=100)  # at or over it a contact is "at risk"
    silent_days: int = Field(30, ge=1, le=365)
    period_days: int = Field(30, ge=1, le=180)  # frequency: this period against the one before it
    unanswered_hours: int = Field(24, ge=1, le=24 * 30)
    csat_days: int = Field(90, ge=1, le=365)


class MarketingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversion_window_days: int = Field(7, ge=1, le=90)  # a conversion counts for a touch this recent
    churn: ChurnSettings = Field(default_factory=ChurnSettings)


def validate(value: Any) -> MarketingSettings:
    """Check settings; raises ValueError naming the field at fault."""
    try:
        return MarketingSettings.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None


async def load(session: AsyncSession) -> MarketingSettings:
    """The settings with defaults applied."""
    row = await session.get(DeskSetting, KEY)
    return MarketingSettings.model_validate(dict(row.value) if row else {})


async def save(session: AsyncSession, value: Any) -> MarketingSettings:
    """Validate and store the settings."""
    clean = validate(value)
    row = await session.get(DeskSetting, KEY)
    if row is None:
        session.add(DeskSetting(key=KEY, value=clean.model_dump()))
    else:
        row.value = clean.model_dump()
    return clean
