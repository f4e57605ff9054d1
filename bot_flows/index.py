"""An incremental BM25 inverted index over sentences, with one or more weighted term fields."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


class _Field:
    """One term field (e.g. jieba words or character n-grams) of the index."""

    __slots__ = ("weight", "postings", "lengths", "total", "frozen_avg")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        # term -> {sentence id: BM25 term-frequency factor}; the factor uses frozen_avg, refreshed on drift
        self.postings: dict[str, dict[int, float]] = {}
        self.lengths: dict[int, int] = {}
        self.total = 0
        self.frozen_avg = 0.0

    def avg(self) -> float:
        return self.total / len(self.lengths) if self.lengths else 1.0


class BM25Index:
    """Sentences are added and removed one by one; queries touch only the postings of their terms.

    Term-frequency factors are precomputed with a frozen average length, recomputed for the whole
    index only when the live average drifts by more than `drift` (amortized, never per change).
    """

    def __init__(self, weights: Sequence[float], k1: float = 1.2, b: float = 0.75, drift: float = 0.1,
                 candidate_budget: int = 500) -> None:
        self.k1 = k1
        self.b = b
        self.drift = drift
        self.candidate_budget = candidate_budget
        self.fields = [_Field(w) for w in weights]
        self.terms: dict[int, tuple[Counter[str], ...]] = {}

    def __len__(self) -> int:
        return len(self.terms)

    def _factor(self, tf: int, length: int, avg: float) -> float:
        k1 = self.k1
        return tf * (k1 + 1) / (tf + k1 * (1 - self.b + self.b * length / avg))

    def add(self, sid: int, field_terms: Sequence[Sequence[str]]) -> None:
        """Index one sentence given its terms per field."""
        counts = tuple(Counter(t) for t in field_terms)
        self.terms[sid] = counts
        for field, cnt in zip(self.fields, counts, strict=True):
            length = sum(cnt.values())
            field.lengths[sid] = length
            field.total += length
            if field.frozen_avg == 0.0:
                field.frozen_avg = max(field.avg(), 1.0)
            for term, tf in cnt.items():
                field.postings.setdefault(term, {})[sid] = self._factor(tf, length, field.frozen_avg)

    def add_many(self, items: Sequence[tuple[int, Sequence[Sequence[str]]]]) -> None:
        """Bulk add: freeze the average length over the whole batch first, so no reweighting follows."""
        for fi, field in enumerate(self.fields):
            total = field.total + sum(len(terms[fi]) for _sid, terms in items)
            count = len(field.lengths) + len(items)
            if count and (field.frozen_avg == 0.0 or not field.lengths):
                field.frozen_avg = max(total / count, 1.0)
        for sid, terms in items:
            self.add(sid, terms)
        self._maybe_reweight()

    def remove(self, sid: int) -> None:
        """Drop one sentence from every posting list it is in."""
        counts = self.terms.pop(sid, None)
        if counts is None:
            return
        for field, cnt in zip(self.fields, counts, strict=True):
            field.total -= field.lengths.pop(sid)
            for term in cnt:
                post = field.postings[term]
                del post[sid]
                if not post:
                    del field.postings[term]

    def _maybe_reweight(self) -> None:
        for fi, field in enumerate(self.fields):
            live = field.avg()
            if field.frozen_avg and abs(live - field.frozen_avg) > self.drift * field.frozen_avg:
                field.frozen_avg = max(live, 1.0)
                for term, post in field.postings.items():
                    for sid in post:
                        post[sid] = self._factor(self.terms[sid][fi][term],
                                                 field.lengths[sid], field.frozen_avg)

    def idf(self, fi: int, term: str) -> float:
        """BM25 idf (the always-positive Lucene variant) of a term in field fi."""
        n = len(self.terms)
        df = len(self.fields[fi].postings.get(term, ()))
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def self_score(self, field_terms: Sequence[Sequence[str]]) -> float:
        """The score the query would get against a sentence identical to itself (for confidence)."""
        self._maybe_reweight()
        total = 0.0
        for fi, (field, terms) in enumerate(zip(self.fields, field_terms, strict=True)):
            cnt = Counter(terms)
            length = len(terms)
            for term, tf in cnt.items():
                total += field.weight * self.idf(fi, term) * self._factor(tf, length, field.frozen_avg or 1.0)
        return total

    def search(self, field_terms: Sequence[Sequence[str]]) -> dict[int, float]:
        """Sentence id -> score for sentences sharing a term with the query.

        Terms are visited rarest first (highest idf). Once the candidate set would grow past
        `candidate_budget`, a more common term only adds to sentences already found (think 么 or 钱
        as character unigrams), so a query never walks the whole collection; a sentence sharing
        only common terms with the query could not have ranked high anyway.
        """
        self._maybe_reweight()
        n = len(self.terms)
        if not n:
            return {}
        budget = self.candidate_budget
        plan: list[tuple[float, dict[int, float]]] = []
        for _fi, (field, terms) in enumerate(zip(self.fields, field_terms, strict=True)):
            for term, qtf in Counter(terms).items():
                post = field.postings.get(term)
                if post:
                    df = len(post)
                    plan.append((field.weight * qtf * math.log(1 + (n - df + 0.5) / (df + 0.5)), post))
        plan.sort(key=lambda p: len(p[1]))
        acc: dict[int, float] = {}
        get = acc.get
        for w, post in plan:
            if not acc or len(post) <= 32 or len(acc) + len(post) <= budget:
                for sid, f in post.items():
                    acc[sid] = get(sid, 0.0) + w * f
            elif len(post) < len(acc):
                for sid, f in post.items():
                    if sid in acc:
                        acc[sid] += w * f
            else:
                pget = post.get
                for sid in acc:
                    g = pget(sid)
                    if g is not None:
                        acc[sid] += w * g
        return acc
