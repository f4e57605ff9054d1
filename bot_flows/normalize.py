"""Text normalization for FAQ matching: width, case, traditional -> simplified, English contractions,
punctuation."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from bot_flows.english import expand_contractions

_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _t2s() -> tuple[Any, frozenset[str]]:
    """Load the OpenCC t2s converter once per process, with the set of characters it changes."""
    import opencc

    conv = opencc.OpenCC("t2s")
    conv._init_dict()
    trigger: set[str] = set()
    phrases: list[str] = []
    for entry in conv._dict_chain_data:
        for _max, _min, mapping in entry:
            for key, value in mapping.items():
                if value.split(" ")[0] != key:
                    if len(key) == 1:
                        trigger.add(key)
                    else:
                        phrases.append(key)
    # A few phrases (覆 -> 复 in 回覆) change text without any single-character entry; their
    # characters trigger the full conversion too. Text without any trigger is already simplified.
    for key in phrases:
        if trigger.isdisjoint(key):
            trigger.update(key)
    return conv, frozenset(trigger)


def to_simplified(text: str) -> str:
    """Convert traditional Chinese to simplified; a no-op (and fast) for text without traditional characters."""
    conv, trigger = _t2s()
    if trigger.isdisjoint(text):
        return text
    return str(conv.convert(text))


@lru_cache(maxsize=1)
def _punct_table() -> dict[int, str]:
    """Map every punctuation, symbol, separator and control code point (BMP) to a space."""
    return {cp: " " for cp in range(0x10000) if unicodedata.category(chr(cp))[0] in "PSZC"}


def normalize(text: str) -> str:
    """Full-width -> half-width, case fold, traditional -> simplified, contractions spelt out,
    punctuation -> spaces, trimmed."""
    # NFKC folds full-width ASCII (Ａ１？) and compatibility forms to their plain equivalents.
    text = unicodedata.normalize("NFKC", text).casefold()
    text = to_simplified(text)
    text = expand_contractions(text)  # before punctuation: "don't" must not become "don t"
    text = text.translate(_punct_table())
    return _SPACES.sub(" ", text).strip()
