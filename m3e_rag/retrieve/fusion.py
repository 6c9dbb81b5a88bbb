"""Rank fusion: merge scored candidate lists (dense, sparse, ...) into one ranking.

Two ways, both deterministic and free of any second model:

- :func:`zscore_fuse` (what hybrid search uses): each list's scores are standardised per query
  (``(score - mean) / std`` over that list), then combined as a weighted sum. A list whose top hits
  stand far above the rest (a rare term matched in few passages) moves the fused ranking; a list of
  near-equal scores (a common word matched everywhere) hardly does. That is the per-query evidence
  of a retriever's quality that ranks alone cannot carry.
- :func:`rrf_fuse`: reciprocal-rank fusion (Cormack, Clarke and Büttcher, 2009), which ignores scores:
  each list contributes ``weight / (k + rank)`` to every id it ranks, with ranks starting at 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from m3e_rag.errors import InputError

__all__ = ["rrf_fuse", "zscore_fuse"]


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
