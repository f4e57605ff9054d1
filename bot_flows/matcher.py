"""FAQ matcher: normalized text; BM25 over jieba words / English stems, character n-grams and pinyin
n-grams; best sentence per entry; an order-aware lexical re-rank and an optional semantic re-rank of the
top candidates; then a calibrated decision (bot_flows.calibration): answer, "did you mean", or refuse."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jieba

from bot_flows import calibration
from bot_flows.calibration import Decision
from bot_flows.index import BM25Index
from bot_flows.lexical import group_similar, lcs_length, position_masks
from bot_flows.match_types import Candidate, FaqEntry, MatcherConfig, MatchResult
from bot_flows.normalize import normalize
from bot_flows.tokenize import Analysis, Analyzer, read_synonyms, read_word_list

__all__ = ["Candidate", "Decision", "FaqEntry", "FaqMatcher", "MatchResult", "MatcherConfig", "group_similar",
           "question_language"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
FEATURES = ("conf1", "margin", "conf3", "gap3", "options", "bm25", "bm25_margin", "coverage", "sent_cover", "lcs",
            "qterms", "sim", "sim_margin")
NO_MATCH = dict.fromkeys(FEATURES, 0.0)  # the features of a question that shares no term with any entry
ANALYSIS_VERSION = 1  # bump when the analyzer's output for the same text and dictionaries changes


class Reranker(Protocol):
    """A semantic scorer fused with BM25 on the top candidates (see bot_flows.rerank)."""

    def encode(self, sentences: Sequence[str]) -> Any: ...

    def set_entry(self, entry_id: str, vectors: Any) -> None: ...

    def remove(self, entry_id: str) -> None: ...

    def prepare(self, query: str) -> Any: ...

    def entry_similarity(self, query_vec: Any, entry_id: str) -> tuple[int, float]: ...


@dataclass
class _Indexed:
    entry: FaqEntry
    sids: list[int] = field(default_factory=list)
    terms: frozenset[str] = frozenset()  # word terms of all its sentences (term coverage)


@dataclass(slots=True)
class _Scored:
    eid: str
    score: float  # BM25 (best sentence + a share of the others)
    bm25: float  # BM25 confidence, 0..1
    conf: float  # fused ranking confidence, 0..1
    sid: int  # the sentence shown
    lcs: float = 0.0  # share of the question's content found in order in the entry
    sim: float = 0.0  # semantic similarity (re-ranker)


def _analysis_id(cfg: MatcherConfig, analyzer: Analyzer) -> str:
    """Names what the analysis of a text depends on (code version, tuning, dictionaries, pinyin table):
    stored analyses made under another id are recomputed."""
    h = hashlib.sha256(repr((ANALYSIS_VERSION, jieba.__version__, cfg.ngram_sizes, cfg.pinyin_sizes,
                             cfg.pinyin_fuzzy and analyzer.pinyin_sizes != (), cfg.jieba_hmm, cfg.char_stop,
                             sorted(cfg.stop_words), cfg.synonyms, analyzer._pinyin is not None)).encode())
    for path in (cfg.user_dict, cfg.stop_words_path, cfg.synonyms_path, *cfg.extra_synonyms_paths):
        if path:
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:32]


def question_language(text: str) -> str:
    """'zh' when the question has Chinese characters (mixed questions too), else 'en'."""
    return "zh" if _CJK.search(text) else "en"


class FaqMatcher:
    """Matches customer questions to FAQ entries; entries can be added, updated and removed live."""

    def __init__(self, config: MatcherConfig | None = None, reranker: Reranker | None = None) -> None:
        self.config = cfg = config or MatcherConfig()
        stop = set(cfg.stop_words)
        if cfg.stop_words_path:
            stop |= read_word_list(cfg.stop_words_path)
        syn = dict(cfg.synonyms)
        for path in (cfg.synonyms_path, *cfg.extra_synonyms_paths):
            if path:
                syn.update(read_synonyms(path))
        self.analyzer = Analyzer(cfg.user_dict, stop, syn, cfg.ngram_sizes, cfg.jieba_hmm,
                                 cfg.pinyin_sizes, cfg.pinyin_fuzzy)
        self.analyzer.char_stop = cfg.char_stop
        self.reranker = reranker
        self.analysis_id = _analysis_id(cfg, self.analyzer)
        self.calibration = calibration.load(cfg.calibration_path)
        self._index = self._new_index()
        self._entries: dict[str, _Indexed] = {}
        self._sid_entry: dict[int, str] = {}
        self._sid_text: dict[int, str] = {}
        self._sid_seq: dict[int, tuple[str, ...]] = {}
        self._languages: dict[str, int] = {}  # entries per language (the language preference needs a mix)
        self._next_sid = itertools.count()
        # Bumped by every change of the index: answers cached for a question (faq_lookup.MatcherLookup)
        # are good only while it stays the same.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def get(self, entry_id: str) -> FaqEntry | None:
        """The indexed entry with this id, if any."""
        item = self._entries.get(entry_id)
        return item.entry if item else None

    def entry_terms(self, entry_id: str) -> frozenset[str]:
        """The word terms of an indexed entry's sentences."""
        item = self._entries.get(entry_id)
        return item.terms if item else frozenset()

    def _new_index(self) -> BM25Index:
        cfg = self.config
        return BM25Index((cfg.word_weight, cfg.char_weight, cfg.pinyin_weight), cfg.k1, cfg.b)

    def _terms(self, text: str) -> Analysis:
        return self.analyzer.analyze(normalize(text))

    def analyze_entry(self, entry: FaqEntry) -> list[Analysis | None]:
        """The terms of each of the entry's sentences (None for an empty or repeated one): what indexing
        it costs, and what may be stored with it (valid while `analysis_id` stays the same)."""
        out: list[Analysis | None] = []
        seen: set[str] = set()
        for text in entry.sentences():
            norm = normalize(text)
            out.append(None if not norm or norm in seen else self.analyzer.analyze(norm))
            seen.add(norm)
        return out

    def _prepare(self, entry: FaqEntry) -> list[tuple[int, Analysis, str, int]]:
        """(sentence id, terms, text, position in entry.sentences()) for each distinct sentence."""
        sentences = entry.sentences()
        given = entry.analyses
        analyses = given if given is not None and len(given) == len(sentences) else self.analyze_entry(entry)
        return [(next(self._next_sid), a, text, pos)
                for pos, (text, a) in enumerate(zip(sentences, analyses, strict=True)) if a is not None]

    def _store(self, entry: FaqEntry, prepared: list[tuple[int, Analysis, str, int]], vectors: Any = None) -> None:
        item = _Indexed(entry, terms=frozenset(t for _s, terms, _x, _p in prepared for t in terms.words))
        for sid, terms, text, _pos in prepared:
            item.sids.append(sid)
            self._sid_entry[sid] = entry.id
            self._sid_text[sid] = text
            self._sid_seq[sid] = terms.seq
        self._entries[entry.id] = item
        self._languages[entry.language] = self._languages.get(entry.language, 0) + 1
        if self.reranker is not None and prepared:
            if vectors is None:
                vectors = self.reranker.encode([text for _s, _t, text, _p in prepared])
            else:
                vectors = vectors[[pos for _s, _t, _x, pos in prepared]]
            self.reranker.set_entry(entry.id, vectors)

    def _given_vectors(self, entry: FaqEntry) -> Any:
        """The entry's stored embeddings when they cover its sentences, else None (they are computed)."""
        vec = entry.vectors
        return vec if vec is not None and getattr(vec, "shape", (0,))[0] == len(entry.sentences()) else None

    def build(self, entries: Iterable[FaqEntry]) -> None:
        """Replace the whole index with these entries (disabled ones are skipped)."""
        self.generation += 1
        self._index = self._new_index()
        self._entries.clear()
        self._languages.clear()
        self._sid_entry.clear()
        self._sid_text.clear()
        self._sid_seq.clear()
        wanted: dict[str, FaqEntry] = {}
        for entry in entries:
            if entry.enabled and entry.id not in wanted:
                wanted[entry.id] = entry
        vectors = self.embed_missing(wanted.values())
        batch: list[tuple[int, tuple[list[str], ...]]] = []
        for entry in wanted.values():
            prepared = self._prepare(entry)
            self._store(entry, prepared, vectors.get(entry.id))
            batch.extend((sid, terms.fields) for sid, terms, _text, _pos in prepared)
        self._index.add_many(batch)
        self.generation += 1  # built in a thread: a match cached meanwhile saw a half-built index

    def embed_missing(self, entries: Iterable[FaqEntry]) -> dict[str, Any]:
        """Re-ranker embeddings by entry id: the stored ones, and the missing ones computed in one batched
        pass (empty without a re-ranker)."""
        if self.reranker is None:
            return {}
        out: dict[str, Any] = {}
        todo: list[FaqEntry] = []
        for e in entries:
            vec = self._given_vectors(e)
            if vec is None:
                todo.append(e)
            else:
                out[e.id] = vec
        if todo:
            flat = self.reranker.encode([s for e in todo for s in e.sentences()])
            at = 0
            for e in todo:
                n = len(e.sentences())
                out[e.id] = flat[at : at + n]
                at += n
        return out

    def add(self, entry: FaqEntry) -> None:
        """Index one entry (replacing an entry with the same id); disabled entries are only removed."""
        self.remove(entry.id)
        self.generation += 1
        if not entry.enabled:
            return
        prepared = self._prepare(entry)
        self._store(entry, prepared, self._given_vectors(entry))
        for sid, terms, _text, _pos in prepared:
            self._index.add(sid, terms.fields)
        self.generation += 1

    def update(self, entry: FaqEntry) -> None:
        """Re-index a changed entry (same as add)."""
        self.add(entry)

    def remove(self, entry_id: str) -> None:
        """Drop an entry from the index; unknown ids are ignored."""
        item = self._entries.pop(entry_id, None)
        if item is None:
            return
        self.generation += 1
        self._languages[item.entry.language] -= 1
        for sid in item.sids:
            self._index.remove(sid)
            del self._sid_entry[sid]
            del self._sid_text[sid]
            del self._sid_seq[sid]
        if self.reranker is not None:
            self.reranker.remove(entry_id)

    def prepare(self, text: str) -> None:
        """Run the costly part of a match that needs no index (the question's embedding) ahead of
        time, e.g. in a worker thread; `match` then finds it cached."""
        if self.reranker is not None and text.strip():
            self.reranker.prepare(text.strip())

    def match(self, text: str, top_k: int = 5) -> MatchResult:
        """Rank entries for a customer question and decide: answer, clarify or reject."""
        cfg = self.config
        lang = question_language(text)
        terms = self._terms(text)
        if not terms.words and not terms.grams:
            return MatchResult("reject", language=lang, features=dict(NO_MATCH))
        fields = terms.fields
        sent_scores = self._index.search(fields)
        if not sent_scores:
            return MatchResult("reject", language=lang, features=dict(NO_MATCH))
        best: dict[str, tuple[float, int]] = {}
        sums: dict[str, float] = {}
        sid_entry = self._sid_entry
        for sid, score in sent_scores.items():
            eid = sid_entry[sid]
            sums[eid] = sums.get(eid, 0.0) + score
            cur = best.get(eid)
            if cur is None or score > cur[0]:
                best[eid] = (score, sid)
        if cfg.prefer_language and 0 < self._languages.get(lang, 0) < len(self._entries):
            entries = self._entries
            same = {e: v for e, v in best.items() if entries[e].entry.language == lang}
            best = same or best  # a knowledge base without entries in this language still answers
        # Rank by the best sentence plus a share of the others: an entry several of whose
        # paraphrases match is more likely the intent than one lucky sentence.
        sw = cfg.sum_weight
        ranked = {e: (s + sw * (sums[e] - s), sid) for e, (s, sid) in best.items()}
        n_keep = max(top_k, cfg.rerank_top_n if self.reranker else 0, cfg.lexical_top_n if cfg.lexical_weight else 0,
                     cfg.clarify_max + 1)
        top = heapq.nlargest(n_keep, ranked.items(), key=lambda kv: kv[1][0])
        # BM25 confidence: the score relative to the query's score against itself (1.0 = as good as an
        # exact restatement, whatever the query's length or index size), squashed into 0..1 by tanh so
        # paraphrase support above an exact match still orders candidates instead of tying at 1.
        norm = self._index.self_score(fields) or 1.0
        scored = [_Scored(eid, s, c, c, sid) for eid, (s, sid) in top for c in (math.tanh(s / norm),)]
        self._lexical_rerank(terms.seq, scored)
        if self.reranker is not None:
            self._rerank(text.strip(), scored)
        scored.sort(key=lambda c: c.conf, reverse=True)
        n_options = sum(1 for c in scored[: cfg.clarify_max] if c.conf >= cfg.clarify_ratio * scored[0].conf)
        feats = self._features(terms, scored)
        feats["options"] = float(n_options)
        rerank = self.reranker is not None
        m1 = self.calibration.model(lang, rerank, "top1")
        m3 = self.calibration.model(lang, rerank, "top3")
        p1 = m1.probability(feats) if m1 else feats["conf1"]
        p3 = max(p1, m3.probability(feats) if m3 else feats["conf1"])
        cands = tuple(Candidate(c.eid, c.score, c.conf, self._sid_text[c.sid]) for c in scored[:top_k])
        # A question that restates one entry's question or paraphrase (same content words in the same order)
        # is answered: the dev sets hold no such questions, so the calibration cannot know them.
        exact = self._restates(terms.seq, scored[0]) and not (len(scored) > 1 and self._restates(terms.seq, scored[1]))
        decision = "answer" if exact else calibration.decide(p1, p3, len(cands), cfg.answer_precision,
                                                              cfg.clarify_precision)
        return MatchResult(decision, cands, round(p1, 4), round(p3, 4), n_options, exact, lang,
                           self.calibration.key(lang, rerank), feats)

    def _restates(self, seq: tuple[str, ...], cand: _Scored) -> bool:
        return bool(seq) and any(self._sid_seq[x] == seq for x in self._entries[cand.eid].sids)

    def _features(self, terms: Analysis, scored: list[_Scored]) -> dict[str, float]:
        """What the calibration looks at: confidences and margins of the best candidates, BM25 alone,
        term coverage, word order, the question's length and the semantic similarity."""
        conf = [c.conf for c in scored[:4]] + [0.0] * (4 - min(4, len(scored)))
        top = scored[0]
        bm = sorted((c.bm25 for c in scored), reverse=True)
        qterms = set(terms.words)
        covered = len(qterms & self.entry_terms(top.eid)) / len(qterms) if qterms else 0.0
        sims = sorted((c.sim for c in scored[1:]), reverse=True)
        return {"conf1": conf[0], "margin": conf[0] - conf[1], "conf3": conf[2], "gap3": conf[2] - conf[3],
                "bm25": top.bm25, "bm25_margin": bm[0] - (bm[1] if len(bm) > 1 else 0.0),
                "coverage": covered, "sent_cover": self._sentence_cover(set(terms.grams), top.eid),
                "lcs": top.lcs, "qterms": math.log1p(len(qterms)),
                "sim": top.sim, "sim_margin": top.sim - (sims[0] if sims else 0.0)}

    def _sentence_cover(self, query_grams: set[str], entry_id: str) -> float:
        """The other direction of coverage: the idf-weighted share of an entry sentence's character terms
        that the question has (best sentence). A sentence with key terms the question lacks (借呗 where
        the customer wrote 花呗) is likely another intent, however well the question's terms matched."""
        best = 0.0
        index = self._index
        postings = index.fields[1].postings
        n = len(index.terms)
        for sid in self._entries[entry_id].sids:
            total = covered = 0.0
            for g in set(index.terms[sid][1]):
                df = len(postings.get(g, ()))
                w = math.log(1 + (n - df + 0.5) / (df + 0.5))  # BM25 idf, as the index weighs terms
                total += w
                if g in query_grams:
                    covered += w
            if total:
                best = max(best, covered / total)
        return best

    def _lexical_rerank(self, query: tuple[str, ...], scored: list[_Scored]) -> None:
        """Fuse BM25 confidence with how much of the query's content, in order, the entry's best sentence holds.

        BM25 treats a sentence as a bag of terms; the longest common subsequence of content characters
        (stop characters dropped) also rewards the same key characters in the same order, which separates
        paraphrases from sentences that merely share a few terms. The query-side coverage (LCS / query
        length) is in 0..1 like the confidence, so the two mix without per-index calibration.
        """
        if not query:
            return
        w = self.config.lexical_weight
        masks = position_masks(query)
        qlen = len(query)
        sid_seq = self._sid_seq
        for c in scored[: self.config.lexical_top_n]:
            # Start from the BM25 best sentence, the one shown, unless another holds more of the query in order.
            best_len, best_sid = lcs_length(masks, qlen, sid_seq[c.sid]), c.sid
            for x in self._entries[c.eid].sids:
                if x != c.sid and (length := lcs_length(masks, qlen, sid_seq[x])) > best_len:
                    best_len, best_sid = length, x
            c.lcs = best_len / qlen
            c.conf = (1 - w) * c.conf + w * c.lcs
            c.sid = best_sid

    def _rerank(self, text: str, scored: list[_Scored]) -> None:
        """Fuse the confidence with the entry's semantic similarity on the top candidates."""
        assert self.reranker is not None
        w = self.config.rerank_weight
        qv = self.reranker.prepare(text)
        for c in scored[: self.config.rerank_top_n]:
            k, sim = self.reranker.entry_similarity(qv, c.eid)
            c.sim = sim = max(0.0, sim)
            if sim > c.conf:
                c.sid = self._entries[c.eid].sids[min(k, len(self._entries[c.eid].sids) - 1)]
            c.conf = (1 - w) * c.conf + w * sim
