"""A model's tokenizer and prompts without its weights: all that sparse-only work needs.

BM25 search caps the query at what the model would read, which takes the model's tokenizer and its
query prompt, not its weights. Loading a model's weights costs seconds and hundreds of MiB; the
tokenizer alone costs milliseconds. :class:`~m3e_rag.encode.encoder.M3EEncoder` answers ``tokenizer``
and the prompts from here until something (a dense search, an ingest) loads the model itself.
Each is read once per folder per process: a sparse-only search asks for them every time.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

from m3e_rag.errors import ModelLoadError

__all__ = ["light_tokenizer", "light_prompts", "light_shape"]

_LOCK = threading.Lock()
_TOKENIZERS: dict[str, Any] = {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {str(path)!r} ({exc}); check the model folder.") from exc


def _tokenizer_folder(model: Path) -> Path:
    """Where a sentence-transformers folder keeps its tokenizer: its Transformer module's folder (``modules.json``)."""
    modules = _read_json(model / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Transformer"):
            return model / str(module.get("path") or "")
    return model


def light_tokenizer(model: Path) -> Any:
    """The fast tokenizer of the model folder ``model``, loaded once per folder per process."""
    key = str(model.resolve())
    with _LOCK:
        found = _TOKENIZERS.get(key)
    if found is not None:
        return found
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(_tokenizer_folder(model)), use_fast=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the message says which folder
        raise ModelLoadError(f"Could not load the tokenizer from {key!r}: {exc}.") from exc
    with _LOCK:
        return _TOKENIZERS.setdefault(key, tokenizer)


@functools.lru_cache(maxsize=32)
def light_prompts(model: Path) -> dict[str, str]:
    """The prompts a sentence-transformers folder declares (``config_sentence_transformers.json``), unloaded."""
    config = _read_json(model / "config_sentence_transformers.json")
    prompts = config.get("prompts") if isinstance(config, dict) else None
    return {k: v for k, v in (prompts or {}).items() if isinstance(k, str) and isinstance(v, str)}


@functools.lru_cache(maxsize=32)
def light_shape(model: Path) -> tuple[int | None, int | None]:
    """``(dim, window)`` as a sentence-transformers folder declares them; None where the files do not say.

    The dimension is the last ``Dense`` module's ``out_features``, else the ``Pooling`` module's
    ``word_embedding_dimension`` when it pools one way; the window is ``sentence_bert_config.json``'s
    ``max_seq_length``. Anything unusual gives None, and the caller loads the model to know.
    """
    modules = _read_json(model / "modules.json")
    dim: int | None = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        config = _read_json(model / str(module.get("path") or "") / "config.json") if kind else None
        if not isinstance(config, dict):
            continue
        if kind.endswith(".Pooling"):
            modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            width = config.get("word_embedding_dimension")
            dim = width if len(modes) == 1 and isinstance(width, int) else None
        elif kind.endswith(".Dense"):
            out = config.get("out_features")
            dim = out if isinstance(out, int) else None
    bert = _read_json(model / "sentence_bert_config.json")
    window = bert.get("max_seq_length") if isinstance(bert, dict) else None
    return dim, window if isinstance(window, int) and window > 0 else None
