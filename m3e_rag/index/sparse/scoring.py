"""The BM25 formulas of :class:`~m3e_rag.index.sparse.bm25.SparseIndex`: idf, a term's share, the top k.

Kept apart from the index so the arithmetic that must equal bm25s's scores (its ``lucene``,
``robertson`` and ``atire`` methods, float32 as bm25s computes them) sits in one place, away from
the locking and bookkeeping around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["BM25Method", "idf", "term_scores", "top_k"]

#: BM25 variants offered (all give a score of 0 to a document without any query term).
BM25Method = Literal["lucene", "robertson", "atire"]


def idf(method: BM25Method, df: int, n: int) -> float:
    """Inverse document frequency of a term held by ``df`` of ``n`` live chunks, as ``method`` defines it."""
    if method == "lucene":
        return math.log(1 + (n - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return math.log(max(1.0, (n - df + 0.5) / (df + 0.5)))
    return math.log(n / df)  # atire


def term_scores(
    method: BM25Method, tfs: np.ndarray, lengths: np.ndarray, avgdl: float, k1: float, b: float
) -> np.ndarray:
    """One term's BM25 share (before its idf) in each chunk holding it, from term frequencies and lengths."""
    norm = k1 * ((1 - b) + b * lengths.astype(np.float32) / np.float32(avgdl))
    if method == "atire":
        return tfs * np.float32(k1 + 1) / (tfs + norm)
    return tfs / (tfs + norm)


def top_k(order: Sequence[str | None], positions: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Pick the ``k`` best positions by score, ties by id, as ``(id, score)`` pairs."""
    if len(positions) > k:
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= threshold  # may keep a few more than k when scores tie at the threshold
        positions, scores = positions[keep], scores[keep]
    pairs = [(str(order[p]), float(s)) for p, s in zip(positions.tolist(), scores.tolist(), strict=True)]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs[:k]
