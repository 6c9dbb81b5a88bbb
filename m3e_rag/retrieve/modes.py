"""Search strategies over a ChromaStore (dense) and a SparseIndex (BM25): fusion, MMR, thresholds.

Scores:

- ``dense``: cosine similarity in [-1, 1] (vectors are normalized). M3E cosines cluster high
  (0.8-0.95 for unrelated same-domain text), so a raw ``score_threshold`` is a blunt tool; prefer
  ``k`` or a threshold calibrated on your own data.
- ``sparse``: the BM25 score (unbounded, > 0).
- ``hybrid``: by default ``0.65 * z_dense + 0.35 * z_bm25``, each list's scores standardised over
  that query's candidates (unitless, about -2 to 4); ``method="rrf"`` gives ``sum(w / (60 + rank))``.

How hybrid knows when BM25 is useful, per query: z-score fusion weighs BM25 by the *shape* of its
scores on this query. Each list is standardised over its own candidates, BM25's together with its
floor 0 (the score of a chunk holding none of the query's terms, which is what every candidate BM25
did not return gets). A rare term matched in one or a few chunks puts them standard deviations above
the rest and lifts them; a common word matched everywhere gives near-equal scores, z-scores near 0
and no pull; a query with no term in the index gives an empty BM25 list and exactly the dense
ranking; a chunk only BM25 found starts from dense's floor and needs strong evidence to enter.
Rank fusion (RRF) cannot tell these apart: BM25's rank 1 earns the same vote whether it won by a
mile or by a hair, which is why the previous rule (RRF, BM25 weight x coverage squared) still lost
to dense where BM25 matched noise (English questions -> Chinese paragraphs, whose names and numbers
give high coverage and meaningless ranks).

Measured (``benchmarks/fusion.py``, results in ``benchmarks/results/fusion.json``; bilingual stand-in
model, so pipeline figures, not M3E's): dense and BM25 top-50 candidates of every query cached once,
then about 50 fusion variants replayed offline (RRF with coverage powers 0/1/2; z-score with and
without the BM25 floor, min-max and max-normalised convex fusion, dense weights 0.50-0.80, with and
without coverage scaling; in exploration also dense/BM25 top-10 agreement and IDF-weighted coverage
as evidence, which only lowered gains). Chosen on XQuAD's four zh/en directions and English keyword
queries, at ``fetch_k`` 20 and 40: the best mean gain with no loss on any chosen-on set (variants
within 0.001 of the best tied; the tie went to the best worst case). Confirmed on sets not used to
choose. MRR@10 gain over dense at fetch_k 40 (the previous RRF rule in brackets):

- chosen on: XQuAD zh->zh +0.025 (+0.019), en->en +0.017 (+0.010), zh->en +0.008 (+0.003),
  en->zh +0.004 (-0.002), English keyword queries +0.031 (+0.026);
- confirmed on: CMRC 2018 +0.014 (+0.008; 52% of dense's shortfall 1 - MRR removed, against 29%),
  CMRC keyword queries +0.023 (+0.007), XQuAD zh keyword queries +0.034 (+0.027), a mixed zh+en
  corpus +0.020 (+0.014).

Paired per query, the gain over dense is significant (bootstrap 95% interval above 0) on every set
but English questions -> Chinese paragraphs, where it is within noise (interval -0.001 to +0.008):
hybrid no longer loses to dense on any set. Standardising BM25 without its floor scored 0.001 lower
on average and gave a lone BM25 hit (a code or name found in one chunk) no pull at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import numpy as np

from m3e_rag.errors import InputError
from m3e_rag.retrieve.fusion import rrf_fuse, zscore_fuse
from m3e_rag.types import RetrievedChunk

__all__ = ["SearchMode", "FusionMethod", "HybridWeights", "mmr_select", "fuse_hybrid", "Reranker", "rerank"]

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)


#: Ways of fusing the dense and the BM25 candidates (see :class:`HybridWeights`).
FusionMethod = Literal["zscore", "rrf"]
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)


@dataclass(frozen=True)
class HybridWeights:
    """How hybrid search fuses the dense (M3E) and sparse (BM25) candidates of one query.

    Attributes:
        dense: weight of the dense list.
        sparse: weight of the BM25 list, times ``coverage ** coverage_power``. Only the ratio of
            the two weights matters to the ranking.
        method: ``"zscore"`` (default): weighted sum of scores standardised per query and list
            (:func:`~m3e_rag.retrieve.fusion.zscore_fuse`); ``"rrf"``: weighted reciprocal-rank fusion
            (:func:`~m3e_rag.retrieve.fusion.rrf_fuse`), which ignores scores.
        rrf_k: the RRF constant (60 in the original paper); used by ``method="rrf"`` only.
        coverage_power: scales the BM25 weight by ``coverage ** coverage_power`` (coverage: the
            share of the query's BM25 terms known to the index). 0 (default) leaves it as given.

    The defaults (z-score fusion, 0.65 / 0.35, no coverage scaling) were chosen on XQuAD's four
    language directions and English keyword queries and confirmed on CMRC 2018, Chinese keyword
    queries and a mixed zh+en corpus (module docstring). The previous default is
    ``HybridWeights(dense=1.0, sparse=1.0, method="rrf", coverage_power=2.0)``.
    """

    dense: float = 0.65
    sparse: float = 0.35
    method: FusionMethod = "zscore"
    rrf_k: int = 60
    coverage_power: float = 0.0

    def __post_init__(self) -> None:
        """Refuse weights, methods and constants that cannot fuse (named, with the accepted values)."""
        if self.method not in FUSION_METHODS:
            raise InputError(f"HybridWeights.method must be one of {', '.join(FUSION_METHODS)}; got {self.method!r}.")
        for name in ("dense", "sparse", "coverage_power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"HybridWeights.{name} must be a finite number >= 0, got {value!r}.")
        if self.dense == 0 and self.sparse == 0:
            raise InputError("HybridWeights.dense and .sparse are both 0; give at least one a positive weight.")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 0:
            raise InputError(f"HybridWeights.rrf_k must be an integer >= 0, got {self.rrf_k!r}; 60 is usual.")


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
    coverage: float = 1.0,
) -> list[RetrievedChunk]:
    """Fuse a dense and a sparse ranking of one query (z-score or RRF, per ``weights.method``).

    The sparse weight is scaled by ``coverage ** weights.coverage_power`` (coverage: 0..1, the
    share of query terms known to the BM25 index). An empty sparse list (no query term in the
    index) gives exactly the dense ranking. Results carry the fused score and keep
    ``dense_score`` / ``sparse_score`` in their metadata where they had one.
    """
    sparse_weight = weights.sparse * max(0.0, min(1.0, coverage)) ** weights.coverage_power
    if weights.method == "rrf":
        fused = rrf_fuse(
            [[c.id for c in dense], [c.id for c in sparse]],
            weights=[weights.dense, sparse_weight],
            k=weights.rrf_k,
        )
    else:
        fused = zscore_fuse(
            [[(c.id, c.score) for c in dense], [(c.id, c.score) for c in sparse]],
            weights=[weights.dense, sparse_weight],
            floors=[None, 0.0],  # BM25 gives 0 to a chunk without any query term
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
