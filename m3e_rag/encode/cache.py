"""The per-process model cache: one loaded model per (model, device, backend, options), shared by every encoder.

Every framework adapter and the pipeline build their own :class:`~m3e_rag.encode.encoder.M3EEncoder`, often
for the same model; they share the weights, the counters and the lock held while a batch runs, so a
process never holds two copies of one model. :mod:`m3e_rag.encode.loader` builds the entries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from m3e_rag.encode.native import NativeSentenceModel

    #: What runs the torch backend: sentence-transformers' model, or the same interface over transformers alone.
    SentenceModel = SentenceTransformer | NativeSentenceModel

__all__ = ["EncodeStats"]


@dataclass
class EncodeStats:
    """Running counters of one loaded model (shared by every encoder that uses it)."""

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0


@dataclass
class _LoadedModel:
    """A loaded model and what is derived from it once."""

    name: str
    path: Path
    st: SentenceModel
    runner: Any  # callable(features) -> torch.Tensor of sentence embeddings
    max_seq_length: int
    dim: int
    prompts: dict[str, str]
    max_batch_tokens: int = 1 << 30
    pad_token_id: int | None = None  # None: the tokenizer pads on the left or has no pad token: never pad more
    max_positions: int = 512
    dtype: str = "float32"  # what the weights run in
    half_cosine: float | None = None  # min cosine float16/bfloat16 vs float32 on the probe texts (None: not checked)
    onednn_pending: bool = False  # pack the Linears for oneDNN once ONEDNN_AFTER_TOKENS have been asked for
    untrimmed_tokens: int = 0  # padded tokens run since the heap was last trimmed (TRIM_EVERY_PADDED_TOKENS)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stats: EncodeStats = field(default_factory=EncodeStats)


_MODELS: dict[tuple[Any, ...], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _is_cached(key: tuple[Any, ...]) -> bool:
    """Whether the model under ``key`` is already in memory in this process."""
    return key in _MODELS


def _cached_model(key: tuple[Any, ...], load: Callable[[], _LoadedModel]) -> _LoadedModel:
    """The model under ``key``, loaded by ``load()`` the first time (once, even when threads race)."""
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = load()
            _MODELS[key] = model
    return model
