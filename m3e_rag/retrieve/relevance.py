"""Map each search mode's raw scores to relevance in [0, 1] and to Chroma-style distances.

Framework users compare scores across modes and feed them to thresholds (LangChain's
``similarity_score_threshold`` warns and misbehaves outside [0, 1]), so every mode gets a
relevance in [0, 1], higher is better, and a distance ``1 - relevance``, lower is better:

============  ===============================  ==========================================
mode          raw score (RetrievedChunk.score)  relevance in [0, 1]
============  ===============================  ==========================================
dense         cosine similarity in [-1, 1]     ``max(0, cosine)`` (Chroma: ``1 - distance``)
sparse        BM25 score (> 0, unbounded)      ``score / best score of this query``
hybrid        fused score (z-score sum or      the fusion weights' mean of the dense and the
              RRF): no absolute scale          sparse relevance above (kept non-increasing
                                               along the fused order)
reranked      the cross-encoder's score        as given when every score is in [0, 1]
                                               (sentence-transformers applies a sigmoid),
                                               else ``sigmoid(score)``
============  ===============================  ==========================================

Dense distances are exactly Chroma's cosine distances (``1 - cosine``, in [0, 2]), so numbers
match ``langchain_chroma.Chroma`` on a cosine collection. Sparse relevance is relative to the
best BM25 match among the returned results (BM25 has no absolute scale): compare it within one
query. Relevance order is result order in every mode (MMR, which reorders, aside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from m3e_rag.retrieve.fusion import HybridWeights
from m3e_rag.retrieve.modes import check_mode
from m3e_rag.types import RetrievedChunk

__all__ = ["relevance_scores", "chroma_distances"]


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def relevance_scores(
    results: Sequence[RetrievedChunk], mode: str, weights: HybridWeights | None = None
) -> list[float]:
    """Relevance in [0, 1] (higher is better) for results of one search in ``mode``; see the module doc."""
    mode = check_mode(mode)
    if not results:
        return []
    scores = [float(r.score) for r in results]
    if any("retrieval_score" in r.metadata for r in results):  # reranked: the cross-encoder's scores
        if all(0.0 <= s <= 1.0 for s in scores):
            return scores
        return [_sigmoid(s) for s in scores]
    if mode == "dense":
        return [_clamp(s) for s in scores]
    if mode == "sparse":
        best = max(scores)
        return [_clamp(s / best) if best > 0 else 0.0 for s in scores]
    # Hybrid (z-score or RRF fusion alike): the fusion weights' mean of the two lists' own relevances,
    # dense max(0, cosine) and sparse BM25 / best BM25, held non-increasing along the fused order so
    # that relevance order is result order. A fused score itself has no scale (a z-score sum depends on
    # the other candidates: a filter leaving one candidate makes it exactly 0).
    w = weights or HybridWeights()
    total = w.dense + w.sparse
    sparse_scores = [float(r.metadata.get("sparse_score", 0.0)) for r in results]
    best_sparse = max(sparse_scores)
    out: list[float] = []
    for r, sparse in zip(results, sparse_scores, strict=True):
        dense_rel = _clamp(float(r.metadata.get("dense_score", 0.0)))
        sparse_rel = _clamp(sparse / best_sparse) if best_sparse > 0 else 0.0
        value = (w.dense * dense_rel + w.sparse * sparse_rel) / total if total > 0 else 0.0
        out.append(min(value, out[-1]) if out else value)
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def chroma_distances(
    results: Sequence[RetrievedChunk], mode: str, weights: HybridWeights | None = None
) -> list[float]:
    """Distances (lower is better) as ``langchain_chroma.Chroma.similarity_search_with_score`` returns them.

    Dense: Chroma's cosine distance ``1 - cosine`` (in [0, 2]); other modes: ``1 - relevance`` (in [0, 1]).
    """
    if check_mode(mode) == "dense" and not any("retrieval_score" in r.metadata for r in results):
        return [1.0 - float(r.score) for r in results]
    return [1.0 - r for r in relevance_scores(results, mode, weights)]
