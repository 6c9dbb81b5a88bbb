"""Search strategies over a ChromaStore (dense) and a SparseIndex (BM25): fusion, MMR, thresholds.

Scores:

- ``dense``: cosine similarity in [-1, 1] (vectors are normalized). M3E cosines cluster high
  (0.8-0.95 for unrelated same-domain text), so a raw ``score_threshold`` is a blunt tool; prefer
  ``k`` or a threshold calibrated on your own data.
- ``sparse``: the BM25 score (unbounded, > 0).
- ``hybrid``: the weighted reciprocal-rank-fusion score, sum of ``w / (60 + rank)``.

Hybrid weighs BM25 by how much of the query it can see: the sparse weight is multiplied by
``coverage ** 2``, coverage being the share of the query's BM25 terms that occur in the corpus.
Within one language coverage is near 1 (0.9-0.96 measured) and BM25 keeps most of its weight
(0.9 ** 2 = 0.81). Across languages BM25 sees only a fragment of the question (numbers, Latin
names; mean coverage 0.03-0.07, most questions 0) and ranks on it unreliably: with the bilingual
stand-in on XQuAD, that fragment lifted Chinese questions -> English paragraphs (MRR@10 +0.010
at weight ``coverage``) but pulled English questions -> Chinese paragraphs down (-0.011), and
-0.061 unweighted. RRF votes are flat (rank 1 earns 1/61, rank 10 earns 1/70): at weight 0.15 a
BM25 rank-1 vote (0.0025) lifts a passage from dense rank 10 to 1; squared (0.02, a vote of
0.0003) it can only swap near neighbours. Hybrid then stays within 0.002 of dense in both
directions (+0.003 and -0.002, within one standard error) and keeps its gains within a language
(+0.008 CMRC 2018, +0.010 XQuAD en, +0.019 XQuAD zh). A question sharing no term with the corpus
gets exactly the dense ranking.
(``m3e-rag eval`` and ``benchmarks/results/fusion_ablation.json`` have the figures.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import numpy as np

from .errors import InputError
from .fusion import rrf_fuse
from .types import RetrievedChunk

__all__ = ["SearchMode", "HybridWeights", "mmr_select", "fuse_hybrid", "Reranker", "rerank"]

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)


@dataclass(frozen=True)
class HybridWeights:
    """Weights of the two rankings in reciprocal-rank fusion.

    Attributes:
        dense: weight of the M3E ranking.
        sparse: weight of the BM25 ranking, scaled by ``coverage ** coverage_power`` (see module doc).
        rrf_k: the RRF constant (60 in the original paper).
        coverage_power: how fast the BM25 weight falls as the query's coverage does: 2 (default)
            mutes BM25 on cross-lingual queries, 1 scales it linearly, 0 ignores coverage.

    The defaults were checked against RRF k 10-100, sparse weights 0.5-1.5, fetch_k 20/40 and
    coverage powers 0/1/2 on CMRC 2018 and four XQuAD directions (bilingual stand-in model): no
    setting beat them on every task by more than the noise (standard error of a task's gain
    about 0.001-0.004 MRR@10); power 2 is the one that does not hurt either cross-lingual direction.
    """

    dense: float = 1.0
    sparse: float = 1.0
    rrf_k: int = 60
    coverage_power: float = 2.0


class Reranker(Protocol):
    """Anything with a sentence-transformers ``CrossEncoder``-like ``predict`` method."""

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> Any:
        """Score each (query, passage) pair; higher is more relevant."""
        ...


def check_mode(mode: str) -> SearchMode:
    """Validate a search mode name."""
    if mode not in SEARCH_MODES:
        raise InputError(f"mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}.")
    return mode  # type: ignore[return-value]


def check_k(k: object, name: str = "k") -> int:
    """Validate a result count."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"{name} must be a positive integer, got {k!r}.")
    return k


def mmr_select(
    query: np.ndarray, candidates: Sequence[np.ndarray], k: int, lambda_mult: float = 0.5
) -> list[int]:
    """Maximal marginal relevance: pick ``k`` candidates relevant to the query but unlike each other.

    Args:
        query: the (normalized) query vector.
        candidates: (normalized) candidate vectors, best first.
        k: how many to pick.
        lambda_mult: 1.0 is pure relevance, 0.0 pure diversity.

    Returns:
        Indices into ``candidates`` in pick order.
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise InputError(f"lambda_mult must be between 0 and 1, got {lambda_mult!r}.")
    if not candidates or k <= 0:
        return []
    mat = np.stack([np.asarray(c, dtype=np.float32) for c in candidates])
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    q = np.asarray(query, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    relevance = mat @ q
    chosen = [int(np.argmax(relevance))]
    similarity_to_chosen = mat @ mat[chosen[0]]
    while len(chosen) < min(k, len(candidates)):
        score = lambda_mult * relevance - (1.0 - lambda_mult) * similarity_to_chosen
        score[chosen] = -np.inf
        nxt = int(np.argmax(score))
        chosen.append(nxt)
        similarity_to_chosen = np.maximum(similarity_to_chosen, mat @ mat[nxt])
    return chosen


def fuse_hybrid(
    dense: Sequence[RetrievedChunk],
    sparse: Sequence[RetrievedChunk],
    weights: HybridWeights,
    coverage: float,
) -> list[RetrievedChunk]:
    """Fuse a dense and a sparse ranking with weighted RRF.

    The sparse weight is scaled by ``coverage ** weights.coverage_power`` (coverage: 0..1, the
    share of query terms known to the BM25 index). Results carry the fused score and keep
    ``dense_score`` / ``sparse_score`` in their metadata where they had one.
    """
    if not weights.coverage_power >= 0:
        raise InputError(f"coverage_power must be a number >= 0, got {weights.coverage_power!r}; 2 is the default.")
    sparse_weight = weights.sparse * max(0.0, min(1.0, coverage)) ** weights.coverage_power
    fused = rrf_fuse(
        [[c.id for c in dense], [c.id for c in sparse]],
        weights=[weights.dense, sparse_weight],
        k=weights.rrf_k,
    )
    by_id: dict[str, RetrievedChunk] = {c.id: c for c in sparse}
    by_id.update({c.id: c for c in dense})
    dense_scores = {c.id: c.score for c in dense}
    sparse_scores = {c.id: c.score for c in sparse}
    out = []
    for cid, score in fused:
        base = by_id[cid]
        meta = dict(base.metadata)
        if cid in dense_scores:
            meta["dense_score"] = dense_scores[cid]
        if cid in sparse_scores:
            meta["sparse_score"] = sparse_scores[cid]
        out.append(RetrievedChunk(cid, base.text, float(score), meta))
    return out


def rerank(
    reranker: Reranker, query: str, results: Sequence[RetrievedChunk], batch_size: int = 32
) -> list[RetrievedChunk]:
    """Re-order results by a cross-encoder's score (stored as the new score; the old one is kept).

    The previous score is kept in metadata as ``retrieval_score``.
    """
    if not results:
        return []
    pairs = [(query, r.text) for r in results]
    scores = np.asarray(reranker.predict(pairs, batch_size=batch_size, show_progress_bar=False), dtype=np.float64)
    if scores.shape[0] != len(results):
        raise InputError(
            f"The reranker returned {scores.shape[0]} scores for {len(results)} passages; pass a model whose "
            "predict() scores each (query, passage) pair, such as a sentence_transformers.CrossEncoder."
        )
    order = np.argsort(-scores.reshape(len(results), -1)[:, 0], kind="stable")
    out = []
    for i in order:
        r = results[int(i)]
        meta = {**r.metadata, "retrieval_score": r.score}
        out.append(RetrievedChunk(r.id, r.text, float(scores.reshape(len(results), -1)[int(i), 0]), meta))
    return out


def strip_private(results: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
    """Drop internal metadata keys (stored vectors) before results reach the caller."""
    return [
        RetrievedChunk(r.id, r.text, r.score, {k: v for k, v in r.metadata.items() if not k.startswith("_")})
        if any(k.startswith("_") for k in r.metadata)
        else r
        for r in results
    ]
