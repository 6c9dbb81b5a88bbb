"""Ranking metrics of retrieval: recall@k, MRR@k and nDCG@k over ranked ids, binary relevance.

Pure arithmetic on lists of ids, best first, so benchmarks can score rankings that did not come
from :func:`m3e_rag.evaluate.retrieval.evaluate`. An id repeated in a ranking counts once, at its
best position; :func:`passage_ranking` turns chunk sources into such a ranking of passages.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

from m3e_rag.errors import InputError
from m3e_rag.retrieve.modes import check_k

__all__ = ["recall_at_k", "mrr_at_k", "ndcg_at_k", "passage_ranking"]


def _check_relevant(relevant: Collection[str]) -> None:
    if not relevant:
        raise InputError("a query needs at least one relevant id to be scored; drop queries without any.")


def _first_k_distinct(ranked: Sequence[str], k: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant ids found in the top ``k`` of ``ranked`` (repeats count once).

    Args:
        ranked: retrieved ids, best first.
        relevant: the relevant ids (non-empty).
        k: the cutoff (``>= 1``).

    Returns:
        ``|top k ∩ relevant| / |relevant|``.
    """
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    return len(rel.intersection(_first_k_distinct(ranked, k))) / len(rel)


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant id within the top ``k``; 0 when there is none."""
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    for rank, item in enumerate(_first_k_distinct(ranked, k), start=1):
        if item in rel:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalized discounted cumulative gain at ``k`` with binary relevance.

    ``DCG = sum(1 / log2(rank + 1))`` over relevant ids in the top ``k``; the ideal DCG puts
    ``min(len(relevant), k)`` relevant ids first. Repeats of an id count once (at their best rank).
    """
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(_first_k_distinct(ranked, k), 1) if item in rel)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(rel), k) + 1))
    return dcg / ideal


def passage_ranking(sources: Iterable[str | None], k: int) -> list[str]:
    """Chunk sources, best first -> distinct passage ids, first occurrence kept, at most ``k``."""
    return _first_k_distinct([s for s in sources if s is not None], k)
