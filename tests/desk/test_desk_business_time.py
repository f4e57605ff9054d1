"""Business-time arithmetic: SLA clocks stop at night, on weekends and on public holidays."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from scrm.services.desk.business_time import (
    add_business_seconds,
    business_seconds,
    hours_from_config,
    validate_hours_config,
)

SH = ZoneInfo("Asia/Shanghai")
HOURS = hours_from_config({
    "timezone": "Asia/Shanghai",
    "weekly": {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": ["2025-10-01", "2025-10-02", "2025-10-03"],
    "special_days": {"2025-09-28": "09:00-18:00"},  # a make-up working Sunday (调休)
})


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def test_four_hours_from_friday_afternoon_fall_due_on_monday() -> None:
    # Fri 2025-06-13 17:00: one hour left on Friday, three more on Monday from 09:00.
    assert add_business_seconds(HOURS, at(2025, 6, 13, 17), 4 * 3600) == at(2025, 6, 16, 12)
    assert business_seconds(HOURS, at(2025, 6, 13, 17), at(2025, 6, 16, 12)) == 4 * 3600


def test_holiday_week_is_skipped() -> None:
    # Tue 2025-09-30 16:00 + 4 h: 2 h on Tuesday, Oct 1-3 are holidays, Sat/Sun closed -> Mon Oct 6 11:00.
    assert add_business_seconds(HOURS, at(2025, 9, 30, 16), 4 * 3600) == at(2025, 10, 6, 11)
    assert business_seconds(HOURS, at(2025, 9, 30, 16), at(2025, 10, 6, 11)) == 4 * 3600


def test_make_up_sunday_counts_and_night_does_not() -> None:
    # Sat 2025-09-27 10:00 + 1 h: Saturday is closed but Sunday the 28th is a working day.
    assert add_business_seconds(HOURS, at(2025, 9, 27, 10), 3600) == at(2025, 9, 28, 10)
    # Overnight 17:30 -> 09:30 next day is one working hour.
    assert business_seconds(HOURS, at(2025, 6, 10, 17, 30), at(2025, 6, 11, 9, 30)) == 3600


def test_start_outside_hours_and_calendar_clock() -> None:
    assert add_business_seconds(HOURS, at(2025, 6, 14, 3), 0) == at(2025, 6, 16, 9)  # Saturday night -> Monday
    assert add_business_seconds(None, at(2025, 6, 14, 3), 7200) == at(2025, 6, 14, 5)  # 24x7 policy
    assert business_seconds(HOURS, at(2025, 6, 16, 12), at(2025, 6, 16, 11)) == 0


@pytest.mark.parametrize(("cfg", "message"), [
    ({"weekly": {"mon": "25:00-26:00"}}, "invalid span"),
    ({"weekly": {"mon": "18:00-09:00"}}, "invalid span"),
    ({"weekly": {"funday": "09:00-18:00"}}, "unknown day"),
    ({"weekly": {"mon": "09:00-18:00"}, "opening": "x"}, "unknown field"),
    ({"weekly": {}}, "no working time"),
    ({"weekly": {"mon": "09:00-18:00"}, "timezone": "Mars/Olympus"}, "time zone"),
])
def test_impossible_hours_are_rejected(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_hours_config(cfg)
