"""What an encoder may be asked for: backends, overflow policies, dtypes, and its checked, kept arguments.

:class:`_EncoderOptions` is the constructor of :class:`~m3e_rag.encode.encoder.M3EEncoder` (its base
class): every refusal (a bad batch size, half precision on CPU, a multi-process pool on CPU...) is decided
here, at construction, before any model is loaded (the loader repeats the device checks once the device
is known), and :meth:`_EncoderOptions.options` gives the arguments back for a faithful copy.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from m3e_rag.encode.loading import resolve_model_name
from m3e_rag.errors import InputError

__all__ = ["Backend", "BACKENDS", "OnOverflow", "DEFAULT_BATCH_SIZE", "DTYPES", "normalize_dtype"]

Backend = Literal["torch", "onnx", "onnx-int8", "onnx-int8-fast"]
OnOverflow = Literal["truncate", "warn", "error"]
#: Every backend name, in the order the CLI lists them.
BACKENDS: tuple[str, ...] = get_args(Backend)
_ON_OVERFLOW: tuple[str, ...] = get_args(OnOverflow)
#: Default most texts per forward pass. Texts are sorted by token length and a batch also stops at
#: :data:`~m3e_rag.encode.batching.MAX_BATCH_ACTIVATION_BYTES`, so long texts go a few at a time and short
#: ones many at a time (benchmarks/README.md has the measurements behind both numbers).
DEFAULT_BATCH_SIZE = 32
#: Torch dtypes the model may run in (None/"float32" is the fp32 reference). Half precision is for CUDA only.
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}

_MULTI_PROCESS_CPU = (
    "multi_process=True is refused on CPU: one process already runs torch on every core, so more processes "
    "would each load a copy of the model and compete for the same cores (slower, more memory). It encodes "
    "across CUDA GPUs; on CPU leave it off (backend='onnx-int8' is the CPU speed-up)."
)


def normalize_dtype(dtype: object) -> str | None:
    """Return ``dtype`` (a name such as ``"fp16"`` or a ``torch.dtype``) as one of :data:`DTYPES`, or None.

    Raises InputError for anything else, naming the accepted values.
    """
    if dtype is None:
        return None
    name = str(dtype).strip().lower()
    if name in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[name]
    raise InputError(
        f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)} (or torch.float16 / torch.bfloat16). "
        "'auto' is refused: name the precision you want (M3E checkpoints are float32)."
    )


def _check_dtype_device(dtype: str | None, device: str | None, backend: str) -> None:
    """Refuse half precision where it cannot help: on CPU, and with the ONNX backends."""
    if dtype in (None, "float32"):
        return
    if backend != "torch":
        raise InputError(
            f"dtype={dtype!r} applies to the torch backend only; backend={backend!r} runs float32 "
            "(use backend='onnx-int8' for a quantized model, or backend='torch' with a CUDA device for half precision)."
        )
    if device is not None and not str(device).startswith("cuda"):
        raise InputError(
            f"dtype={dtype!r} on device {device!r} is refused: half precision is for CUDA GPUs. On CPU it is "
            "emulated or unsupported (bfloat16 measured 5x slower than float32 here) and changes the vectors; "
            "keep float32 (the default) or use backend='onnx-int8' for speed."
        )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _EncoderOptions:
    """The arguments of an :class:`~m3e_rag.encode.encoder.M3EEncoder`, checked and kept (its base class)."""

    def __init__(
        self,
        model_name: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        normalize: bool = True,
        backend: Backend = "torch",
        on_overflow: OnOverflow = "warn",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        trust_remote_code: bool = False,
        cache_folder: str | None = None,
        revision: str | None = None,
        query_prompt_name: str | None = None,
        document_prompt_name: str | None = None,
        prompts: dict[str, str] | None = None,
        query_batch_size: int | None = None,
        query_normalize: bool | None = None,
        dtype: str | None = None,
        show_progress: bool = False,
        multi_process: bool = False,
        local_files_only: bool = False,
    ) -> None:
        for name, size in (("batch_size", batch_size), ("query_batch_size", query_batch_size)):
            if size is None and name == "query_batch_size":
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise InputError(f"{name} must be a positive integer, got {size!r}.")
        for name, value in (("query_prompt", query_prompt), ("document_prompt", document_prompt),
                            ("query_prompt_name", query_prompt_name), ("document_prompt_name", document_prompt_name)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{name} must be a string or None, got {type(value).__name__}.")
        if prompts is not None and (
            not isinstance(prompts, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())
        ):
            raise InputError(f"prompts must be a dict of prompt name -> prompt text, got {prompts!r}.")
        dtype = normalize_dtype(dtype)
        _check_dtype_device(dtype, device, backend)
        if multi_process and backend != "torch":
            raise InputError(f"multi_process=True needs backend='torch' (got {backend!r}).")
        if multi_process and device is not None and not str(device).startswith("cuda"):
            raise InputError(_MULTI_PROCESS_CPU)
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        if on_overflow not in _ON_OVERFLOW:
            raise InputError(f"on_overflow must be one of {', '.join(_ON_OVERFLOW)}; got {on_overflow!r}.")
        self.model_name: str = resolve_model_name(model_name)
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.backend: Backend = backend
        self.on_overflow: OnOverflow = on_overflow
        self._query_prompt = query_prompt
        self._document_prompt = document_prompt
        self.trust_remote_code = trust_remote_code
        self.cache_folder = cache_folder
        self.revision = revision
        self.query_prompt_name = query_prompt_name
        self.document_prompt_name = document_prompt_name
        self.prompts: dict[str, str] = dict(prompts or {})
        self.query_batch_size = query_batch_size
        self.query_normalize = query_normalize
        self.dtype = dtype
        self.show_progress = bool(show_progress)
        self.multi_process = bool(multi_process)
        self.local_files_only = bool(local_files_only)

    def options(self) -> dict[str, Any]:
        """Every constructor argument of this encoder, so ``M3EEncoder(**enc.options())`` rebuilds it exactly.

        Adapters' ``from_encoder`` use it: prompts, per-side batch size and normalization, dtype and the
        rest survive the round trip.
        """
        return {
            "model_name": self.model_name,
            "device": self.device,
            "batch_size": self.batch_size,
            "normalize": self.normalize,
            "backend": self.backend,
            "on_overflow": self.on_overflow,
            "query_prompt": self._query_prompt,
            "document_prompt": self._document_prompt,
            "trust_remote_code": self.trust_remote_code,
            "cache_folder": self.cache_folder,
            "revision": self.revision,
            "query_prompt_name": self.query_prompt_name,
            "document_prompt_name": self.document_prompt_name,
            "prompts": dict(self.prompts) or None,
            "query_batch_size": self.query_batch_size,
            "query_normalize": self.query_normalize,
            "dtype": self.dtype,
            "show_progress": self.show_progress,
            "multi_process": self.multi_process,
            "local_files_only": self.local_files_only,
        }

    def _key(self) -> tuple[Any, ...]:
        device = self.device or _default_device()
        key: tuple[Any, ...] = (self.model_name, device, self.backend, self.trust_remote_code)
        # Options that change the weights or where they run are part of the key only when set, so the
        # common key stays (model, device, backend, trust_remote_code).
        extra = (self.dtype if self.dtype != "float32" else None, self.revision, self.multi_process)
        return key + extra if any(extra) else key
