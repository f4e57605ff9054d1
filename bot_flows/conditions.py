"""Pure helpers the flow engine decides with: business hours, value validators, language, triggers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot_flows.intents import Phrase, compile_phrase, says_compiled

DEFAULT_TZ = "Asia/Shanghai"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Interval = tuple[int, int]  # minutes since local midnight, [start, end)


def _parse_spans(value: Any, where: str) -> tuple[Interval, ...]:
    """'09:00-18:00' or a list of them (empty list / null = closed) -> minute intervals."""
    if value is None or value == "closed":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    spans: list[Interval] = []
    for item in items:
        m = _SPAN.match(str(item))
        if not m:
            raise ValueError(f"{where}: expected 'HH:MM-HH:MM', got {item!r}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if not (0 <= start < end <= 24 * 60 and m1 < 60 and m2 < 60):
            raise ValueError(f"{where}: invalid span {item!r}")
        spans.append((start, end))
    return tuple(sorted(spans))


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening hours in a time zone, with holidays and make-up working days (调休)."""

    weekly: Mapping[int, tuple[Interval, ...]]  # weekday 0 = Monday
    holidays: frozenset[date] = frozenset()
    special_days: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)  # overrides
    tz: str = DEFAULT_TZ

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> BusinessHours:
        """Build from {"timezone", "weekly": {"mon": "09:00-18:00", ...}, "holidays": [...],
        "special_days": {"2025-09-28": "09:00-18:00"}}; a day missing from weekly is closed."""
        weekly_cfg = cfg.get("weekly", {})
        unknown = set(weekly_cfg) - set(_DAYS)
        if unknown:
            raise ValueError(f"business hours: unknown day(s) {sorted(unknown)}; use {list(_DAYS)}")
        weekly = {i: _parse_spans(weekly_cfg.get(d), f"weekly.{d}") for i, d in enumerate(_DAYS)}
        holidays = frozenset(date.fromisoformat(str(d)) for d in cfg.get("holidays", []))
        special = {
            date.fromisoformat(str(d)): _parse_spans(v, f"special_days.{d}")
            for d, v in (cfg.get("special_days") or {}).items()
        }
        tz = str(cfg.get("timezone", DEFAULT_TZ))
        ZoneInfo(tz)  # fail early on a bad zone name
        return cls(weekly=weekly, holidays=holidays, special_days=special, tz=tz)

    def _spans(self, day: date) -> tuple[Interval, ...]:
        if day in self.special_days:
            return self.special_days[day]
        if day in self.holidays:
            return ()
        return self.weekly.get(day.weekday(), ())

    def is_open(self, now: datetime) -> bool:
        """True when agents are working at `now` (an aware datetime)."""
        local = now.astimezone(ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        return any(s <= minute < e for s, e in self._spans(local.date()))

    def next_open(self, now: datetime) -> datetime | None:
        """`now` if open, else the next opening time (aware, in the configured zone); None if never."""
        zone = ZoneInfo(self.tz)
        local = now.astimezone(zone)
        if self.is_open(now):
            return local
        minute = local.hour * 60 + local.minute
        for offset in range(0, 400):
            day = local.date() + timedelta(days=offset)
            for start, _end in self._spans(day):
                if offset == 0 and start <= minute:
                    continue
                return datetime.combine(day, time(start // 60, start % 60), tzinfo=zone)
        return None


_ZH_WEEKDAYS = "一二三四五六日"


def format_when(when: datetime, lang: str, now: datetime) -> str:
    """A short human time like '明天（周二）09:00' / 'tomorrow (Tue) 09:00' relative to now."""
    local_now = now.astimezone(when.tzinfo)
    days = (when.date() - local_now.date()).days
    hm = when.strftime("%H:%M")
    if lang == "zh":
        wd = f"周{_ZH_WEEKDAYS[when.weekday()]}"
        if days == 0:
            return f"今天 {hm}"
        if days == 1:
            return f"明天（{wd}）{hm}"
        return f"{when.month}月{when.day}日（{wd}）{hm}"
    wd = when.strftime("%a")
    offset = when.utcoffset() or timedelta(0)
    hours = offset.total_seconds() / 3600
    zone = f"UTC{hours:+g}"
    if days == 0:
        return f"today at {hm} ({zone})"
    if days == 1:
        return f"tomorrow ({wd}) at {hm} ({zone})"
    return f"{wd} {when.day} {when.strftime('%b')} at {hm} ({zone})"


# --- value validators for "collect" --------------------------------------------------------------

_CN_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_INTL_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
DEFAULT_ORDER_NUMBER = r"^[A-Za-z]{0,4}\d{8,20}$"


def validate_phone(raw: str) -> str | None:
    """Chinese mobile (1[3-9] + 9 digits, optional +86) or international E.164; normalized or None."""
    compact = re.sub(r"[\s\-()]", "", normalize_text(raw))
    if m := _CN_MOBILE.match(compact):
        return m.group(1)
    if _INTL_PHONE.match(compact):
        return compact
    return None


def validate_email(raw: str) -> str | None:
    """A plausible e-mail address (lower-cased domain) or None."""
    value = unicodedata.normalize("NFKC", raw).strip()
    if not _EMAIL.match(value):
        return None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def make_regex_validator(pattern: str) -> Callable[[str], str | None]:
    """A validator accepting values that fully match `pattern` (after width normalization)."""
    rx = re.compile(pattern)

    def check(raw: str) -> str | None:
        value = unicodedata.normalize("NFKC", raw).strip()
        return value if rx.fullmatch(value) else None

    return check


def validate_text(raw: str) -> str | None:
    """Any non-empty text."""
    value = raw.strip()
    return value or None


# --- text and language ---------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NOT_WORDS = re.compile(r"\S+@\S+|https?://\S+|\S*\d\S*")  # e-mails, links, phone / order numbers
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_TRIM = " \t\n!！?？.。,，~～、;；:：…"


def normalize_text(text: str) -> str:
    """Full-width to half-width (NFKC) and case-folded, so '１' == '1' and 'ＨＵＭＡＮ' == 'human'."""
    return unicodedata.normalize("NFKC", text).casefold()


def detect_language(text: str | None, contact_language: str | None, previous: str | None,
                    default: str = "zh") -> str:
    """'zh' or 'en': the message's script first (CJK present -> zh), then the contact, then before.

    An e-mail address or an order number typed in a Chinese conversation does not switch it to
    English: only Latin words count, and a conversation already in Chinese needs two of them.
    """
    if text:
        if _CJK.search(text):
            return "zh"
        words = _LATIN_WORD.findall(_NOT_WORDS.sub(" ", text))
        if len(words) >= (2 if previous == "zh" else 1):
            return "en"
    if previous:
        return previous
    if contact_language:
        return "zh" if contact_language.lower().startswith("zh") else "en"
    return default


# --- trigger conditions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """All given tests must hold (AND); a condition with no test never matches unless `any`."""

    keywords: tuple[str, ...] = ()  # contained in the message (ASCII words at word boundaries)
    says: tuple[str, ...] = ()  # phrases, in many wordings (bot_flows.intents)
    unless: tuple[str, ...] = ()  # phrases that veto the condition ("不需要人工", "not a human")
    exact: tuple[str, ...] = ()  # the whole message equals one of these
    regex: re.Pattern[str] | None = None
    payload: tuple[str, ...] = ()  # button / menu payloads
    intent: tuple[str, ...] = ()  # FAQ entry ids answered confidently
    first_message: bool | None = None
    business_hours: str | None = None  # "open" | "closed"
    has_attribute: tuple[str, ...] = ()
    any: bool = False
    # Derived once (matches runs for every trigger of every message): not compared, not given.
    _empty: bool = field(init=False, compare=False, repr=False, default=False)
    _keyword_tests: tuple[Callable[[str], bool], ...] = field(init=False, compare=False, repr=False, default=())
    _exact_bare: frozenset[str] = field(init=False, compare=False, repr=False, default=frozenset())
    _says: tuple[tuple[str, Phrase], ...] = field(init=False, compare=False, repr=False, default=())
    _unless: tuple[tuple[str, Phrase], ...] = field(init=False, compare=False, repr=False, default=())

    def __post_init__(self) -> None:
        derived = {
            "_empty": all(getattr(self, f.name) == f.default for f in fields(self) if f.init),
            "_keyword_tests": tuple(_keyword_test(k) for k in self.keywords),
            "_exact_bare": frozenset(_bare(normalize_text(e)) for e in self.exact),
            "_says": tuple((p, compile_phrase(p)) for p in self.says),
            "_unless": tuple((p, compile_phrase(p)) for p in self.unless),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def is_empty(self) -> bool:
        """True when nothing would be tested."""
        return self._empty


@dataclass
class MatchContext:
    """What a condition can look at; `intent` is computed lazily (it runs the FAQ matcher)."""

    text: str  # normalized
    payload: str | None
    is_first_message: bool
    business_hours_open: bool
    attributes: Mapping[str, Any]
    intent: Callable[[], str | None] = lambda: None


def _keyword_test(keyword: str) -> Callable[[str], bool]:
    """Whether a (normalized) message contains the keyword: ASCII words at word boundaries."""
    kw = normalize_text(keyword)
    if kw.isascii():
        rx = re.compile(rf"(?<![a-z0-9]){re.escape(kw)}(?![a-z0-9])")
        return lambda text: rx.search(text) is not None
    return lambda text: kw in text


def _bare(text: str) -> str:
    """Text without surrounding spaces and punctuation: "人工！！" says exactly "人工"."""
    return text.strip().strip(_TRIM).strip()


def matches(cond: Condition, ctx: MatchContext) -> bool:
    """Evaluate a condition against one input."""
    if cond.is_empty():
        return False
    text = ctx.text.strip()
    # In order of cost, each only when the ones before held (the phrase tests tokenize the message).
    if cond.first_message is not None and cond.first_message != ctx.is_first_message:
        return False
    if cond.business_hours is not None and (cond.business_hours == "open") != ctx.business_hours_open:
        return False
    if cond.payload and ctx.payload not in cond.payload:
        return False
    if not all(ctx.attributes.get(a) not in (None, "") for a in cond.has_attribute):
        return False
    if cond.keywords and not any(test(text) for test in cond._keyword_tests):
        return False
    if cond.exact and _bare(text) not in cond._exact_bare:
        return False
    if cond.regex is not None and cond.regex.search(text) is None:
        return False
    if cond.says and says_compiled(text, cond._says) is None:
        return False
    if cond.unless and says_compiled(text, cond._unless) is not None:
        return False
    # The FAQ matcher is the costly test: only run it when everything else already holds.
    return not cond.intent or ctx.intent() in cond.intent
