"""Search modes and the argument checks every search shares (mode names, result counts).

Scores:

- ``dense``: cosine similarity in [-1, 1] (vectors are normalized). M3E cosines cluster high
  (0.8-0.95 for unrelated same-domain text), so a raw ``score_threshold`` is a blunt tool; prefer
  ``k`` or a threshold calibrated on your own data.
- ``sparse``: the BM25 score (unbounded, > 0).
- ``hybrid``: by default ``0.65 * z_dense + 0.35 * z_bm25``, each list's scores standardised over
  that query's candidates (unitless, about -2 to 4); ``method="rrf"`` gives ``sum(w / (60 + rank))``.

Hybrid fusion itself is :mod:`m3e_rag.retrieve.fusion`; the search that runs a mode is
:mod:`m3e_rag.retrieve.searcher`.
"""

from __future__ import annotations

from typing import Literal, get_args

from m3e_rag.errors import InputError

__all__ = ["SearchMode", "SEARCH_MODES", "check_mode", "check_k"]

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)


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
