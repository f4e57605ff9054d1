"""An incremental BM25 inverted index over sentences, with one or more weighted term fields.

Postings live in dicts (cheap to change one sentence at a time); a query scores every sentence that
shares a term with it, exactly, by adding each posting list into a dense score array with numpy.
The array view of a posting list is built on first use and dropped when that list changes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


class _Field:
    """One term field (e.g. jieba words or character n-grams) of the index."""

    __slots__ = ("weight", "postings", "lengths", "total", "frozen_avg", "arrays")

    def __init__(self, weight: float) -> None:
        self.weight = weight
        # term -> {slot: BM25 term-frequency factor}; the factor uses frozen_avg, refreshed on drift
        self.postings: dict[str, dict[int, float]] = {}
        self.lengths: dict[int, int] = {}
        self.total = 0
        self.frozen_avg = 0.0
        # term -> (slots, factors) as arrays, for the posting lists queries have used since they changed
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def avg(self) -> float:
        return self.total / len(self.lengths) if self.lengths else 1.0

    def array(self, term: str, post: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
        arr = self.arrays.get(term)
        if arr is None:
            n = len(post)
            arr = self.arrays[term] = (np.fromiter(post.keys(), np.int64, n), np.fromiter(post.values(), np.float64, n))
        return arr


class BM25Index:
    """Sentences are added and removed one by one; queries touch only the postings of their terms.

    Term-frequency factors are precomputed with a frozen average length, recomputed for the whole
    index only when the live average drifts by more than `drift` (amortized, never per change).
    Each sentence id gets a dense slot (freed slots are reused), so the score array stays as small as
    the live index however many updates it has seen.
    """

    def __init__(self, weights: Sequence[float], k1: float = 1.2, b: float = 0.75, drift: float = 0.1,
                 max_results: int = 256) -> None:
        self.k1 = k1
        self.b = b
        self.drift = drift
        self.max_results = max_results
        self.fields = [_Field(w) for w in weights]
        # sentence id -> its terms per field, as given (tuples are far smaller than Counters)
        self.terms: dict[int, tuple[tuple[str, ...], ...]] = {}
        self._slot: dict[int, int] = {}
        self._sid_of: list[int] = []  # slot -> sentence id (-1 when free)
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.terms)

    def _factor(self, tf: int, length: int, avg: float) -> float:
        k1 = self.k1
        return tf * (k1 + 1) / (tf + k1 * (1 - self.b + self.b * length / avg))

    def add(self, sid: int, field_terms: Sequence[Sequence[str]]) -> None:
        """Index one sentence given its terms per field (an id already present is replaced)."""
        if sid in self.terms:
            self.remove(sid)
        self.terms[sid] = tuple(tuple(t) for t in field_terms)
        if self._free:
            slot = self._free.pop()
            self._sid_of[slot] = sid
        else:
            slot = len(self._sid_of)
            self._sid_of.append(sid)
        self._slot[sid] = slot
        k1, b = self.k1, self.b
        for field, terms in zip(self.fields, field_terms, strict=True):
            length = len(terms)
            field.lengths[slot] = length
            field.total += length
            if field.frozen_avg == 0.0:
                field.frozen_avg = max(field.avg(), 1.0)
            norm = k1 * (1 - b + b * length / field.frozen_avg)
            postings, arrays = field.postings, field.arrays
            for term, tf in Counter(terms).items():
                factor = tf * (k1 + 1) / (tf + norm)
                post = postings.get(term)
                if post is None:
                    postings[term] = {slot: factor}
                else:
                    post[slot] = factor
                    if arrays:
                        arrays.pop(term, None)

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
        # Build the array views of the long posting lists now rather than on the first queries that
        # use them (one 10k-long list takes ~0.3 ms to convert); short ones are cheap on demand.
        for field in self.fields:
            for term, post in field.postings.items():
                if len(post) > 32:
                    field.array(term, post)

    def remove(self, sid: int) -> None:
        """Drop one sentence from every posting list it is in."""
        field_terms = self.terms.pop(sid, None)
        if field_terms is None:
            return
        slot = self._slot.pop(sid)
        self._sid_of[slot] = -1
        self._free.append(slot)
        for field, terms in zip(self.fields, field_terms, strict=True):
            field.total -= field.lengths.pop(slot)
            for term in set(terms):
                post = field.postings[term]
                del post[slot]
                field.arrays.pop(term, None)
                if not post:
                    del field.postings[term]

    def _maybe_reweight(self) -> None:
        for fi, field in enumerate(self.fields):
            live = max(field.avg(), 1.0)  # frozen_avg is floored at 1 too, so an empty field never "drifts"
            if field.frozen_avg and abs(live - field.frozen_avg) > self.drift * field.frozen_avg:
                field.frozen_avg = live
                field.arrays.clear()
                for sid, slot in self._slot.items():
                    length = field.lengths[slot]
                    for term, tf in Counter(self.terms[sid][fi]).items():
                        field.postings[term][slot] = self._factor(tf, length, field.frozen_avg)

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
        """Sentence id -> exact BM25 score for the best `max_results` sentences sharing a term with the query."""
        self._maybe_reweight()
        n = len(self.terms)
        if not n:
            return {}
        acc = np.zeros(len(self._sid_of))
        for field, terms in zip(self.fields, field_terms, strict=True):
            for term, qtf in Counter(terms).items():
                post = field.postings.get(term)
                if post:
                    df = len(post)
                    slots, factors = field.array(term, post)
                    # Slots within one posting list are distinct, so the buffered += adds each once.
                    acc[slots] += (field.weight * qtf * math.log(1 + (n - df + 0.5) / (df + 0.5))) * factors
        hit = np.flatnonzero(acc)
        if len(hit) > self.max_results:
            hit = hit[np.argpartition(acc[hit], -self.max_results)[-self.max_results:]]
        sid_of = self._sid_of
        return {sid_of[slot]: score for slot, score in zip(hit.tolist(), acc[hit].tolist(), strict=True)}
