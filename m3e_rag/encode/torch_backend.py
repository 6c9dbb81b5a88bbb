"""Running tokenized batches through the torch model (``backend="torch"``), sentence-transformers' or native.

What the torch backend does to a batch beyond calling the model: right-padding to a few shapes (oneDNN and
CUDA kernels are built per shape), pinned host memory for an asynchronous CUDA copy, routing the Linear
layers through oneDNN once enough work has arrived (CPU), and sentence-transformers' multi-process pool
(CUDA). Nothing here imports torch until a batch runs.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from m3e_rag.encode.cache import SentenceModel, _LoadedModel

__all__ = ["ONEDNN_AFTER_TOKENS", "ONEDNN_ENV", "PAD_TO_MULTIPLE"]

# The encoder's name, as before these helpers left encoder.py: the CLI's log lines show it.
logger = logging.getLogger("m3e_rag.encode.encoder")

#: The torch backend pads every batch's token length up to a multiple of this (right-padding, masked: the
#: vectors are the same up to float rounding). oneDNN builds and caches kernels per distinct input shape,
#: and an ingest of varied-length chunks meets hundreds of shapes: fewer shapes lower its peak memory at
#: the same speed, and multiples of 8 are also what CUDA's tensor cores want in half precision
#: (figures: benchmarks/README.md, 'Design figures').
PAD_TO_MULTIPLE = 8
#: ... except batches shorter than this many tokens, which run at their own length: short texts (queries,
#: chat messages) would pay up to 7 tokens in 8-24 for the rounding (10-23% of the texts/s of short
#: queries on the m3e-base shape), while their few distinct lengths keep the kernel caches small anyway
#: (figures: benchmarks/README.md, 'Design figures').
PAD_FROM_LENGTH = 64
#: Set to ``0`` to keep torch's default CPU GEMM for the torch backend (see ``m3e_rag.encode.onednn``).
ONEDNN_ENV = "M3E_RAG_ONEDNN"
#: The torch backend packs its Linear weights for oneDNN (CPU) once a process has asked for this many
#: tokens, not at load: packing costs a fixed time that the faster forward passes pay back, so packing when
#: that much work has arrived is the ski-rental rule: a one-shot ``m3e-rag search`` (one short query) never
#: pays it, and an ingest or a server packs on its first real batch (figures: benchmarks/README.md,
#: 'Design figures').
ONEDNN_AFTER_TOKENS = 256


def _is_sentence_transformer(st: object) -> bool:
    """Whether ``st`` was loaded by sentence-transformers (without importing it where it was not)."""
    module = sys.modules.get("sentence_transformers")
    return module is not None and isinstance(st, module.SentenceTransformer)


def _hf_config(st: Any) -> Any:
    """The Hugging Face configuration of the encoder inside ``st`` (None where there is none)."""
    model = getattr(st, "auto_model", None)
    if model is None and _is_sentence_transformer(st):
        model = getattr(st[0], "auto_model", None)
    return getattr(model, "config", None)


def _padding_of(st: SentenceModel, max_len: int) -> tuple[int | None, int]:
    """(pad token id, longest padded length) for :func:`_pad_features`; a None id turns extra padding off.

    Only right-padding tokenizers qualify: padding on the left would shift the real tokens' positions.
    """
    tokenizer = getattr(st, "tokenizer", None)
    config = _hf_config(st)
    positions = int(getattr(config, "max_position_embeddings", 0) or max_len)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if getattr(tokenizer, "padding_side", "right") != "right" or not isinstance(pad_id, int):
        return None, positions
    return pad_id, positions


#: The features a tokenizer returns per token; a batch with any other per-token tensor is left as it is.
_PER_TOKEN_FEATURES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}


def _pad_features(features: dict[str, Any], pad_id: int | None, max_positions: int) -> dict[str, Any]:
    """Right-pad a batch's token tensors to a multiple of :data:`PAD_TO_MULTIPLE` (masked, so the vectors keep).

    Returns ``features`` unchanged where padding is off (``pad_id`` None), not needed (a batch shorter than
    :data:`PAD_FROM_LENGTH` tokens, or already a multiple), would pass the
    model's position table, or where the batch holds a per-token tensor this function does not know.
    """
    ids = features.get("input_ids")
    if pad_id is None or ids is None or ids.dim() != 2 or "attention_mask" not in features:
        return features
    length = int(ids.shape[1])
    if length < PAD_FROM_LENGTH:
        return features
    target = min(-(-length // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE, max_positions)
    if target <= length:
        return features
    per_token = [k for k, v in features.items() if hasattr(v, "dim") and v.dim() == 2 and v.shape == ids.shape]
    if any(k not in _PER_TOKEN_FEATURES for k in per_token):
        return features
    import torch

    padded = dict(features)
    for key in per_token:
        value = _PER_TOKEN_FEATURES[key]
        fill = pad_id if value is None else value
        padded[key] = torch.nn.functional.pad(features[key], (0, target - length), value=fill)
    return padded


def _torch_features(model: _LoadedModel, features: dict[str, Any]) -> dict[str, Any]:
    """A tokenized batch padded (:func:`_pad_features`), and pinned for an asynchronous copy on CUDA."""
    features = _pad_features(features, model.pad_token_id, model.max_positions)
    if model.st.device.type == "cuda":
        features = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
    return features


def _st_embeddings(st: SentenceModel, features: dict[str, Any]) -> np.ndarray:
    """Float32 sentence embeddings of one tokenized batch, run by ``st`` on its device (pinned copies async)."""
    import torch

    moved = {k: v.to(st.device, non_blocking=v.is_pinned()) if isinstance(v, torch.Tensor) else v
             for k, v in features.items()}
    return st(moved)["sentence_embedding"].detach().to(torch.float32).cpu().numpy()


def _pack_for_onednn(model: _LoadedModel) -> None:
    """Route the model's Linear layers through oneDNN with packed weights (once; caller holds the lock)."""
    from m3e_rag.encode.onednn import use_onednn_linears

    model.onednn_pending = False
    swapped = use_onednn_linears(model.st)
    logger.debug("Routed %d Linear layers through oneDNN with packed weights", swapped)


def _encode_in_pool(
    model: _LoadedModel, texts: list[str], prompt: str, batch_size: int, show_progress: bool
) -> np.ndarray:
    """Float32 vectors of ``texts`` from sentence-transformers' multi-process pool (``multi_process=True``)."""
    st = cast("SentenceTransformer", model.st)  # loaded by sentence-transformers: see loader._load_weights
    return np.asarray(
        st.encode(texts, prompt=prompt or None, batch_size=batch_size, pool=model.runner,
                  show_progress_bar=show_progress, convert_to_numpy=True),
        dtype=np.float32,
    )
