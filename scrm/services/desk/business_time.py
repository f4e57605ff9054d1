"""Business-time arithmetic on top of bot_flows' BusinessHours (pure functions, no I/O).

SLA targets count only working time: a 4-hour target set on Friday 17:00 with 09:00-18:00 hours
falls due on Monday 12:00, and a public holiday in between is skipped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot_flows.conditions import BusinessHours

DEFAULT_HOURS: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "weekly": {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": [],
    "special_days": {},
}
# A calendar with no working time at all would make every due time infinite; cap the search.
MAX_DAYS = 800


def hours_from_config(cfg: Mapping[str, Any] | None) -> BusinessHours:
    """BusinessHours from a stored config (the default Mon-Fri 09:00-18:00 Asia/Shanghai when empty)."""
    # Parsed once per distinct config: the bot and the SLA clocks ask for every customer message.
    try:
        key = json.dumps(cfg or DEFAULT_HOURS, sort_keys=True)
    except TypeError:  # not a stored (JSON) config, e.g. dates as keys: parsed as it is
        return BusinessHours.from_config(cfg or DEFAULT_HOURS)
    return _parsed(key)


@functools.lru_cache(maxsize=32)
def _parsed(config: str) -> BusinessHours:
    return BusinessHours.from_config(json.loads(config))  # frozen: safe to share


def _spans(hours: BusinessHours, day: date) -> tuple[tuple[int, int], ...]:
    return hours._spans(day)  # noqa: SLF001 - the one place that needs the per-day intervals


def _intervals(hours: BusinessHours, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
    """Working intervals (aware UTC) of the local days first..last inclusive."""
    zone = ZoneInfo(hours.tz)
    day = first
    while day <= last:
        for start, end in _spans(hours, day):
            a = datetime.combine(day, time(start // 60, start % 60), tzinfo=zone)
            b = (datetime.combine(day, time(0), tzinfo=zone) + timedelta(days=1) if end == 24 * 60
                 else datetime.combine(day, time(end // 60, end % 60), tzinfo=zone))
            yield a.astimezone(UTC), b.astimezone(UTC)
        day += timedelta(days=1)


def business_seconds(hours: BusinessHours | None, start: datetime, end: datetime) -> float:
    """Working seconds between two aware datetimes (calendar seconds when `hours` is None); 0 if end <= start."""
    if end <= start:
        return 0.0
    if hours is None:
        return (end - start).total_seconds()
    zone = ZoneInfo(hours.tz)
    total = 0.0
    for a, b in _intervals(hours, start.astimezone(zone).date(), end.astimezone(zone).date()):
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def add_business_seconds(hours: BusinessHours | None, start: datetime, seconds: float) -> datetime:
    """The moment `seconds` of working time after `start` (calendar time when `hours` is None)."""
    if hours is None:
        return start + timedelta(seconds=max(seconds, 0))
    zone = ZoneInfo(hours.tz)
    day = start.astimezone(zone).date()
    left = max(float(seconds), 0.0)
    for offset in range(MAX_DAYS):
        current = day + timedelta(days=offset)
        for a, b in _intervals(hours, current, current):
            lo = max(a, start)
            if b <= lo:
                continue
            available = (b - lo).total_seconds()
            if left <= available:
                return lo + timedelta(seconds=left)
            left -= available
    raise ValueError("the business hours have no working time in the next two years")


def validate_hours_config(cfg: Mapping[str, Any]) -> BusinessHours:
    """Parse and check a business-hours config; raises ValueError naming the bad key."""
    if not isinstance(cfg, Mapping):
        raise ValueError("business_hours must be an object")
    unknown = set(cfg) - {"timezone", "weekly", "holidays", "special_days"}
    if unknown:
        raise ValueError(f"business_hours: unknown field(s) {sorted(unknown)}")
    try:
        hours = BusinessHours.from_config(cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"business_hours: {exc}") from None
    except Exception as exc:  # ZoneInfoNotFoundError and friends
        raise ValueError(f"business_hours: unknown time zone {cfg.get('timezone')!r}") from exc
    if not any(hours.weekly.values()) and not any(hours.special_days.values()):
        raise ValueError("business_hours: no working time at all (every day is closed)")
    return hours
