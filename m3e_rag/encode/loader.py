"""Turn a model's files into a running model: weights, precision, batch limits and the backend's runner.

:mod:`m3e_rag.encode.loading` finds the files (fast, before torch is imported); this module loads them,
once per process per model and options (:mod:`m3e_rag.encode.cache` keeps the result), and derives what
every batch needs later: the embedding dimension, the window, the token budget and the padding.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from m3e_rag.encode.batching import _max_batch_tokens
from m3e_rag.encode.cache import _LoadedModel
from m3e_rag.encode.loading import is_m3e, locate_model
from m3e_rag.encode.options import _MULTI_PROCESS_CPU, _check_dtype_device
from m3e_rag.encode.precision import _settle_precision
from m3e_rag.encode.registry import resolve_spec
from m3e_rag.encode.torch_backend import ONEDNN_ENV, _padding_of
from m3e_rag.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from m3e_rag.encode.cache import SentenceModel

__all__: list[str] = []

# The encoder's name, as before these helpers left encoder.py: the CLI's log lines show it.
logger = logging.getLogger("m3e_rag.encode.encoder")

_LICENCE_LOGGED: set[str] = set()


def _load_model(
    model_name: str,
    device: str,
    *,
    backend: str,
    multi_process: bool,
    trust_remote_code: bool,
    dtype: str | None,
    cache_folder: str | None,
    revision: str | None,
    local_files_only: bool,
) -> _LoadedModel:
    """Load ``model_name`` (a resolved name) on ``device`` as an encoder with these options asks for it."""
    _check_dtype_device(dtype, device, backend)
    if multi_process and not device.startswith("cuda"):
        raise InputError(_MULTI_PROCESS_CPU)
    path = locate_model(
        model_name, cache_folder=cache_folder, revision=revision,
        local_files_only=local_files_only,
    )
    try:
        st = _load_weights(path, device, backend=backend, multi_process=multi_process,
                           trust_remote_code=trust_remote_code)
    except Exception as exc:
        hint = ""
        if "trust_remote_code" in str(exc):
            hint = " The folder needs its own code: pass trust_remote_code=True only if you trust its author."
        raise ModelLoadError(f"Could not load model from {str(path)!r}: {exc}.{hint}") from exc
    st.eval()
    half_by_default = backend == "torch" and st.device.type == "cuda"
    st, run_dtype, half_cosine = _settle_precision(st, dtype, half_by_default=half_by_default)
    get_dim: Any = getattr(st, "get_embedding_dimension", None)  # older sentence-transformers: the older name
    dim = get_dim() if get_dim is not None else getattr(st, "get_sentence_embedding_dimension", lambda: None)()
    if dim is None:
        raise ModelLoadError(f"Model at {str(path)!r} does not declare an embedding dimension.")
    max_len = int(st.max_seq_length or 512)
    runner = _make_runner(st, path, backend=backend, multi_process=multi_process)
    if is_m3e(model_name) or is_m3e(str(path)):
        _log_licence(model_name)
    logger.info("Loaded %s (%d-d, window %d) on %s with backend %s in %s", model_name, dim, max_len, device,
                backend, run_dtype)
    prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if isinstance(v, str)}
    pending = (backend == "torch" and not multi_process and st.device.type == "cpu"
               and os.environ.get(ONEDNN_ENV, "1") != "0")
    pad_id, positions = _padding_of(st, max_len)
    return _LoadedModel(model_name, path, st, runner, max_len, int(dim), prompts, _max_batch_tokens(st),
                        pad_token_id=pad_id, max_positions=positions, dtype=run_dtype, half_cosine=half_cosine,
                        onednn_pending=pending)


def _load_weights(
    path: Path, device: str, *, backend: str, multi_process: bool, trust_remote_code: bool
) -> SentenceModel:
    """The model, through transformers alone where :mod:`~m3e_rag.encode.native` can run it, else ST.

    The native path is for the torch backend in one process; the multi-process pool and the ONNX
    export are sentence-transformers' own, and remote code is left to it.
    """
    if backend == "torch" and not multi_process and not trust_remote_code:
        from m3e_rag.encode.native import NativeSentenceModel, plan_for

        plan = plan_for(path)
        if plan is not None:
            return NativeSentenceModel(path, plan, device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, trust_remote_code=trust_remote_code,
                               local_files_only=True)


def _make_runner(model: SentenceModel, path: Path, *, backend: str, multi_process: bool) -> Any:
    """What runs a batch: the model itself, sentence-transformers' process pool, or an ONNX runner."""
    if backend == "torch" and not multi_process:
        return model  # on CPU, oneDNN packing comes later: see ONEDNN_AFTER_TOKENS
    st = cast("SentenceTransformer", model)  # the pool and the ONNX export: loaded by sentence-transformers
    if backend == "torch":  # sentence-transformers' pool: one worker process per CUDA device, kept
        import atexit

        pool = st.start_multi_process_pool()
        atexit.register(st.stop_multi_process_pool, pool)
        return pool
    from m3e_rag.encode.onnx import build_onnx_runner

    return build_onnx_runner(st, path, quantize=backend.startswith("onnx-int8"),
                             every_matmul=backend == "onnx-int8-fast")


def _log_licence(model_name: str) -> None:
    """Warn once per process and model name that M3E weights come with their own licence."""
    if model_name in _LICENCE_LOGGED:
        return
    _LICENCE_LOGGED.add(model_name)
    spec = resolve_spec(model_name)
    card = spec.model_card if spec else "the model card of " + model_name
    logger.warning(
        "M3E weights: check their licence on %s before use; it is widely summarised as research and "
        "non-commercial use only (the uniem training code itself is Apache-2.0).",
        card,
    )
