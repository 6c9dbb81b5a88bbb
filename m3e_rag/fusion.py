"""Reciprocal-rank fusion: merge ranked id lists (dense, sparse, ...) into one ranking.

RRF (Cormack, Clarke and Büttcher, 2009) needs no score calibration between retrievers: each list
contributes ``weight / (k + rank)`` to every id it ranks, with ranks starting at 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from m3e_rag.errors import InputError

__all__ = ["rrf_fuse"]


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
