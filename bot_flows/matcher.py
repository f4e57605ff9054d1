"""FAQ matcher: normalized text; BM25 over jieba words, character n-grams and pinyin n-grams; best sentence
per entry; an order-aware lexical re-rank of the top candidates; a decision."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot_flows.index import BM25Index
from bot_flows.normalize import normalize
from bot_flows.tokenize import Analysis, Analyzer, read_synonyms, read_word_list
from scrm.domain import Choice

Decision = Literal["answer", "clarify", "reject"]


@dataclass(frozen=True)
class FaqEntry:
    """One knowledge-base entry: a question, its paraphrases and the answer."""

    id: str
    question: str
    paraphrases: tuple[str, ...] = ()
    answer: str = ""
    category: str = ""
    language: str = "zh"
    enabled: bool = True
    buttons: tuple[Choice, ...] = ()

    def sentences(self) -> tuple[str, ...]:
        """The question followed by its paraphrases (what the matcher indexes)."""
        return (self.question, *self.paraphrases)


@dataclass(frozen=True)
class MatcherConfig:
    """Matcher tuning. Thresholds apply to the confidence (0..1) of the best candidate."""

    reject_threshold: float = 0.5
    clarify_margin: float = 0.06
    clarify_max: int = 3
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
        return cls(**{k: v for k, v in paths.items() if os.path.exists(v)}, **overrides)


@dataclass(frozen=True)
class Candidate:
    """One scored entry: its best-matching sentence, raw score and confidence (0..1)."""

    entry_id: str
    score: float
    confidence: float
    sentence: str


@dataclass(frozen=True)
class MatchResult:
    """Ranked candidates and what the bot should do with them."""

    decision: Decision
    candidates: tuple[Candidate, ...] = ()

    @property
    def best(self) -> Candidate | None:
        """The top candidate, if any."""
        return self.candidates[0] if self.candidates else None

    def clarify_options(self, limit: int = 3) -> tuple[Candidate, ...]:
        """The candidates to offer as "您是想问…" choices."""
        return self.candidates[:limit]


class Reranker(Protocol):
    """A semantic scorer fused with BM25 on the top candidates (see bot_flows.rerank)."""

    def add(self, sentences: Sequence[str]) -> None: ...

    def embed_query(self, query: str) -> Any: ...

    def entry_similarity(self, query_vec: Any, sentences: Sequence[str]) -> tuple[int, float]: ...


@dataclass
class _Indexed:
    entry: FaqEntry
    sids: list[int] = field(default_factory=list)


class FaqMatcher:
    """Matches customer questions to FAQ entries; entries can be added, updated and removed live."""

    def __init__(self, config: MatcherConfig | None = None, reranker: Reranker | None = None) -> None:
        self.config = cfg = config or MatcherConfig()
        stop = set(cfg.stop_words)
        if cfg.stop_words_path:
            stop |= read_word_list(cfg.stop_words_path)
        syn = dict(cfg.synonyms)
        if cfg.synonyms_path:
            syn.update(read_synonyms(cfg.synonyms_path))
        self.analyzer = Analyzer(cfg.user_dict, stop, syn, cfg.ngram_sizes, cfg.jieba_hmm,
                                 cfg.pinyin_sizes, cfg.pinyin_fuzzy)
        self.reranker = reranker
        self.analyzer.char_stop = cfg.char_stop
        self._index = self._new_index()
        self._entries: dict[str, _Indexed] = {}
        self._sid_entry: dict[int, str] = {}
        self._sid_text: dict[int, str] = {}
        self._sid_seq: dict[int, tuple[str, ...]] = {}
        self._next_sid = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def get(self, entry_id: str) -> FaqEntry | None:
        """The indexed entry with this id, if any."""
        item = self._entries.get(entry_id)
        return item.entry if item else None

    def _new_index(self) -> BM25Index:
        cfg = self.config
        return BM25Index((cfg.word_weight, cfg.char_weight, cfg.pinyin_weight), cfg.k1, cfg.b)

    def _terms(self, text: str) -> Analysis:
        return self.analyzer.analyze(normalize(text))

    def _prepare(self, entry: FaqEntry) -> list[tuple[int, Analysis, str]]:
        out = []
        seen: set[str] = set()
        for text in entry.sentences():
            norm = normalize(text)
            if not norm or norm in seen:
                continue
            seen.add(norm)
            out.append((next(self._next_sid), self.analyzer.analyze(norm), text))
        return out

    def _store(self, entry: FaqEntry, prepared: list[tuple[int, Analysis, str]]) -> None:
        item = _Indexed(entry)
        for sid, terms, text in prepared:
            item.sids.append(sid)
            self._sid_entry[sid] = entry.id
            self._sid_text[sid] = text
            self._sid_seq[sid] = terms.seq
        self._entries[entry.id] = item
        if self.reranker is not None:
            self.reranker.add([text for _sid, _t, text in prepared])

    def build(self, entries: Iterable[FaqEntry]) -> None:
        """Replace the whole index with these entries (disabled ones are skipped)."""
        self._index = self._new_index()
        self._entries.clear()
        self._sid_entry.clear()
        self._sid_text.clear()
        self._sid_seq.clear()
        batch: list[tuple[int, tuple[list[str], ...]]] = []
        for entry in entries:
            if not entry.enabled or entry.id in self._entries:
                continue
            prepared = self._prepare(entry)
            self._store(entry, prepared)
            batch.extend((sid, terms.fields) for sid, terms, _text in prepared)
        self._index.add_many(batch)

    def add(self, entry: FaqEntry) -> None:
        """Index one entry (replacing an entry with the same id); disabled entries are only removed."""
        self.remove(entry.id)
        if not entry.enabled:
            return
        prepared = self._prepare(entry)
        self._store(entry, prepared)
        for sid, terms, _text in prepared:
            self._index.add(sid, terms.fields)

    def update(self, entry: FaqEntry) -> None:
        """Re-index a changed entry (same as add)."""
        self.add(entry)

    def remove(self, entry_id: str) -> None:
        """Drop an entry from the index; unknown ids are ignored."""
        item = self._entries.pop(entry_id, None)
        if item is None:
            return
        for sid in item.sids:
            self._index.remove(sid)
            del self._sid_entry[sid]
            del self._sid_text[sid]
            del self._sid_seq[sid]

    def match(self, text: str, top_k: int = 5) -> MatchResult:
        """Rank entries for a customer question and decide: answer, clarify or reject."""
        cfg = self.config
        terms = self._terms(text)
        if not terms.words and not terms.grams:
            return MatchResult("reject")
        fields = terms.fields
        sent_scores = self._index.search(fields)
        if not sent_scores:
            return MatchResult("reject")
        best: dict[str, tuple[float, int]] = {}
        sums: dict[str, float] = {}
        sid_entry = self._sid_entry
        for sid, score in sent_scores.items():
            eid = sid_entry[sid]
            sums[eid] = sums.get(eid, 0.0) + score
            cur = best.get(eid)
            if cur is None or score > cur[0]:
                best[eid] = (score, sid)
        # Rank by the best sentence plus a share of the others: an entry several of whose
        # paraphrases match is more likely the intent than one lucky sentence.
        sw = cfg.sum_weight
        ranked = {e: (s + sw * (sums[e] - s), s, sid) for e, (s, sid) in best.items()}
        n_keep = max(top_k, cfg.rerank_top_n if self.reranker else 0, cfg.lexical_top_n if cfg.lexical_weight else 0,
                     cfg.clarify_max)
        top = heapq.nlargest(n_keep, ranked.items(), key=lambda kv: kv[1][0])
        # Confidence: the score relative to the query's score against itself (1.0 = as good as an exact
        # restatement, whatever the query's length or index size), squashed into 0..1 by tanh so
        # paraphrase support above an exact match still orders candidates instead of tying at 1.
        norm = self._index.self_score(fields) or 1.0
        scored = [(eid, s, math.tanh(s / norm), sid) for eid, (s, _mx, sid) in top]
        if cfg.lexical_weight:
            scored = self._lexical_rerank(terms.seq, scored)
        if self.reranker is not None:
            scored = self._rerank(text, scored)
        cands = tuple(Candidate(eid, s, c, self._sid_text[sid]) for eid, s, c, sid in scored[:top_k])
        return MatchResult(self._decide(cands), cands)

    def _lexical_rerank(self, query: tuple[str, ...],
                        scored: list[tuple[str, float, float, int]]) -> list[tuple[str, float, float, int]]:
        """Fuse BM25 confidence with how much of the query's content, in order, the entry's best sentence holds.

        BM25 treats a sentence as a bag of terms; the longest common subsequence of content characters
        (stop characters dropped) also rewards the same key characters in the same order, which separates
        paraphrases from sentences that merely share a few terms. The query-side coverage (LCS / query
        length) is in 0..1 like the confidence, so the two mix without per-index calibration.
        """
        if not query:
            return scored
        w = self.config.lexical_weight
        n = self.config.lexical_top_n
        masks = _position_masks(query)
        qlen = len(query)
        sid_seq = self._sid_seq
        fused = []
        for eid, s, conf, sid in scored[:n]:
            # Start from the BM25 best sentence, the one shown, unless another holds more of the query in order.
            best_len, best_sid = _lcs_length(masks, qlen, sid_seq[sid]), sid
            for x in self._entries[eid].sids:
                if x != sid and (length := _lcs_length(masks, qlen, sid_seq[x])) > best_len:
                    best_len, best_sid = length, x
            fused.append((eid, s, (1 - w) * conf + w * best_len / qlen, best_sid))
        fused.sort(key=lambda t: t[2], reverse=True)
        return fused + scored[n:]

    def _rerank(self, text: str, scored: list[tuple[str, float, float, int]]) -> list[tuple[str, float, float, int]]:
        """Fuse BM25 confidence with the entry's semantic similarity on the top candidates."""
        assert self.reranker is not None
        w = self.config.rerank_weight
        qv = self.reranker.embed_query(text)
        fused = []
        for eid, s, conf, sid in scored:
            sids = self._entries[eid].sids
            k, sim = self.reranker.entry_similarity(qv, [self._sid_text[x] for x in sids])
            sim = max(0.0, sim)
            fused.append((eid, s, (1 - w) * conf + w * sim, sid if conf >= sim else sids[k]))
        fused.sort(key=lambda t: t[2], reverse=True)
        return fused

    def _decide(self, cands: Sequence[Candidate]) -> Decision:
        cfg = self.config
        if not cands or cands[0].confidence < cfg.reject_threshold:
            return "reject"
        if len(cands) > 1 and cands[0].confidence - cands[1].confidence < cfg.clarify_margin:
            return "clarify"
        return "answer"


def _position_masks(seq: Sequence[str]) -> dict[str, int]:
    """For each symbol of seq, a bit mask of the positions where it occurs (for _lcs_length)."""
    masks: dict[str, int] = {}
    for i, sym in enumerate(seq):
        masks[sym] = masks.get(sym, 0) | (1 << i)
    return masks


def _lcs_length(masks: dict[str, int], n: int, other: Sequence[str]) -> int:
    """Longest common subsequence length of a sequence (given by its position masks and length n) and other.

    Bit-parallel (Allison-Dix / Hyyrö): one pass over `other` with a few integer operations per symbol,
    instead of the O(n*m) table, so re-ranking 20 entries stays well under a millisecond.
    """
    full = (1 << n) - 1
    v = full
    get = masks.get
    for sym in other:
        u = v & get(sym, 0)
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def group_similar(texts: Sequence[str], threshold: float = 0.5, analyzer: Analyzer | None = None) -> list[list[int]]:
    """Group texts (indices) whose jieba-token sets have Jaccard similarity >= threshold (single link)."""
    an = analyzer or Analyzer(pinyin_sizes=())  # only jieba words are compared
    toks = [frozenset(an.analyze(normalize(t)).words) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Only pairs sharing a token can be similar: walk an inverted index instead of all pairs.
    by_tok: dict[str, list[int]] = {}
    for i, ts in enumerate(toks):
        for t in ts:
            by_tok.setdefault(t, []).append(i)
    for i, ts in enumerate(toks):
        others = {j for t in ts for j in by_tok[t] if j > i}
        for j in others:
            inter = len(ts & toks[j])
            if inter and inter / len(ts | toks[j]) >= threshold:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))
