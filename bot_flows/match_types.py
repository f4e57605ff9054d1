"""What the FAQ matcher works with: knowledge-base entries, its configuration, and its results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot_flows.calibration import Decision
from scrm.domain import Choice


@dataclass(frozen=True)
class FaqEntry:
    """One knowledge-base entry: a question, its paraphrases and the answer.

    `vectors` optionally carries the re-ranker's embeddings of `sentences()` (one row each) and `analyses`
    the matcher's terms of each sentence (`FaqMatcher.analyze_entry`), as stored with the entry, so
    indexing runs neither the encoder nor jieba again.
    """

    id: str
    question: str
    paraphrases: tuple[str, ...] = ()
    answer: str = ""
    category: str = ""
    language: str = "zh"
    enabled: bool = True
    buttons: tuple[Choice, ...] = ()
    vectors: Any = field(default=None, compare=False, repr=False)
    analyses: Any = field(default=None, compare=False, repr=False)

    def sentences(self) -> tuple[str, ...]:
        """The question followed by its paraphrases (what the matcher indexes)."""
        return (self.question, *self.paraphrases)


@dataclass(frozen=True)
class MatcherConfig:
    """Matcher tuning. The decision targets are precisions: answer only when the calibrated probability
    that the best entry is right reaches `answer_precision`; offer "did you mean" when the probability
    that the right entry is among the options reaches `clarify_precision`; otherwise refuse."""

    answer_precision: float = 0.8
    clarify_precision: float = 0.5
    clarify_max: int = 3
    # A "did you mean" option must have at least this share of the best candidate's confidence: no
    # far-fetched entries next to a plausible one.
    clarify_ratio: float = 0.6
    calibration_path: str | None = None  # None: the shipped bot_flows/calibration.json
    prefer_language: bool = True  # rank entries in the question's language (zh | en) first
    ngram_sizes: tuple[int, ...] = (1, 2)
    k1: float = 1.2
    b: float = 0.9
    word_weight: float = 1.0
    char_weight: float = 1.0
    # Pinyin n-grams (needs pypinyin): a homophone typo (登陆/登录, 帐/账) still shares terms. Unigrams
    # measured best on the dev sets; () turns the field off. Fuzzy folds zh/z, ch/c, sh/s, n/l, -ng/-n.
    pinyin_sizes: tuple[int, ...] = (1,)
    pinyin_fuzzy: bool = True
    pinyin_weight: float = 1.0
    jieba_hmm: bool = False
    user_dict: str | None = None
    stop_words_path: str | None = None
    synonyms_path: str | None = None
    extra_synonyms_paths: tuple[str, ...] = ()  # optional domain dictionaries (config/faq/examples/)
    stop_words: frozenset[str] = frozenset()
    synonyms: tuple[tuple[str, str], ...] = ()
    char_stop: bool = True  # drop stop-word characters from the character unigrams too
    sum_weight: float = 0.6
    rerank_top_n: int = 20
    rerank_weight: float = 0.6
    # Lexical re-rank of the best BM25 candidates: share of the confidence that comes from the longest
    # common subsequence of content characters (same key characters in the same order); 0 turns it off.
    lexical_top_n: int = 20
    lexical_weight: float = 0.2

    @classmethod
    def from_dir(cls, config_dir: str, **overrides: Any) -> MatcherConfig:
        """Config using the dictionaries in a folder (userdict.txt, stopwords.txt, synonyms.txt)."""
        import os

        paths = {key: os.path.join(config_dir, name) for key, name in
                 (("user_dict", "userdict.txt"), ("stop_words_path", "stopwords.txt"),
                  ("synonyms_path", "synonyms.txt"))}
        return cls(**{**{k: v for k, v in paths.items() if os.path.exists(v)}, **overrides})


@dataclass(frozen=True)
class Candidate:
    """One scored entry: its best-matching sentence, raw BM25 score and ranking confidence (0..1)."""

    entry_id: str
    score: float
    confidence: float
    sentence: str


@dataclass(frozen=True)
class MatchResult:
    """Ranked candidates, what the bot should do with them, and why.

    `probability`: calibrated P(the best candidate is right); `options_probability`: P(the right entry is
    among the `n_options` first candidates, which a "did you mean" offers); `features`: what the
    probabilities were computed from.
    """

    decision: Decision
    candidates: tuple[Candidate, ...] = ()
    probability: float = 0.0
    options_probability: float = 0.0
    n_options: int = 0
    exact: bool = False  # the question restates one entry's sentence word for word: answered as such
    language: str = "zh"
    calibration: str = ""
    features: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def best(self) -> Candidate | None:
        """The top candidate, if any."""
        return self.candidates[0] if self.candidates else None

    def clarify_options(self, limit: int = 3) -> tuple[Candidate, ...]:
        """The candidates to offer as "您是想问…" choices."""
        return self.candidates[: min(limit, self.n_options)]
