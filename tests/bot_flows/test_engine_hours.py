"""Business hours across weekends and holidays, and the value validators used by `collect`."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot_flows.conditions import (
    BusinessHours,
    detect_language,
    make_regex_validator,
    validate_email,
    validate_phone,
)

SH = ZoneInfo("Asia/Shanghai")
# China 2025: National Day 10-01..10-08 off; Sunday 09-28 and Saturday 10-11 are make-up workdays.
HOURS = BusinessHours.from_config({
    "weekly": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00", "thu": "09:00-18:00",
               "fri": "09:00-18:00", "sat": ["10:00-12:00", "13:00-16:00"]},
    "holidays": [f"2025-10-0{d}" for d in range(1, 9)],
    "special_days": {"2025-09-28": "09:00-18:00", "2025-10-11": "09:00-18:00"},
})


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc]


def test_open_hours_are_in_shanghai_time_whatever_the_input_zone() -> None:
    assert HOURS.is_open(datetime(2025, 3, 4, 1, 0, tzinfo=UTC))  # Tue 09:00 Shanghai
    assert not HOURS.is_open(datetime(2025, 3, 4, 0, 59, tzinfo=UTC))  # Tue 08:59
    assert not HOURS.is_open(sh(2025, 3, 4, 18, 0)), "the closing minute is closed"
    assert HOURS.is_open(sh(2025, 3, 8, 11, 0)) and not HOURS.is_open(sh(2025, 3, 8, 12, 30))  # Sat lunch


def test_next_open_across_the_weekend() -> None:
    assert HOURS.next_open(sh(2025, 3, 7, 19, 0)) == sh(2025, 3, 8, 10, 0)  # Fri night -> Sat 10:00
    assert HOURS.next_open(sh(2025, 3, 8, 12, 30)) == sh(2025, 3, 8, 13, 0)  # Sat lunch break
    assert HOURS.next_open(sh(2025, 3, 8, 17, 0)) == sh(2025, 3, 10, 9, 0)  # Sat evening -> Mon
    assert HOURS.next_open(sh(2025, 3, 10, 7, 0)) == sh(2025, 3, 10, 9, 0)
    now = sh(2025, 3, 10, 10, 0)
    assert HOURS.next_open(now) == now


def test_holidays_close_and_make_up_workdays_open() -> None:
    assert HOURS.is_open(sh(2025, 9, 28, 10, 0)), "Sunday make-up workday"
    assert not HOURS.is_open(sh(2025, 10, 1, 10, 0))
    assert HOURS.next_open(sh(2025, 9, 30, 18, 30)) == sh(2025, 10, 9, 9, 0)
    assert HOURS.next_open(sh(2025, 10, 10, 18, 30)) == sh(2025, 10, 11, 9, 0), "Saturday make-up day"


def test_always_closed_hours_have_no_next_open() -> None:
    assert BusinessHours.from_config({"weekly": {}}).next_open(sh(2025, 1, 1, 0, 0)) is None


@pytest.mark.parametrize(("cfg", "message"), [
    ({"weekly": {"monday": "09:00-18:00"}}, "unknown day"),
    ({"weekly": {"mon": "9-18"}}, "expected 'HH:MM-HH:MM'"),
    ({"weekly": {"mon": "18:00-09:00"}}, "invalid span"),
])
def test_bad_business_hours_config_is_explained(cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessHours.from_config(cfg)


@pytest.mark.parametrize(("raw", "expected"), [
    ("13812345678", "13812345678"),
    ("+86 138 1234 5678", "13812345678"),
    ("86-138-1234-5678", "13812345678"),
    ("１９９１２３４５６７８", "19912345678"),
    ("+1 (415) 555-2671", "+14155552671"),
    ("12812345678", None),  # 12x is not a mobile prefix
    ("1381234567", None),
    ("010-12345678", None),
    ("call me", None),
])
def test_phone_validation(raw: str, expected: str | None) -> None:
    assert validate_phone(raw) == expected


def test_email_and_order_number_validation() -> None:
    assert validate_email(" li.lei@Mail.QQ.com ") == "li.lei@mail.qq.com"
    assert validate_email("li.lei@qq") is None and validate_email("a b@c.com") is None
    orders = make_regex_validator(r"E\d{10}")
    assert orders("Ｅ2025030401") == "E2025030401" and orders("E123") is None


def test_language_follows_script_then_history_then_contact() -> None:
    assert detect_language("你好 hello", "en", None) == "zh"
    assert detect_language("hello", None, None) == "en"
    assert detect_language("a@b.cn", None, "zh") == "zh", "an e-mail does not switch a Chinese chat"
    assert detect_language("ok", None, "zh") == "zh"
    assert detect_language("my parcel is late", None, "zh") == "en"
    assert detect_language("1", "en-US", None) == "en"
    assert detect_language(None, None, None, default="zh") == "zh"
