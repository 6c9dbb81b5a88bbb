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
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from ._loading import is_m3e, locate_model, resolve_model_name
from .errors import InputError, InputTooLongError, ModelLoadError
from .models import resolve_spec

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

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
#: width x 4 bytes): 24 MiB keeps it under glibc's 32 MiB mmap threshold, so activations are reused from
#: the heap instead of being mapped, page-faulted and zeroed anew by every layer (measured: 0.17 M page
#: faults per forward at 16 x 239 tokens on the m3e-base shape, none at 8 x 239; 10% more tokens/s).
MAX_BATCH_ACTIVATION_BYTES = 24 * 2**20
#: Set to ``0`` to keep torch's default CPU GEMM for the torch backend (see ``m3e_rag._onednn``).
ONEDNN_ENV = "M3E_RAG_ONEDNN"
#: Options every framework adapter exposes as fields and hands to the shared encoder unchanged.
ADAPTER_OPTIONS: tuple[str, ...] = ("device", "batch_size", "normalize", "backend", "on_overflow", "trust_remote_code")


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
    st: SentenceTransformer
    runner: Any  # callable(features) -> torch.Tensor of sentence embeddings
    max_seq_length: int
    dim: int
    prompts: dict[str, str]
    max_batch_tokens: int = 1 << 30
    lock: threading.Lock = field(default_factory=threading.Lock)
    stats: EncodeStats = field(default_factory=EncodeStats)


_MODELS: dict[tuple[str, str, str, bool], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_LICENCE_LOGGED: set[str] = set()


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
            defines a non-empty one (M3E defines none).
        document_prompt: text prepended to documents; None uses the model's non-empty ``passage`` or
            ``document`` prompt if any.
        trust_remote_code: allow model folders to run their own code. Off unless you ask.
        cache_folder: Hugging Face cache folder for downloads.
        revision: hub revision (branch, tag or commit) to load.
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
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
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

    def __repr__(self) -> str:
        return (
            f"M3EEncoder(model_name={self.model_name!r}, device={self.device!r}, backend={self.backend!r}, "
            f"batch_size={self.batch_size}, normalize={self.normalize})"
        )

    # ------------------------------------------------------------------ loading
    def _key(self) -> tuple[str, str, str, bool]:
        device = self.device or _default_device()
        return (self.model_name, device, self.backend, self.trust_remote_code)

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
        path = locate_model(self.model_name, cache_folder=self.cache_folder, revision=self.revision)
        from sentence_transformers import SentenceTransformer

        try:
            st = SentenceTransformer(
                str(path), device=device, trust_remote_code=self.trust_remote_code, local_files_only=True
            )
        except Exception as exc:
            hint = ""
            if "trust_remote_code" in str(exc):
                hint = " The folder needs its own code: pass trust_remote_code=True only if you trust its author."
            raise ModelLoadError(f"Could not load model from {str(path)!r}: {exc}.{hint}") from exc
        st.eval()
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ModelLoadError(f"Model at {str(path)!r} does not declare an embedding dimension.")
        max_len = int(st.max_seq_length or 512)
        runner = self._make_runner(st, path)
        if is_m3e(self.model_name) or is_m3e(str(path)):
            self._log_licence()
        logger.info("Loaded %s (%d-d, window %d) on %s with backend %s", self.model_name, dim, max_len, device,
                    self.backend)
        prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if isinstance(v, str)}
        return _LoadedModel(self.model_name, path, st, runner, max_len, int(dim), prompts, _max_batch_tokens(st))

    def _make_runner(self, st: SentenceTransformer, path: Path) -> Any:
        if self.backend == "torch":
            if st.device.type == "cpu" and os.environ.get(ONEDNN_ENV, "1") != "0":
                from ._onednn import use_onednn_linears

                swapped = use_onednn_linears(st)
                logger.debug("Routed %d Linear layers through oneDNN with packed weights", swapped)
            return st
        from .onnx_backend import build_onnx_runner

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

    @property
    def query_prompt(self) -> str:
        """The prefix prepended to queries ('' for M3E)."""
        if self._query_prompt is not None:
            return self._query_prompt
        return _pick_prompt(self._loaded().prompts, ("query",))

    @property
    def document_prompt(self) -> str:
        """The prefix prepended to documents ('' for M3E)."""
        if self._document_prompt is not None:
            return self._document_prompt
        return _pick_prompt(self._loaded().prompts, ("passage", "document"))

    @property
    def stats(self) -> EncodeStats:
        """Counters of texts, tokens, padding and truncations for this model in this process."""
        return self._loaded().stats

    def info(self) -> dict[str, Any]:
        """A JSON-ready description: model, dim, device, backend, window, prompts and versions."""
        import sentence_transformers
        import torch
        import transformers

        from . import __version__

        loaded = self._loaded()
        return {
            "model": self.model_name,
            "path": str(loaded.path),
            "dim": loaded.dim,
            "max_seq_length": loaded.max_seq_length,
            "device": str(loaded.st.device),
            "backend": self.backend,
            "normalize": self.normalize,
            "batch_size": self.batch_size,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "versions": {
                "m3e_rag": __version__,
                "torch": torch.__version__,
                "sentence_transformers": sentence_transformers.__version__,
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
        return self._encode([text], self.query_prompt)[0]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries at once: shape (len(texts), dim)."""
        items = _validate_texts(texts, "queries")
        return self._encode(items, self.query_prompt if items else "")

    async def aencode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`encode_documents`, run in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self.encode_documents, texts)

    async def aencode_query(self, text: str) -> np.ndarray:
        """Async :meth:`encode_query`, run in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self.encode_query, text)

    def _encode(self, texts: list[str], prompt: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        model = self._loaded()
        with model.lock, torch.inference_mode():
            lengths = np.asarray(self.count_tokens(texts, prompt), dtype=np.int64)
            self._check_overflow(lengths, model)
            capped = np.minimum(lengths, model.max_seq_length)
            order = np.argsort(-capped, kind="stable")
            out = np.empty((len(texts), model.dim), dtype=np.float32)
            for idx in _batches(order, capped, self.batch_size, model.max_batch_tokens):
                batch = [texts[i] for i in idx]
                features = model.st.preprocess(batch, prompt=prompt or None)
                out[idx] = self._forward(model, features)
                model.stats.padded_tokens += int(capped[idx].max()) * len(idx)
            model.stats.texts += len(texts)
            model.stats.tokens += int(capped.sum())
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def _forward(self, model: _LoadedModel, features: dict[str, Any]) -> np.ndarray:
        import torch

        emb: torch.Tensor
        if self.backend == "torch":
            device = model.st.device
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            emb = model.st(moved)["sentence_embedding"]
        else:  # the ONNX runner takes CPU tensors and places them itself
            emb = model.runner(features)
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
                "(m3e_rag.chunking.Chunker does it) or pass on_overflow='truncate'."
            )
        model.stats.truncated += int(over.size)
        if self.on_overflow == "warn":
            logger.warning(
                "%d of %d texts exceed the %d-token window and were truncated (first: index %d, %d tokens); "
                "chunk them (m3e_rag.chunking.Chunker) or pass on_overflow='truncate' to silence this.",
                over.size, lengths.size, model.max_seq_length, first, int(lengths[first]),
            )


# ------------------------------------------------------------------------------------------ CPU speed helpers


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


def _max_batch_tokens(st: SentenceTransformer) -> int:
    """Padded tokens per forward pass that keep the widest activation under MAX_BATCH_ACTIVATION_BYTES."""
    config = getattr(getattr(st[0], "auto_model", None), "config", None)
    width = int(getattr(config, "intermediate_size", 0) or 4 * int(getattr(config, "hidden_size", 768) or 768))
    return max(512, MAX_BATCH_ACTIVATION_BYTES // (4 * width))
