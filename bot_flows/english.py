"""English for FAQ matching: contractions, Snowball stems, and multi-word synonyms ("money back").

Chinese goes through jieba; the Latin words jieba hands back are stemmed here so "refunds", "refunded"
and "refunding" share a term, and "don't" / "dont" / "do not" all say "not".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import snowballstemmer

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
# Irregular negations first, then the regular suffixes. "'s" after a pronoun or question word is "is";
# after a noun it is a possessive ("the order's address") and is dropped.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"), (r"\bain't\b", "is not"),
    (r"(?<=[a-z])n't\b", " not"), (r"(?<=[a-z])'re\b", " are"), (r"\bi'm\b", "i am"),
    (r"(?<=[a-z])'ll\b", " will"), (r"(?<=[a-z])'ve\b", " have"), (r"(?<=[a-z])'d\b", " would"),
    (r"\b(it|that|what|where|how|who|when|why|there|here|he|she|this)'s\b", r"\1 is"),
    (r"(?<=[a-z])'s\b", ""), (r"(?<=s)'(?=\s|$)", ""),
    # The same without the apostrophe, as people type them on phones (not "wont"/"cant": words too).
    (r"\b(do|does|did|is|are|was|were|has|have|had|could|would|should|must)nt\b", r"\1 not"),
    (r"\b(what|where|how|who)s\b", r"\1 is"),
    (r"\bim\b", "i am"), (r"\bive\b", "i have"), (r"\bu\b", "you"), (r"\bpls\b|\bplz\b", "please"),
))
_HAS_TRIGGER = re.compile(r"'|\b(?:cannot|[a-z]+nt|im|ive|u|pls|plz|whats|wheres|hows|whos)\b")


def expand_contractions(text: str) -> str:
    """Spell out English contractions in lower-case text: "i can't" -> "i can not", "where's" -> "where is"."""
    text = text.translate(_APOSTROPHES)
    if not _HAS_TRIGGER.search(text):
        return text
    for rx, repl in _RULES:
        text = rx.sub(repl, text)
    return text


_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) stem of a lower-case English word; other tokens are returned as they are."""
    if not word.isascii() or not word.isalpha() or len(word) <= 2:
        return word
    return str(_stemmer.stemWord(word))


def is_word(token: str) -> bool:
    """True for a Latin word or number token (what English rules apply to)."""
    return token.isascii() and token.isalnum()


class EnglishSynonyms:
    """Synonym groups on stems, including multi-word phrases written with '-' or '_' ("money-back").

    A phrase is matched on the stems of consecutive words, longest first, and adds its group's canonical
    term, so "get my money back" and "refund" meet on one term.
    """

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.phrases: dict[tuple[str, ...], str] = {}
        for alt, canonical in mapping.items():
            words = _phrase(alt)
            if words and all(is_word(w) for w in words):
                self.phrases[words] = _canonical(canonical)
        for canonical in set(mapping.values()):  # the canonical word itself, inflected, maps too
            words = _phrase(canonical)
            if words and all(is_word(w) for w in words):
                self.phrases.setdefault(words, _canonical(canonical))
        self.longest = max((len(p) for p in self.phrases), default=1)

    def apply(self, words: Sequence[str], stop: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(term, the customer's words) for a run of consecutive Latin words: stems (stop words kept as
        written), a single word mapped to its group's canonical term, and a multi-word phrase's canonical
        term added after its own words (so "how many business days" still meets "how many days")."""
        stop_set = stop if isinstance(stop, set | frozenset) else set(stop)
        stems = [stem(w) for w in words]
        plain = [w if w in stop_set else st for w, st in zip(words, stems, strict=True)]
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                hit = self.phrases.get(tuple(stems[i : i + n]))
                if hit is None or (n == 1 and words[i] in stop_set):
                    continue
                if n == 1:
                    out.append((hit, words[i]))
                else:
                    out.extend(zip(plain[i : i + n], words[i : i + n], strict=True))
                    out.append((hit, " ".join(words[i : i + n])))
                i += n
                break
            else:
                out.append((plain[i], words[i]))
                i += 1
        return out


def _phrase(text: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in re.split(r"[-_\s]+", text.casefold()) if w)


def _canonical(text: str) -> str:
    """A canonical term: Chinese as written, English words stemmed and joined ("send back" -> "send_back")."""
    words = [w for w in re.split(r"[-_\s]+", text.casefold()) if w]
    if not all(is_word(w) for w in words):
        return text.casefold()
    return "_".join(stem(w) for w in words)
