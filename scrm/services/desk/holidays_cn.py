"""China's public holidays and make-up working days (调休) for the desk's business hours.

The dates come from the `chinesecalendar` package, which transcribes each year's State Council
notice (国务院办公厅关于部分节假日安排的通知) and is re-released when the next year's notice is out.
An admin imports a year into the business-hours settings, where the dates are stored and stay
editable: the SLA clocks never depend on the package at run time, and a year the package does not
cover yet can be entered by hand.
"""

from __future__ import annotations

from datetime import date
from importlib.metadata import PackageNotFoundError, version
from typing import Any

NAMES_ZH = {
    "New Year's Day": "元旦", "Spring Festival": "春节", "Tomb-sweeping Day": "清明节", "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节", "Mid-autumn Festival": "中秋节", "National Day": "国庆节",
    "Anti-Fascist 70th Day": "抗战胜利70周年纪念日",
}


class HolidayDataMissing(LookupError):
    """The package has no official calendar for the year asked."""


def source() -> str:
    """Where the dates come from, with the package version (shown to the admin)."""
    try:
        return f"chinesecalendar {version('chinesecalendar')}"
    except PackageNotFoundError:
        return "chinesecalendar"


def _tables() -> tuple[dict[date, Any], dict[date, Any]]:
    from chinese_calendar.constants import holidays, workdays

    return holidays, workdays


def covered_years() -> list[int]:
    """Years whose official calendar the installed package knows."""
    holidays, _ = _tables()
    return sorted({d.year for d in holidays})


def _name(value: Any) -> tuple[str, str]:
    value = getattr(value, "value", value)  # older releases keep a Holiday enum of (english, chinese, days)
    en = str(value[0] if isinstance(value, tuple) else value)
    return en, NAMES_ZH.get(en, en)


def year(year_: int) -> dict[str, Any]:
    """The public holidays and the make-up working days (weekend days worked in lieu) of one year."""
    holidays, workdays = _tables()
    if year_ not in covered_years():
        raise HolidayDataMissing(
            f"{source()} has no official holiday calendar for {year_} (it covers {covered_years()[0]}-"
            f"{covered_years()[-1]}); upgrade the package once the State Council notice is out, or enter the days by hand")
    days = []
    for day, value in sorted(holidays.items()):
        if day.year == year_ and value is not None:
            en, zh = _name(value)
            days.append({"date": day.isoformat(), "name": en, "name_zh": zh, "weekend": day.weekday() >= 5})
    makeup = []
    for day, value in sorted(workdays.items()):
        if day.year == year_ and value is not None and day.weekday() >= 5:  # a weekend day worked in lieu
            en, zh = _name(value)
            makeup.append({"date": day.isoformat(), "name": en, "name_zh": zh})
    return {"year": year_, "source": source(), "holidays": days, "workdays": makeup}
