"""Tokenization for FAQ matching: jieba words (custom dictionary, stop words, synonyms), character n-grams,
pinyin n-grams (homophone typos) and the content-character sequence used for order-aware re-ranking."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import jieba

from bot_flows import pinyin as _pinyin

# A run of CJK ideographs, or an ASCII word/number.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SUFFIXES = ("ing", "ed", "es", "s")

_lock = threading.Lock()


@lru_cache(maxsize=8)
def _jieba(user_dict: str | None) -> jieba.Tokenizer:
    """One initialized jieba Tokenizer per process and user dictionary (initialization takes ~1 s)."""
    with _lock:
        jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at INFO
        tok = jieba.Tokenizer()
        tok.initialize()
        if user_dict:
            tok.load_userdict(user_dict)
        return tok


def stem(word: str) -> str:
    """A tiny English suffix stripper so 'refunds', 'refunded' and 'refund' share a term."""
    if not word.isascii() or len(word) <= 4:
        return word
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 3:
            return word[: -len(suf)]
    return word


def read_word_list(path: str | Path) -> set[str]:
    """Read one word per line (UTF-8, '#' comments and blank lines ignored)."""
    words: set[str] = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.add(line.casefold())
    return words


def read_synonyms(path: str | Path) -> dict[str, str]:
    """Read synonym groups, one per line: 'canonical alt1 alt2' (space or comma separated)."""
    mapping: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].replace(",", " ").replace("，", " ").strip()
        if not line:
            continue
        words = [w.casefold() for w in line.split()]
        for w in words[1:]:
            mapping[w] = words[0]
    return mapping


class Analysis(NamedTuple):
    """What the matcher indexes of one sentence: three BM25 term fields and a content sequence."""

    words: list[str]
    grams: list[str]
    pinyin: list[str]
    # Content characters (stop characters dropped) and Latin words, in order: compared by longest
    # common subsequence when re-ranking, which rewards the same key characters in the same order.
    seq: tuple[str, ...]

    @property
    def fields(self) -> tuple[list[str], list[str], list[str]]:
        return self.words, self.grams, self.pinyin


class Analyzer:
    """Turns normalized text into jieba word terms, character n-gram and pinyin n-gram terms."""

    def __init__(
        self,
        user_dict: str | None = None,
        stop_words: Iterable[str] = (),
        synonyms: dict[str, str] | None = None,
        ngram_sizes: Sequence[int] = (1, 2),
        hmm: bool = False,
        pinyin_sizes: Sequence[int] = (1,),
        pinyin_fuzzy: bool = True,
    ) -> None:
        self._tok = _jieba(user_dict)
        self.pinyin_sizes = tuple(pinyin_sizes)
        self._pinyin = _pinyin.table(pinyin_fuzzy) if self.pinyin_sizes else None
        self.stop_words = frozenset(stop_words)
        self.synonyms = dict(synonyms or {})
        self.ngram_sizes = tuple(ngram_sizes)
        self.hmm = hmm
        self.char_stop = False
        # Multi-word synonyms ("money back") are added to jieba so they come out as one token.
        for word in list(self.synonyms) + list(self.synonyms.values()):
            if _CJK.fullmatch(word) and self._tok.FREQ.get(word) is None:
                self._tok.add_word(word, freq=2000)

    def canonical_words(self, text: str) -> list[str]:
        """Jieba words of normalized text with synonyms mapped to their canonical word.

        Stop words are kept; spaces (former punctuation) come out as "" so callers see phrase breaks.
        """
        out: list[str] = []
        syn = self.synonyms
        for w in self._tok.lcut(text, HMM=self.hmm):
            if w.isspace():
                out.append("")
                continue
            if w.isascii():
                w = stem(w)
            out.append(syn.get(w, w))
        return out

    def analyze(self, text: str) -> Analysis:
        """Return the word terms, character n-gram terms, pinyin terms and content sequence of normalized text."""
        words = self.canonical_words(text)
        stop = self.stop_words
        word_terms = [w for w in words if w and w not in stop]
        if not word_terms:  # a question made only of stop words still needs terms
            word_terms = [w for w in words if w]
        # Character n-grams come from the synonym-canonical text so 如何/怎么 agree there too;
        # the "|" marks keep n-grams from spanning a former punctuation mark.
        canon = "".join(w if w else "|" for w in words)
        grams: list[str] = []
        pins: list[str] = []
        seq: list[str] = []
        table = self._pinyin
        char_stop = self.char_stop
        tget = table.get if table is not None else None
        for run in _CJK.findall(canon):
            for n in self.ngram_sizes:
                grams.extend(run if n == 1 else [run[i : i + n] for i in range(len(run) - n + 1)])
            if tget is not None:
                # The same n-grams spelt in pinyin, so a homophone typo still shares terms.
                for n in self.pinyin_sizes:
                    if n == 1:
                        pins.extend([tget(c, c) for c in run if not (char_stop and c in stop)])
                        continue
                    syl = [tget(c, c) for c in run]
                    pins.extend([" ".join(syl[i : i + n]) for i in range(len(run) - n + 1)
                                 if not (char_stop and run[i : i + n] in stop)])
        if char_stop:
            grams = [g for g in grams if g not in stop]
        for w in words:
            if not w or w in stop:
                continue
            if w.isascii():
                if _LATIN.fullmatch(w):
                    grams.append(w)
                seq.append(w)
            elif len(w) == 1:
                seq.append(w)
            else:
                seq.extend([c for c in w if c not in stop])
        if not seq:
            seq = [c for w in words if w for c in w]
        return Analysis(word_terms, grams, pins, tuple(seq))


def jaccard_tokens(analyzer: Analyzer, text: str) -> frozenset[str]:
    """The word-term set used for similarity grouping."""
    return frozenset(analyzer.analyze(text).words)
