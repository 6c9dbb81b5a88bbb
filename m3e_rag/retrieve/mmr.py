"""Maximal marginal relevance: diversify a ranking by picking results unlike the ones already picked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3e_rag.errors import InputError

__all__ = ["mmr_select"]


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
