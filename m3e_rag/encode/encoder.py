"""M3EEncoder: the one place where text becomes vectors.

Both framework adapters (LangChain, LlamaIndex) and the pipeline call this class, so batching,
truncation accounting, prompts and backends are decided once. Construction is cheap: the model
loads on first use (or :meth:`M3EEncoder.load`) and is shared, per process, by every encoder
asking for the same (model, device, backend, trust_remote_code).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args, overload

import numpy as np

from m3e_rag.encode.inputs import cap_query_chars, check_unicode
from m3e_rag.encode.loading import is_m3e, locate_model, resolve_model_name
from m3e_rag.encode.registry import resolve_spec, spec_for
from m3e_rag.errors import InputError, InputTooLongError, ModelLoadError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

    from m3e_rag.encode.native import NativeSentenceModel

    #: What runs the torch backend: sentence-transformers' model, or the same interface over transformers alone.
    SentenceModel = SentenceTransformer | NativeSentenceModel

__all__ = ["M3EEncoder", "Backend", "OnOverflow", "EncodeStats"]

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8"]
OnOverflow = Literal["truncate", "warn", "error"]
_BACKENDS: tuple[str, ...] = get_args(Backend)
_ON_OVERFLOW: tuple[str, ...] = get_args(OnOverflow)
#: Default most texts per forward pass. Texts are sorted by token length and a batch also stops at
#: :data:`MAX_BATCH_ACTIVATION_BYTES`, so long texts go a few at a time and short ones many at a time
#: (benchmarks/README.md has the measurements behind both numbers).
DEFAULT_BATCH_SIZE = 32
#: Upper bound on the largest activation of one forward pass (batch x padded length x feed-forward
#: width x 4 bytes), with a floor of 512 tokens so one full-window text always fits. Under glibc's mmap
#: threshold, so activations are reused from the heap instead of being mapped, page-faulted and zeroed
#: anew by every layer (0.17 M page faults per forward at 16 x 239 tokens on the m3e-base shape, none at
#: 8 x 239; 10% more tokens/s). 6 MiB is 512 tokens on m3e-base: a forward pass's transient memory grows
#: with its tokens (21-33 MiB above the model at 456-512 tokens, 50-74 MiB at 1,360), while CPU
#: throughput does not (1,720-1,920 tokens/s from 64 x 8 to 5 x 272; 2 cores): encoding 642 CMRC 2018
#: chunks peaked at 1,043 MiB with 512-token batches against 1,109 MiB with 1,365-token ones, in
#: 57.4 s against 59.8 s.
MAX_BATCH_ACTIVATION_BYTES = 6 * 2**20
#: The C heap's free pages go back to the kernel (:func:`_trim_heap`) after each batch that brings the padded
#: tokens run since the last trim to at least this many: after nearly every batch of an ingest, after every
#: dozen or so short queries. Counting per batch instead (trim after batches of >= 512 tokens) stopped trimming
#: once batches were cut at 512 tokens (most are a little shorter): the heap then kept what varied shapes
#: freed, and an ingest of 300 CMRC 2018 paragraphs peaked at 1,092 MiB against 1,054 MiB when trimming after
#: every batch, at the same speed (83.4 s against 81.9 s).
TRIM_EVERY_PADDED_TOKENS = 256
#: The torch backend pads every batch's token length up to a multiple of this (right-padding, masked: the
#: vectors are the same up to float rounding). oneDNN builds and caches kernels per distinct input shape,
#: and an ingest of varied-length chunks meets hundreds of shapes: on 60 CMRC 2018 paragraphs with the
#: m3e-base shape (2 cores), padding to 8 took the ingest's peak RSS from 1,017-1,045 MiB to 997-1,012 MiB
#: at the same speed (18.6-19.5 s against 18.2-19.7 s, model load included); one-query latency moved within
#: its run-to-run spread (p50 21.7-22.8 ms against 21.1-21.8 ms, 200 queries of 6-60 tokens, 3 runs each).
#: Multiples of 8 are also what CUDA's tensor cores want in half precision. 16 and 32 gave no lower peak.
PAD_TO_MULTIPLE = 8
#: Set to ``0`` to keep torch's default CPU GEMM for the torch backend (see ``m3e_rag.encode.onednn``).
ONEDNN_ENV = "M3E_RAG_ONEDNN"
#: The torch backend packs its Linear weights for oneDNN (CPU) once a process has asked for this many
#: tokens, not at load. Packing costs about 0.3 s on the m3e-base shape (2 cores) and makes a forward
#: pass 1.9-3.2x faster: it pays back after 82 query tokens or 470 document tokens
#: (``benchmarks/cold_start.py``). Packing when that much work has arrived is the ski-rental rule:
#: a one-shot ``m3e-rag search`` (one short query) never pays the 0.3 s, and an ingest or a server
#: packs on its first real batch, at most about twice the cost of the best choice made in hindsight.
ONEDNN_AFTER_TOKENS = 256
#: With ``dtype=None`` (the default) a CUDA model runs in float16 if its vectors on :data:`_PROBE_TEXTS` keep
#: at least this cosine to float32's (checked once, at load); otherwise it stays float32 and says why.
#: 0.9999 bounds the rounding's distance between unit vectors at 0.014, well under the score gaps that
#: order search results. Measured on CPU (float16 and bfloat16 run there too, slowly) with the stand-ins
#: (tiny, multilingual-e5-small, the m3e-base shape): float16 >= 0.999999, bfloat16 0.99995-0.99999. A
#: model that overflows float16 (activations past 65,504) gives NaN and stays float32.
HALF_MIN_COSINE = 0.9999
#: Tokenize the next batch on a helper thread while the model runs the current one. None: on CUDA only,
#: where the CPU is otherwise idle during a forward pass; on CPU the forward pass already uses every core
#: and a batch's tokenization is ~1 ms against a forward pass of hundreds.
TOKENIZE_AHEAD: bool | None = None
#: Options every framework adapter exposes as fields and hands to the shared encoder unchanged.
ADAPTER_OPTIONS: tuple[str, ...] = ("device", "batch_size", "normalize", "backend", "on_overflow", "trust_remote_code")
#: Torch dtypes the model may run in (None/"float32" is the fp32 reference). Half precision is for CUDA only.
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}


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
_LICENCE_LOGGED: set[str] = set()


_MULTI_PROCESS_CPU = (
    "multi_process=True is refused on CPU: one process already runs torch on every core, so more processes "
    "would each load a copy of the model and compete for the same cores (slower, more memory). It encodes "
    "across CUDA GPUs; on CPU leave it off (backend='onnx-int8' is the CPU speed-up)."
)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _describe(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return "an empty string" if not value else "whitespace only"
    return f"of type {type(value).__name__}"


def _validate_texts(texts: object, what: str = "texts") -> list[str]:
    """Return ``texts`` as a list, or raise InputError naming the first bad item and the fix."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError(
            f"{what} must be a list of strings, got {type(texts).__name__}; wrap a single text in a list "
            "or use encode_query() for one query."
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(
                f"{what}[{i}] is {_describe(text)}; every text must be a non-empty string: "
                "drop or replace it before encoding."
            )
        check_unicode(text, f"{what}[{i}]")  # the Rust tokenizer fails on a lone surrogate with a bare TypeError
    return list(texts)


def _pick_prompt(prompts: dict[str, str], names: Sequence[str]) -> str:
    """Return the first non-empty prompt among ``names``.

    sentence-transformers 6 adds an empty ``document`` prompt to every model; taking it would drop
    e5's ``passage: `` prefix, so empty entries never win over non-empty ones.
    """
    for name in names:
        value = prompts.get(name)
        if value:
            return value
    return ""


class M3EEncoder:
    """Encode passages and queries with an M3E (or any sentence-transformers) model.

    Args:
        model_name: an alias (``"m3e-base"``), a hub id (``"moka-ai/m3e-base"``) or a local folder.
            None reads ``$M3E_MODEL`` and falls back to ``m3e-base``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        batch_size: texts per forward pass. Batches are formed from texts sorted by token length,
            so little compute is spent on padding.
        normalize: L2-normalize every vector (the published M3E export does not), so cosine and dot
            product agree.
        backend: ``"torch"`` (fp32, the reference), ``"onnx"`` or ``"onnx-int8"`` (ONNX Runtime,
            needs ``m3e-rag[onnx]``).
        on_overflow: what to do with texts longer than the model's window: ``"warn"`` truncates and
            logs how many, ``"truncate"`` truncates silently, ``"error"`` raises.
        query_prompt: text prepended to queries; None uses the model's own ``query`` prompt if it
            defines a non-empty one (M3E defines none), else the registry's (bge-*-zh-v1.5: their
            retrieval instruction).
        document_prompt: text prepended to documents; None uses the model's non-empty ``passage`` or
            ``document`` prompt if any, else the registry's ('' for M3E and BGE).
        trust_remote_code: allow model folders to run their own code. Off unless you ask.
        cache_folder: Hugging Face cache folder for downloads.
        revision: hub revision (branch, tag or commit) to load.
        query_prompt_name / document_prompt_name: a prompt picked by name from ``prompts`` or the
            model's own prompts (``query_prompt`` / ``document_prompt`` win over them).
        prompts: extra named prompts (sentence-transformers' ``prompts``).
        query_batch_size / query_normalize: query-side batch size and normalization (None: as for
            documents), as ``query_encode_kwargs`` sets them.
        dtype: None (default) runs float16 on CUDA when a check at load shows its vectors keep a cosine of
            at least :data:`HALF_MIN_COSINE` to float32's (else float32, with a warning), and float32 on
            CPU; ``"float32"`` forces full precision; ``"float16"`` / ``"bfloat16"`` force half precision
            (CUDA only: refused on CPU and with the ONNX backends). ``info()`` reports what runs.
        show_progress: a tqdm bar over batches.
        multi_process: encode with sentence-transformers' pool, one process per CUDA GPU; refused
            on CPU, where one process already uses every core.
        local_files_only: never download; a hub id must already be in the cache.

    :mod:`m3e_rag.encode.hf_options` maps ``HuggingFaceEmbeddings``-style ``model_kwargs`` /
    ``encode_kwargs`` / ``query_encode_kwargs`` onto these arguments.
    """

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
        if backend not in _BACKENDS:
            raise InputError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}.")
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

    def __repr__(self) -> str:
        return (
            f"M3EEncoder(model_name={self.model_name!r}, device={self.device!r}, backend={self.backend!r}, "
            f"batch_size={self.batch_size}, normalize={self.normalize})"
        )

    # ------------------------------------------------------------------ loading
    def _key(self) -> tuple[Any, ...]:
        device = self.device or _default_device()
        key: tuple[Any, ...] = (self.model_name, device, self.backend, self.trust_remote_code)
        # Options that change the weights or where they run are part of the key only when set, so the
        # common key stays (model, device, backend, trust_remote_code).
        extra = (self.dtype if self.dtype != "float32" else None, self.revision, self.multi_process)
        return key + extra if any(extra) else key

    def load(self) -> M3EEncoder:
        """Load the model now (otherwise it loads on first use). Returns self."""
        self._loaded()
        return self

    @property
    def is_loaded(self) -> bool:
        """Whether this encoder's model is already in memory in this process."""
        return self._key() in _MODELS

    def _loaded(self) -> _LoadedModel:
        key = self._key()
        model = _MODELS.get(key)
        if model is not None:
            return model
        with _MODELS_LOCK:
            model = _MODELS.get(key)
            if model is None:
                model = self._load(key[1])
                _MODELS[key] = model
        return model

    def _load(self, device: str) -> _LoadedModel:
        _check_dtype_device(self.dtype, device, self.backend)
        if self.multi_process and not device.startswith("cuda"):
            raise InputError(_MULTI_PROCESS_CPU)
        path = locate_model(
            self.model_name, cache_folder=self.cache_folder, revision=self.revision,
            local_files_only=self.local_files_only,
        )
        try:
            st = self._load_model(path, device)
        except Exception as exc:
            hint = ""
            if "trust_remote_code" in str(exc):
                hint = " The folder needs its own code: pass trust_remote_code=True only if you trust its author."
            raise ModelLoadError(f"Could not load model from {str(path)!r}: {exc}.{hint}") from exc
        st.eval()
        half_by_default = self.backend == "torch" and st.device.type == "cuda"
        st, dtype, half_cosine = _settle_precision(st, self.dtype, half_by_default=half_by_default)
        get_dim: Any = getattr(st, "get_embedding_dimension", None)  # older sentence-transformers: the older name
        dim = get_dim() if get_dim is not None else getattr(st, "get_sentence_embedding_dimension", lambda: None)()
        if dim is None:
            raise ModelLoadError(f"Model at {str(path)!r} does not declare an embedding dimension.")
        max_len = int(st.max_seq_length or 512)
        runner = self._make_runner(st, path)
        if is_m3e(self.model_name) or is_m3e(str(path)):
            self._log_licence()
        logger.info("Loaded %s (%d-d, window %d) on %s with backend %s in %s", self.model_name, dim, max_len, device,
                    self.backend, dtype)
        prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if isinstance(v, str)}
        pending = (self.backend == "torch" and not self.multi_process and st.device.type == "cpu"
                   and os.environ.get(ONEDNN_ENV, "1") != "0")
        pad_id, positions = _padding_of(st, max_len)
        return _LoadedModel(self.model_name, path, st, runner, max_len, int(dim), prompts, _max_batch_tokens(st),
                            pad_token_id=pad_id, max_positions=positions, dtype=dtype, half_cosine=half_cosine,
                            onednn_pending=pending)

    def _load_model(self, path: Path, device: str) -> SentenceModel:
        """The model, through transformers alone where :mod:`~m3e_rag.encode.native` can run it, else ST.

        The native path is for the torch backend in one process; the multi-process pool and the ONNX
        export are sentence-transformers' own, and remote code is left to it.
        """
        if self.backend == "torch" and not self.multi_process and not self.trust_remote_code:
            from m3e_rag.encode.native import NativeSentenceModel, plan_for

            plan = plan_for(path)
            if plan is not None:
                return NativeSentenceModel(path, plan, device)
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device=device, trust_remote_code=self.trust_remote_code,
                                   local_files_only=True)

    def _make_runner(self, model: SentenceModel, path: Path) -> Any:
        if self.backend == "torch" and not self.multi_process:
            return model  # on CPU, oneDNN packing comes later: see ONEDNN_AFTER_TOKENS
        st = cast("SentenceTransformer", model)  # the pool and the ONNX export: loaded by sentence-transformers
        if self.backend == "torch":  # sentence-transformers' pool: one worker process per CUDA device, kept
            import atexit

            pool = st.start_multi_process_pool()
            atexit.register(st.stop_multi_process_pool, pool)
            return pool
        from m3e_rag.encode.onnx import build_onnx_runner

        return build_onnx_runner(st, path, quantize=self.backend == "onnx-int8")

    def _log_licence(self) -> None:
        if self.model_name in _LICENCE_LOGGED:
            return
        _LICENCE_LOGGED.add(self.model_name)
        spec = resolve_spec(self.model_name)
        card = spec.model_card if spec else "the model card of " + self.model_name
        logger.warning(
            "M3E weights: check their licence on %s before use; it is widely summarised as research and "
            "non-commercial use only (the uniem training code itself is Apache-2.0).",
            card,
        )

    # --------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Embedding dimension; known from the registry without loading for M3E models."""
        spec = resolve_spec(self.model_name)
        if spec is not None and not self.is_loaded:
            return spec.dim
        return self._loaded().dim

    @property
    def max_seq_length(self) -> int:
        """Token window of the model, special tokens included (512 for M3E)."""
        spec = resolve_spec(self.model_name)
        if spec is not None and not self.is_loaded:
            return spec.max_tokens
        return self._loaded().max_seq_length

    @property
    def tokenizer(self) -> Any:
        """The model's own (fast) tokenizer, used to count tokens exactly as the model sees them."""
        return self._loaded().st.tokenizer

    def _named_prompt(self, name: str, side: str) -> str:
        known = {**self._loaded().prompts, **self.prompts}
        if name not in known:
            raise InputError(
                f"{side}_prompt_name={name!r} is not a prompt of this model; known prompt names: "
                f"{sorted(known) or 'none'}. Pass the text itself as {side}_prompt=..., or add it with prompts={{...}}."
            )
        return known[name]

    @property
    def query_prompt(self) -> str:
        """The prefix prepended to queries ('' for M3E).

        Order: ``query_prompt``; else ``query_prompt_name`` looked up in ``prompts`` and the model's
        own prompts; else the model's non-empty ``query`` prompt; else the registry's (the
        bge-*-zh-v1.5 retrieval instruction, see :mod:`m3e_rag.encode.registry`).
        """
        if self._query_prompt is not None:
            return self._query_prompt
        if self.query_prompt_name is not None:
            return self._named_prompt(self.query_prompt_name, "query")
        return _pick_prompt({**self._loaded().prompts, **self.prompts}, ("query",)) or self._registry_prompt("query")

    @property
    def document_prompt(self) -> str:
        """The prefix prepended to documents ('' for M3E); same order as :attr:`query_prompt`."""
        if self._document_prompt is not None:
            return self._document_prompt
        if self.document_prompt_name is not None:
            return self._named_prompt(self.document_prompt_name, "document")
        return _pick_prompt({**self._loaded().prompts, **self.prompts}, ("passage", "document")) or (
            self._registry_prompt("document")
        )

    def _registry_prompt(self, side: str) -> str:
        """The registry's prompt for ``side`` (``query``/``document``) of a known model, else ''.

        Used last: after an explicit prompt and the model folder's own prompts (bge-*-zh-v1.5 folders
        define none, so their query instruction comes from here).
        """
        spec = spec_for(self.model_name)
        if spec is None:
            return ""
        return spec.query_prompt if side == "query" else spec.document_prompt

    @property
    def stats(self) -> EncodeStats:
        """Counters of texts, tokens, padding and truncations for this model in this process."""
        return self._loaded().stats

    def info(self) -> dict[str, Any]:
        """A JSON-ready description: model, dim, device, backend, window, prompts and versions."""
        import importlib.metadata

        import torch
        import transformers

        from m3e_rag._version import __version__

        loaded = self._loaded()
        return {
            "model": self.model_name,
            "path": str(loaded.path),
            "dim": loaded.dim,
            "max_seq_length": loaded.max_seq_length,
            "device": str(loaded.st.device),
            "loader": "sentence-transformers" if _is_sentence_transformer(loaded.st) else "transformers",
            "backend": self.backend,
            "dtype": loaded.dtype,
            "half_precision_min_cosine": loaded.half_cosine,
            "normalize": self.normalize,
            "batch_size": self.batch_size,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "versions": {
                "m3e_rag": __version__,
                "torch": torch.__version__,
                "sentence_transformers": importlib.metadata.version("sentence-transformers"),
                "transformers": transformers.__version__,
                "numpy": np.__version__,
            },
        }

    # ----------------------------------------------------------------- encoding
    def count_tokens(self, texts: Sequence[str], prompt: str = "") -> list[int]:
        """Token count of each text as the model sees it, special tokens and ``prompt`` included."""
        tok = self.tokenizer
        if not texts:
            return []
        full = [prompt + t for t in texts] if prompt else list(texts)
        encoded = tok(full, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages: a float32 array of shape (len(texts), dim), L2-normalized by default."""
        items = _validate_texts(texts)
        return self._encode(items, self.document_prompt if items else "")

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query: a float32 vector of shape (dim,)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"query is {_describe(text)}; pass a non-empty string.")
        check_unicode(text)
        text = cap_query_chars(text, self.max_seq_length)  # the window is all it reads: never tokenize 10 MB
        return self._encode([text], self.query_prompt, **self._query_side())[0]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries at once: shape (len(texts), dim)."""
        items = _validate_texts(texts, "queries")
        return self._encode(items, self.query_prompt if items else "", **self._query_side())

    def _query_side(self) -> dict[str, Any]:
        return {
            "batch_size": self.query_batch_size or self.batch_size,
            "normalize": self.normalize if self.query_normalize is None else self.query_normalize,
        }

    async def aencode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_documents`, run in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self.encode_documents, texts)

    async def aencode_query(self, text: str) -> np.ndarray:
        """Async :meth:`encode_query`, run in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self.encode_query, text)

    # -------------------------------------------------------- sentence similarity (s2s)
    @overload
    def similarity(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self, a: str, b: str, *, prompt: str | None = None
    ) -> float: ...

    @overload
    def similarity(self, a: Sequence[str], b: Sequence[str], *, prompt: str | None = None) -> np.ndarray: ...

    def similarity(
        self, a: str | Sequence[str], b: str | Sequence[str], *, prompt: str | None = None
    ) -> float | np.ndarray:
        """Cosine similarity of sentences, pair by pair (s2s: both sides encoded alike).

        ``similarity("今天天气怎么样？", "What is the weather like today?")`` gives one float;
        ``similarity(a_list, b_list)`` gives a float32 array of shape ``(len(a),)`` with
        ``cos(a[i], b[i])`` (the lists must have equal length). For every-against-every scores use
        :meth:`similarity_matrix`.

        Both sides get the same ``prompt``; None means the document-side prompt (never a query-side
        retrieval instruction such as BGE's, which its model cards reserve for short-query retrieval).
        Vectors are L2-normalized here whatever ``normalize`` says, so the result is a true cosine.
        """
        if isinstance(a, str) and isinstance(b, str):
            return float(self.similarity([a], [b], prompt=prompt)[0])
        if isinstance(a, str) or isinstance(b, str):
            raise InputError(
                "similarity() takes two strings or two equal-length lists of strings, not one of each; "
                "wrap the single text in a list, or use similarity_matrix() for one-against-many."
            )
        left, right = _validate_texts(a, "a"), _validate_texts(b, "b")
        if len(left) != len(right):
            raise InputError(
                f"similarity() pairs a[i] with b[i], but a has {len(left)} texts and b has {len(right)}; pass "
                "equal-length lists, or use similarity_matrix() for every-against-every scores."
            )
        vectors = self._unit_vectors(left + right, prompt)
        return np.einsum("ij,ij->i", vectors[: len(left)], vectors[len(left) :]).astype(np.float32)

    def similarity_matrix(
        self, a: Sequence[str], b: Sequence[str] | None = None, *, prompt: str | None = None
    ) -> np.ndarray:
        """Cosine similarity of every text of ``a`` with every text of ``b`` (default ``b = a``).

        Returns a float32 array of shape ``(len(a), len(b))``; encoding as in :meth:`similarity`.
        """
        left = _validate_texts(a, "a")
        right = left if b is None else _validate_texts(b, "b")
        vectors = self._unit_vectors(left + ([] if b is None else right), prompt)
        return (vectors[: len(left)] @ (vectors[: len(left)] if b is None else vectors[len(left) :]).T).astype(
            np.float32
        )

    def _unit_vectors(self, texts: list[str], prompt: str | None) -> np.ndarray:
        """Unit-length vectors of ``texts`` (each distinct text encoded once) with one shared prompt."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt must be a string or None, got {type(prompt).__name__}.")
        unique = list(dict.fromkeys(texts))
        encoded = self._encode(unique, self.document_prompt if prompt is None else prompt, normalize=True)
        position = {text: i for i, text in enumerate(unique)}
        return encoded[[position[t] for t in texts]]

    def _encode(
        self, texts: list[str], prompt: str, *, batch_size: int | None = None, normalize: bool | None = None
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        batch_size = batch_size or self.batch_size
        normalize = self.normalize if normalize is None else normalize
        model = self._loaded()
        with model.lock, torch.inference_mode():
            lengths = np.asarray(self.count_tokens(texts, prompt), dtype=np.int64)
            self._check_overflow(lengths, model)
            capped = np.minimum(lengths, model.max_seq_length)
            if model.onednn_pending and model.stats.tokens + int(capped.sum()) >= ONEDNN_AFTER_TOKENS:
                _pack_for_onednn(model)
            if self.multi_process:  # loaded by sentence-transformers: see _load_model
                st = cast("SentenceTransformer", model.st)
                out = np.asarray(
                    st.encode(texts, prompt=prompt or None, batch_size=batch_size, pool=model.runner,
                              show_progress_bar=self.show_progress, convert_to_numpy=True),
                    dtype=np.float32,
                )
            else:
                order = np.argsort(-capped, kind="stable")
                out = np.empty((len(texts), model.dim), dtype=np.float32)
                batches = _batches(order, capped, batch_size, model.max_batch_tokens)

                def prepare(idx: np.ndarray) -> dict[str, Any]:
                    return self._prepare(model, [texts[i] for i in idx], prompt)

                ahead = model.st.device.type == "cuda" if TOKENIZE_AHEAD is None else TOKENIZE_AHEAD
                prepared = _prepared_batches(batches, prepare, ahead=ahead and len(batches) > 1)
                for idx, features in _progress(prepared, self.show_progress and len(batches) > 0, len(batches)):
                    out[idx] = self._forward(model, features)
                    ids = features.get("input_ids")
                    padded = (int(ids.shape[-1]) if ids is not None else int(capped[idx].max())) * len(idx)
                    model.stats.padded_tokens += padded
                    model.untrimmed_tokens += padded
                    if model.untrimmed_tokens >= TRIM_EVERY_PADDED_TOKENS:
                        _trim_heap()
                        model.untrimmed_tokens = 0
            model.stats.texts += len(texts)
            model.stats.tokens += int(capped.sum())
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def _prepare(self, model: _LoadedModel, batch: list[str], prompt: str) -> dict[str, Any]:
        """Tokenize one batch (and pad it, and pin it for a CUDA copy): the part that can run ahead."""
        features: dict[str, Any] = model.st.preprocess(batch, prompt=prompt or None)
        if self.backend != "torch":
            return features
        features = _pad_features(features, model.pad_token_id, model.max_positions)
        if model.st.device.type == "cuda":
            features = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
        return features

    def _forward(self, model: _LoadedModel, features: dict[str, Any]) -> np.ndarray:
        import torch

        if self.backend == "torch":
            return _st_embeddings(model.st, features)
        emb: torch.Tensor = model.runner(features)  # the ONNX runner takes CPU tensors and places them itself
        return emb.detach().to(torch.float32).cpu().numpy()

    def _check_overflow(self, lengths: np.ndarray, model: _LoadedModel) -> None:
        over = np.flatnonzero(lengths > model.max_seq_length)
        if over.size == 0:
            return
        first = int(over[0])
        if self.on_overflow == "error":
            raise InputTooLongError(
                f"texts[{first}] has {int(lengths[first])} tokens, more than the model's window of "
                f"{model.max_seq_length} ({over.size} text(s) in all); split long texts first "
                "(m3e_rag.ingest.chunking.Chunker does it) or pass on_overflow='truncate'."
            )
        model.stats.truncated += int(over.size)
        if self.on_overflow == "warn":
            logger.warning(
                "%d of %d texts exceed the %d-token window and were truncated (first: index %d, %d tokens); "
                "chunk them (m3e_rag.ingest.chunking.Chunker) or pass on_overflow='truncate' to silence this.",
                over.size, lengths.size, model.max_seq_length, first, int(lengths[first]),
            )


# ------------------------------------------------------------------------------------------ CPU speed helpers


def _trim_heap() -> None:
    """Give the C heap's free pages back to the kernel between batches (glibc ``malloc_trim``; else nothing).

    Batches of different shapes free activations of different sizes and glibc keeps them: an ingest of
    60 CMRC 2018 paragraphs on the m3e-base shape peaked at 1,204 MiB without trimming and at
    1,091-1,129 MiB with it (same process otherwise). Trimming once per batch (not per layer: the
    layers of one batch reuse the same sizes) costs 0.3 ms plus a few milliseconds of page faults
    against a forward pass of hundreds; short queries trim once per :data:`TRIM_EVERY_PADDED_TOKENS`
    padded tokens, not once each.
    """
    from m3e_rag.encode.libc import libc

    trim = getattr(libc(), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def _pack_for_onednn(model: _LoadedModel) -> None:
    """Route the model's Linear layers through oneDNN with packed weights (once; caller holds the lock)."""
    from m3e_rag.encode.onednn import use_onednn_linears

    model.onednn_pending = False
    swapped = use_onednn_linears(model.st)
    logger.debug("Routed %d Linear layers through oneDNN with packed weights", swapped)


def _progress(batches: Any, show: bool, total: int) -> Any:
    """Batches, wrapped in a tqdm bar when ``show`` is set (``show_progress=True``)."""
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc="Encoding", unit="batch", total=total)


def _prepared_batches(
    batches: list[np.ndarray], prepare: Any, *, ahead: bool
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``(indices, prepare(indices))`` for each batch in order.

    With ``ahead``, the next batch is prepared on a helper thread while the caller runs the current one
    (the tokenizer's Rust core runs without the GIL).
    """
    if not ahead:
        for idx in batches:
            yield idx, prepare(idx)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3e-tokenize") as pool:
        pending = pool.submit(prepare, batches[0])
        for n, idx in enumerate(batches):
            features = pending.result()
            if n + 1 < len(batches):
                pending = pool.submit(prepare, batches[n + 1])
            yield idx, features


#: Short bilingual texts and one that fills the window: what the half-precision check encodes both ways.
_PROBE_TEXTS = (
    "大熊猫主要吃竹子，每天要花十几个小时进食。",
    "What does the giant panda eat, and how long does it spend eating each day?",
    "2023年第三季度营收同比增长12.5%，净利润3.2亿元（RMB）。",
    "用户可以通过 pip install m3e-rag 安装，然后运行 m3e-rag ingest docs/ 建立索引。",
    "熊猫",
    "长江是中国第一长河，全长约6300公里。The Yangtze is the longest river in Asia. " * 24,
)


def _probe_vectors(st: SentenceModel) -> np.ndarray:
    """Unit float32 vectors of :data:`_PROBE_TEXTS` from ``st`` as it is (its device and dtype)."""
    import torch

    with torch.inference_mode():
        emb = _st_embeddings(st, st.preprocess(list(_PROBE_TEXTS)))
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _st_embeddings(st: SentenceModel, features: dict[str, Any]) -> np.ndarray:
    """Float32 sentence embeddings of one tokenized batch, run by ``st`` on its device (pinned copies async)."""
    import torch

    moved = {k: v.to(st.device, non_blocking=v.is_pinned()) if isinstance(v, torch.Tensor) else v
             for k, v in features.items()}
    return st(moved)["sentence_embedding"].detach().to(torch.float32).cpu().numpy()


def _settle_precision(
    st: SentenceModel, requested: str | None, *, half_by_default: bool
) -> tuple[SentenceModel, str, float | None]:
    """Put ``st`` in the precision to run: ``(model, dtype name, min cosine half vs float32 or None)``.

    ``requested`` None means float16 where ``half_by_default`` (CUDA, torch backend) and its vectors keep
    :data:`HALF_MIN_COSINE` to float32's on the probe texts, else float32 (a warning says why); a named
    half dtype is honoured, with a warning when it falls under that bound; "float32" is kept as it is.
    """
    if requested == "float32" or (requested is None and not half_by_default):
        return st, "float32", None
    import copy

    import torch

    dtype = requested or "float16"
    reference = _probe_vectors(st)
    # A copy when the choice is ours, so that float32 stays exact if the check fails.
    half = (copy.deepcopy(st) if requested is None else st).to(getattr(torch, dtype))
    cosine = float(np.min(np.sum(reference * _probe_vectors(half), axis=1)))
    if cosine >= HALF_MIN_COSINE:  # False for NaN too (an overflow in half precision)
        logger.info("Running %s: its vectors keep cosine >= %.5f to float32's on the probe texts", dtype, cosine)
        return half, dtype, cosine
    if requested is None:
        del half
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning(
            "float16 moved this model's vectors too far from float32's (min cosine %.5f < %.4f on %d probe "
            "texts), so it runs in float32 (twice the memory, slower). Pass dtype='float32' to skip this check, "
            "or dtype='float16' to run half precision anyway.", cosine, HALF_MIN_COSINE, len(_PROBE_TEXTS))
        return st, "float32", cosine
    logger.warning(
        "dtype=%r moves this model's vectors from float32's (min cosine %.5f < %.4f on %d probe texts); "
        "search results may differ from a float32 index. dtype=None chooses for you.",
        dtype, cosine, HALF_MIN_COSINE, len(_PROBE_TEXTS))
    return half, dtype, cosine


def _batches(order: np.ndarray, lengths: np.ndarray, max_texts: int, max_tokens: int) -> list[np.ndarray]:
    """Cut ``order`` (indices by decreasing length) into batches of <= ``max_texts`` texts and <= ``max_tokens``.

    Tokens are counted padded: the first (longest) text of a batch sets its length.
    """
    out: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_texts, max_tokens // longest))
        out.append(order[start : start + size])
        start += size
    return out


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

    Returns ``features`` unchanged where padding is off (``pad_id`` None), not needed, would pass the
    model's position table, or where the batch holds a per-token tensor this function does not know.
    """
    ids = features.get("input_ids")
    if pad_id is None or ids is None or ids.dim() != 2 or "attention_mask" not in features:
        return features
    length = int(ids.shape[1])
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


def _max_batch_tokens(st: SentenceModel) -> int:
    """Padded tokens per forward pass that keep the widest activation under MAX_BATCH_ACTIVATION_BYTES."""
    config = _hf_config(st)
    width = int(getattr(config, "intermediate_size", 0) or 4 * int(getattr(config, "hidden_size", 768) or 768))
    return max(512, MAX_BATCH_ACTIVATION_BYTES // (4 * width))
