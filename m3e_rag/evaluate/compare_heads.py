"""The comparison's modes beyond dense / sparse / hybrid: BM25 by name, and ColBERT as a second stage.

``m3e-rag compare`` scores each model in the modes asked. ``sparse`` and ``hybrid`` use each model's own
sparse list (:mod:`m3e_rag.retrieve.learned`): BM25 for M3E, the learned-sparse output for a model with a
sparse head (BGE-M3). To set the two side by side on the same data, a comparison may also ask for:

- ``sparse-bm25`` / ``hybrid-bm25``: BM25 by name, whatever the model (equal to ``sparse`` / ``hybrid`` for
  a model without a sparse head);
- ``hybrid+colbert``: hybrid, then the ColBERT second stage (:mod:`m3e_rag.retrieve.colbert`); measured for
  models with BGE-M3's heads only, ``-`` for the others.

Each variant runs the same evaluation (:func:`m3e_rag.evaluate.retrieval.evaluate`) through a view of the
pipeline whose searches carry the variant's options; nothing of the evaluation is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.retrieve.modes import SEARCH_MODES, check_mode

__all__ = ["COMPARE_MODES", "VARIANTS", "check_compare_mode", "score_variants"]

#: Variant name -> (search mode, search options, needs the ColBERT head).
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "sparse-bm25": ("sparse", {"sparse": "bm25"}, False),
    "hybrid-bm25": ("hybrid", {"sparse": "bm25"}, False),
    "hybrid+colbert": ("hybrid", {"colbert": True}, True),
}
COMPARE_MODES: tuple[str, ...] = (*SEARCH_MODES, *VARIANTS)


def check_compare_mode(mode: str) -> str:
    """A search mode or a comparison variant, or InputError listing them all."""
    if mode in VARIANTS:
        return mode
    if mode not in SEARCH_MODES:
        raise InputError(f"mode must be one of {', '.join(COMPARE_MODES)}; got {mode!r}.")
    return check_mode(mode)


class _Variant:
    """The pipeline as :func:`evaluate` sees it, each search carrying the variant's options."""

    def __init__(self, pipeline: Any, options: dict[str, Any]) -> None:
        self._pipeline = pipeline
        self._options = options

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipeline.search(*args, **kwargs, **self._options)


def _relabel(progress: Callable[[str, int, int], None], name: str) -> Callable[[str, int, int], None]:
    """``progress`` with every stage reported as the variant's name."""
    return lambda stage, done, total: progress(name, done, total)


def score_variants(
    task: Any, pipeline: Any, modes: Sequence[str], k: int, progress: Callable[[str, int, int], None]
) -> dict[str, dict[str, float] | None]:
    """``{variant: metrics}`` for the variants in ``modes``; None for ``+colbert`` on a model without the head."""
    from m3e_rag.evaluate.retrieval import evaluate

    out: dict[str, dict[str, float] | None] = {}
    for name in modes:
        if name not in VARIANTS:
            continue
        mode, options, needs_colbert = VARIANTS[name]
        if needs_colbert and "colbert" not in getattr(pipeline.encoder, "outputs", ("dense",)):
            out[name] = None
            continue
        report = evaluate(task, _Variant(pipeline, options), [mode], k=k,  # type: ignore[arg-type]
                          progress=_relabel(progress, name))
        out[name] = report.to_dict()[mode]
    return out
