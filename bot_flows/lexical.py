"""Lexical helpers of the FAQ matcher: a bit-parallel longest common subsequence (order-aware re-rank)
and grouping of similar texts (unanswered questions)."""

from __future__ import annotations

from collections.abc import Sequence

from bot_flows.normalize import normalize
from bot_flows.tokenize import Analyzer


def position_masks(seq: Sequence[str]) -> dict[str, int]:
    """For each symbol of seq, a bit mask of the positions where it occurs (for lcs_length)."""
    masks: dict[str, int] = {}
    for i, sym in enumerate(seq):
        masks[sym] = masks.get(sym, 0) | (1 << i)
    return masks


def lcs_length(masks: dict[str, int], n: int, other: Sequence[str]) -> int:
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
