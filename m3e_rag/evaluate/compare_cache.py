"""What a model comparison is keyed by, and where it keeps each model's work.

:class:`CompareSettings` is what every model is measured with. Together with the model's resolved
name and digests of the corpus, queries and pairs it keys the cache: a model's index lives under
``<cache_dir>/<model>-<index key>/index`` (key: model, corpus, chunking, backend) and its result
beside it (key: the index key plus queries, pairs and settings), as a :class:`_Slot`. The model's
names for folders (:func:`_cache_name`) and for tables (:func:`_label`) are made here too. Changing
any key orphans cached indexes and results, so they are kept stable.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from m3e_rag.encode.options import BACKENDS
from m3e_rag.encode.registry import spec_for
from m3e_rag.errors import InputError
from m3e_rag.evaluate.compare_heads import check_compare_mode
from m3e_rag.evaluate.pairs import PairSet
from m3e_rag.evaluate.tasks import RetrievalTask
from m3e_rag.retrieve.modes import check_k

__all__ = ["CompareSettings"]

#: Bump when the meaning of a stored result changes, so old results are not read back as new.
_RESULT_VERSION = 1


@dataclass(frozen=True)
class CompareSettings:
    """What every model is measured with (part of the cache key).

    Attributes:
        modes: search modes scored, in order.
        k: cutoff of MRR and nDCG (recall also at 1 and 5).
        limit: score only the first ``limit`` queries (the whole corpus is still indexed).
        chunk_tokens: chunk budget; None uses the pipeline's default (256, capped by the window).
        overlap_tokens: overlap between chunks; None uses the pipeline's default.
        backend: one of :data:`~m3e_rag.encode.options.BACKENDS` for every model.
        device: torch device; None picks CUDA when available.
        latency_queries: single queries timed one at a time (dense mode, embedding included).
        pairs_limit: score only the first ``pairs_limit`` sentence pairs.
    """

    modes: tuple[str, ...] = ("dense", "sparse", "hybrid")
    k: int = 10
    limit: int | None = None
    chunk_tokens: int | None = None
    overlap_tokens: int | None = None
    backend: str = "torch"
    device: str | None = None
    latency_queries: int = 50
    pairs_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.modes:
            raise InputError("modes is empty; give e.g. dense,sparse,hybrid.")
        object.__setattr__(self, "modes", tuple(check_compare_mode(m) for m in dict.fromkeys(self.modes)))
        check_k(self.k, "k")
        for name in ("limit", "chunk_tokens", "overlap_tokens", "pairs_limit"):
            value = getattr(self, name)
            if value is not None and (name != "overlap_tokens" or value != 0):
                check_k(value, name)
        check_k(self.latency_queries, "latency_queries")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}.")

    def pipeline_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`RAGPipeline` (only those set)."""
        out: dict[str, Any] = {"backend": self.backend, "device": self.device}
        if self.chunk_tokens is not None:
            out["chunk_tokens"] = self.chunk_tokens
        if self.overlap_tokens is not None:
            out["overlap_tokens"] = self.overlap_tokens
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["modes"] = list(self.modes)
        return data


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _corpus_digest(task: RetrievalTask) -> str:
    return _digest([[d.source, d.text] for d in task.corpus])


def _queries_digest(task: RetrievalTask) -> str:
    return _digest([[q.qid, q.text, sorted(q.relevant)] for q in task.queries])


def _pairs_digest(pairs: PairSet | None) -> str | None:
    if pairs is None:
        return None
    return _digest([[p.sentence1, p.sentence2, p.label] for p in pairs.pairs])


def _resolved_name(model: str) -> str:
    from m3e_rag.encode.loading import resolve_model_name

    name = resolve_model_name(model)
    local = Path(name).expanduser()
    return str(local.resolve()) if local.exists() else name


_GENERIC_FOLDERS = {"model", "models", "weights", "checkpoint", "snapshot", "main"}


def _cache_name(model: str, resolved: str) -> str:
    """The name part of a model's cache folder (kept stable: changing it orphans cached indexes)."""
    spec = spec_for(model) or spec_for(resolved)
    if spec is not None:
        return spec.alias
    path = Path(resolved)
    return path.name if path.exists() else model


def _label(model: str, resolved: str) -> str:
    """A short name for tables and plots: the alias, else the folder's name (with its parent's if generic)."""
    name = _cache_name(model, resolved)
    path = Path(resolved)
    if path.exists() and (name.lower() in _GENERIC_FOLDERS or re.fullmatch(r"[0-9a-f]{12,}", name)):
        return f"{path.parent.name}/{name}"
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-40:] or "model"


@dataclass(frozen=True)
class _Slot:
    """Where one model's index and result live."""

    folder: Path
    result: Path
    error: Path

    @property
    def index(self) -> Path:
        return self.folder / "index"

    @property
    def index_info(self) -> Path:
        return self.folder / "index.json"


def _slot(cache_dir: Path, resolved: str, cache_name: str, corpus: str, queries: str, pairs: str | None,
          settings: CompareSettings) -> _Slot:
    index_key = _digest({"model": resolved, "corpus": corpus, "chunk_tokens": settings.chunk_tokens,
                         "overlap_tokens": settings.overlap_tokens, "backend": settings.backend})[:12]
    result_key = _digest({"index": index_key, "queries": queries, "pairs": pairs, "version": _RESULT_VERSION,
                          **{k: v for k, v in settings.to_dict().items() if k != "device"}})[:12]
    folder = cache_dir / f"{_slug(cache_name)}-{index_key}"
    return _Slot(folder, folder / f"result-{result_key}.json", folder / f"error-{result_key}.txt")
