"""Hybrid fusion: merge the dense (M3E) and the BM25 candidates of one query into one ranking.

:func:`fuse_hybrid` fuses one query's two lists as :class:`HybridWeights` say, with one of two
rank-fusion rules over scored candidate lists, both deterministic and free of any second model:

- :func:`zscore_fuse` (what hybrid search uses): each list's scores are standardised per query
  (``(score - mean) / std`` over that list), then combined as a weighted sum. A list whose top hits
  stand far above the rest (a rare term matched in few passages) moves the fused ranking; a list of
  near-equal scores (a common word matched everywhere) hardly does. That is the per-query evidence
  of a retriever's quality that ranks alone cannot carry.
- :func:`rrf_fuse`: reciprocal-rank fusion (Cormack, Clarke and Büttcher, 2009), which ignores scores:
  each list contributes ``weight / (k + rank)`` to every id it ranks, with ranks starting at 1.

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

The z-score rule, its BM25 floor and the default weights were chosen by replaying about 50 fusion
variants offline over cached dense and BM25 candidates (``benchmarks/fusion.py``): the best mean
gain over dense with no loss on any set it was chosen on, confirmed on sets not used to choose
(figures: benchmarks/README.md, 'Design figures').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from m3e_rag.errors import InputError
from m3e_rag.types import RetrievedChunk

__all__ = ["FusionMethod", "HybridWeights", "fuse_hybrid", "rrf_fuse", "zscore_fuse"]

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
    queries and a mixed zh+en corpus (figures: benchmarks/README.md, 'Design figures'). The previous default is
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


def rrf_fuse(
    rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = 60
) -> list[tuple[str, float]]:
    """Fuse rankings by weighted reciprocal rank.

    The score of an id is ``sum(weights[i] / (k + rank_i))`` over the rankings ``i`` that hold it,
    ``rank_i`` being its 1-based position there (an id repeated within one ranking counts once, at
    its best position).

    Args:
        rankings: ranked id lists, best first (e.g. dense top-k ids, then BM25 top-k ids).
        weights: one weight ``>= 0`` per ranking; ``None`` weighs every ranking 1.
        k: the RRF constant (``>= 0``); 60 is the value of the original paper.

    Returns:
        ``(id, score)`` pairs for every id in any ranking, best first; equal scores are ordered by
        the id's best rank in any single ranking, then by id.

    Raises:
        InputError: if ``weights`` does not match ``rankings`` in length, a weight is negative or
            not finite, ``k`` is negative, or a ranking is a bare string.

    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise InputError(f"the RRF constant k must be a number >= 0, got {k!r}; 60 is the usual value")
    if weights is None:
        weights = [1.0] * len(rankings)
    elif len(weights) != len(rankings):
        raise InputError(f"rrf_fuse got {len(weights)} weights for {len(rankings)} rankings; give one each")
    for weight in weights:
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InputError(f"RRF weights must be finite numbers >= 0, got {weight!r}")

    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if isinstance(ranking, str):
            raise InputError("each ranking must be a sequence of ids, got one str; wrap it in a list")
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            if rank < best_rank.get(item, rank + 1):
                best_rank[item] = rank
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))
    return fused


def _check_weights(weights: Sequence[float] | None, n: int, what: str) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise InputError(f"{what} got {len(weights)} weights for {n} rankings; give one each")
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise InputError(f"fusion weights must be finite numbers >= 0, got {weight!r}")
    return [float(w) for w in weights]


def zscore_fuse(
    scored: Sequence[Sequence[tuple[str, float]]],
    weights: Sequence[float] | None = None,
    floors: Sequence[float | None] | None = None,
) -> list[tuple[str, float]]:
    """Fuse scored lists by a weighted sum of per-list standardised scores.

    Each list's scores become ``(score - mean) / std`` (population std; equal scores give 0). When a
    list has a known floor (BM25: 0, the score of a document holding none of the query's terms), that
    floor joins the population once and every id missing from the list gets the floor's standardised
    score: a lone BM25 hit then stands one standard deviation above "no match" instead of carrying no
    signal. Without a floor, a missing id gets the list's lowest standardised score. Either way an empty
    list leaves the others' order unchanged, and so does a list that gives every candidate the same score.

    Args:
        scored: ``(id, score)`` lists, higher score better (e.g. dense cosines, then BM25 scores).
            An id repeated within one list counts once, with its best score.
        weights: one weight ``>= 0`` per list; ``None`` weighs every list 1. Only their ratio matters.
        floors: per list, the score of an id it did not return, or None when unknown (default: all None).

    Returns:
        ``(id, fused score)`` pairs for every id in any list, best first; equal fused scores are
        ordered by the id's best rank in any single list, then by id.

    Raises:
        InputError: if ``weights`` or ``floors`` does not match ``scored`` in length, a weight is
            negative or not finite, or a score or floor is not a finite number.

    """
    ws = _check_weights(weights, len(scored), "zscore_fuse")
    if floors is None:
        floors = [None] * len(scored)
    elif len(floors) != len(scored):
        raise InputError(f"zscore_fuse got {len(floors)} floors for {len(scored)} lists; give one each (or None)")
    standardised: list[dict[str, float]] = []
    missing: list[float] = []
    best_rank: dict[str, int] = {}
    for items, floor in zip(scored, floors, strict=True):
        if isinstance(items, str):
            raise InputError("each scored list must be a sequence of (id, score) pairs, got one str")
        best: dict[str, float] = {}
        for rank, (item, score) in enumerate(items, start=1):
            value = float(score)
            if not math.isfinite(value):
                raise InputError(f"scores must be finite numbers, got {score!r} for id {item!r}")
            if item not in best or value > best[item]:
                best[item] = value
            if rank < best_rank.get(item, rank + 1):
                best_rank[item] = rank
        population = list(best.values())
        if floor is not None:
            if not math.isfinite(floor):
                raise InputError(f"floors must be finite numbers or None, got {floor!r}")
            population.append(float(floor))
        mean = math.fsum(population) / len(population) if population else 0.0
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in population) / len(population)) if population else 0.0

        def standard(value: float, mean: float = mean, std: float = std) -> float:
            return (value - mean) / std if std > 1e-12 else 0.0

        z = {item: standard(value) for item, value in best.items()}
        standardised.append(z)
        missing.append(standard(float(floor)) if floor is not None else min(z.values(), default=0.0))
    fused = {
        item: math.fsum(w * z.get(item, low) for w, z, low in zip(ws, standardised, missing, strict=True))
        for item in best_rank
    }
    return sorted(fused.items(), key=lambda pair: (-pair[1], best_rank[pair[0]], pair[0]))
