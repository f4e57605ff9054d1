"""Phrase conditions for flow triggers (`says` / `unless`): "talk to a human", 转人工, 投诉 in many wordings.

A phrase matches when its parts appear in the message in order. Chinese characters written together in
the phrase must stand together in the message ("转人工"); a space in the phrase lets up to three other
tokens stand there ("找 客服" matches 找一下客服). English words may always have up to three other words
between them, and compare by stem: "talk human" matches "can I talk to a real human?" and "talking to
humans". Messages and phrases are normalized alike (width, case, traditional -> simplified, contractions:
"don't" is "do not"), so one phrase covers 轉人工 and "I'd like an AGENT".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from bot_flows.english import stem
from bot_flows.normalize import normalize

MAX_GAP = 3
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

# One phrase: tokens with, for each token after the first, the most tokens allowed before it.
Phrase = tuple[tuple[str, ...], tuple[int, ...]]


def _tokens(text: str) -> list[str]:
    """Latin words (stemmed) and single other characters of normalized text."""
    return [stem(t) if t[0].isascii() else t for t in _TOKEN.findall(text)]


@lru_cache(maxsize=4096)
def compile_phrase(phrase: str) -> Phrase:
    """Tokens of a phrase and the gap allowed before each (0 inside a run of Chinese characters)."""
    tokens: list[str] = []
    gaps: list[int] = []
    for part in normalize(phrase).split(" "):
        for i, tok in enumerate(_tokens(part)):
            if tokens:
                gaps.append(0 if i > 0 and not tok.isascii() and not tokens[-1].isascii() else MAX_GAP)
            tokens.append(tok)
    return tuple(tokens), tuple(gaps)


@lru_cache(maxsize=1024)
def message_tokens(text: str) -> tuple[str, ...]:
    """The message as phrase tokens (cached: every trigger of every flow looks at the same message)."""
    return tuple(_tokens(normalize(text)))


@lru_cache(maxsize=1024)
def _present(text: str) -> frozenset[str]:
    """The message's distinct tokens: a phrase with a token the message lacks cannot match (most don't)."""
    return frozenset(message_tokens(text))


def phrase_in(tokens: Sequence[str], phrase: Phrase) -> bool:
    """True when the phrase's tokens appear in order within their allowed gaps."""
    want, gaps = phrase
    if not want:
        return False

    def rest(k: int, after: int) -> bool:  # token k of the phrase, placed after position `after`
        if k == len(want):
            return True
        limit = min(len(tokens), after + 2 + gaps[k - 1])
        return any(tokens[j] == want[k] and rest(k + 1, j) for j in range(after + 1, limit))

    return any(tok == want[0] and rest(1, i) for i, tok in enumerate(tokens))


def says(text: str, phrases: Sequence[str]) -> str | None:
    """The first of the phrases the message says, or None."""
    return says_compiled(text, [(p, compile_phrase(p)) for p in phrases])


def says_compiled(text: str, phrases: Sequence[tuple[str, Phrase]]) -> str | None:
    """`says` with the phrases compiled beforehand ((phrase, compile_phrase(phrase)) pairs)."""
    tokens, present = message_tokens(text), _present(text)
    for p, phrase in phrases:
        if present.issuperset(phrase[0]) and phrase_in(tokens, phrase):
            return p
    return None
