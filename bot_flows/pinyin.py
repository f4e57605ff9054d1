"""Toneless pinyin of single Chinese characters, so homophone typos (登陆/登录, 帐/账) still match.

The table comes from pypinyin's character dictionary (a dependency); without pypinyin installed the
matcher simply does without its pinyin field. Only each character's first (most common) reading is
used: both the question and the knowledge base go through the same table, so a polyphone is at worst
matched under one of its readings.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from functools import lru_cache

log = logging.getLogger(__name__)
_lock = threading.Lock()


def _strip_tone(syllable: str) -> str:
    # NFD splits ā into a + combining macron; ü (u + diaeresis) becomes "v", since lü and lu differ.
    base = unicodedata.normalize("NFD", syllable).replace("u\u0308", "v")
    return "".join(c for c in base if not unicodedata.combining(c))


@lru_cache(maxsize=2)
def table(fuzzy_initials: bool = False) -> dict[str, str] | None:
    """Character -> toneless pinyin for the CJK ideographs pypinyin knows; None without pypinyin.

    With fuzzy_initials the syllables are folded by `fuzzy` (shared table, built once per process).
    """
    if fuzzy_initials:
        exact = table(False)
        return None if exact is None else {c: fuzzy(p) for c, p in exact.items()}
    with _lock:
        try:
            from pypinyin.pinyin_dict import pinyin_dict
        except ImportError:
            log.warning("pypinyin is not installed: FAQ matching goes without homophone (pinyin) terms")
            return None
        out: dict[str, str] = {}
        for cp, readings in pinyin_dict.items():
            first = readings.split(",", 1)[0]
            if first:
                out[chr(cp)] = _strip_tone(first)
        return out


def fuzzy(syllable: str) -> str:
    """Fold the pinyin pairs that speakers (and pinyin input methods) confuse: zh/z, ch/c, sh/s, n/l,
    -ng/-n. Typing 四 for 是 or 那 for 拉 then still shares a term."""
    if syllable[:2] in ("zh", "ch", "sh"):
        syllable = syllable[0] + syllable[2:]
    elif syllable[:1] == "n":
        syllable = "l" + syllable[1:]
    if syllable.endswith("ng"):
        syllable = syllable[:-1]
    return syllable


def available() -> bool:
    """True when the pinyin table can be used."""
    return table() is not None
