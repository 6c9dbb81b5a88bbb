"""M3EEncoder: the one place where text becomes vectors.

Both framework adapters (LangChain, LlamaIndex) and the pipeline call this class, so batching,
truncation accounting, prompts and backends are decided once. Construction is cheap: the model
loads on first use (or :meth:`M3EEncoder.load`) and is shared, per process, by every encoder
asking for the same (model, device, backend, trust_remote_code).

This module is the public surface; the work is done next to it: :mod:`~m3e_rag.encode.options` checks
the arguments, :mod:`~m3e_rag.encode.loader` loads a model into :mod:`~m3e_rag.encode.cache`,
:mod:`~m3e_rag.encode.batching` runs texts in batches through :mod:`~m3e_rag.encode.torch_backend` (or
an ONNX runner), and :mod:`~m3e_rag.encode.prompts` picks each side's prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from m3e_rag.encode.batching import _capped_lengths, _encode_batches
from m3e_rag.encode.bge_m3 import ModelOutputsMixin
from m3e_rag.encode.cache import EncodeStats, _cached_model, _is_cached, _LoadedModel
from m3e_rag.encode.inputs import (
    _validate_pairs,
    _validate_texts,
    query_text,
)
from m3e_rag.encode.light import light_prompts, light_shape, light_tokenizer
from m3e_rag.encode.loader import _load_model
from m3e_rag.encode.loading import locate_model
from m3e_rag.encode.options import DEFAULT_BATCH_SIZE, Backend, OnOverflow, _EncoderOptions
from m3e_rag.encode.prompts import _resolve_prompt
from m3e_rag.encode.registry import resolve_spec
from m3e_rag.encode.torch_backend import (
    _encode_in_pool,
    _is_sentence_transformer,
    _st_embeddings,
    _torch_features,
)
from m3e_rag.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["M3EEncoder", "Backend", "OnOverflow", "EncodeStats", "DEFAULT_BATCH_SIZE"]

#: Options every framework adapter exposes as fields and hands to the shared encoder unchanged.
ADAPTER_OPTIONS: tuple[str, ...] = ("device", "batch_size", "normalize", "backend", "on_overflow", "trust_remote_code")


def _versions() -> dict[str, str]:
    """The versions :meth:`M3EEncoder.info` reports: this package and the libraries that shape the vectors."""
    import importlib.metadata

    import torch
    import transformers

    from m3e_rag._version import __version__

    return {
        "m3e_rag": __version__,
        "torch": torch.__version__,
        "sentence_transformers": importlib.metadata.version("sentence-transformers"),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


class M3EEncoder(_EncoderOptions, ModelOutputsMixin):
    """Encode passages and queries with an M3E (or any sentence-transformers) model.

    Args:
        model_name: an alias (``"m3e-base"``), a hub id (``"moka-ai/m3e-base"``) or a local folder.
            None reads ``$M3E_MODEL`` and falls back to ``m3e-base``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        batch_size: texts per forward pass. Batches are formed from texts sorted by token length,
            so little compute is spent on padding.
        normalize: L2-normalize every vector (the published M3E export does not), so cosine and dot
            product agree.
        backend: ``"torch"`` (fp32, the reference), ``"onnx"``, ``"onnx-int8"`` or ``"onnx-int8-fast"``
            (ONNX Runtime, needs ``m3e-rag[onnx]``; the int8 ones trade fidelity to fp32 for speed on CPU:
            :mod:`m3e_rag.encode.onnx`).
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
            at least :data:`~m3e_rag.encode.precision.HALF_MIN_COSINE` to float32's (else float32, with a
            warning), and float32 on CPU; ``"float32"`` forces full precision; ``"float16"`` /
            ``"bfloat16"`` force half precision (CUDA only: refused on CPU and with the ONNX backends).
            ``info()`` reports what runs.
        show_progress: a tqdm bar over batches.
        multi_process: encode with sentence-transformers' pool, one process per CUDA GPU; refused
            on CPU, where one process already uses every core.
        local_files_only: never download; a hub id must already be in the cache.

    :mod:`m3e_rag.encode.hf_options` maps ``HuggingFaceEmbeddings``-style ``model_kwargs`` /
    ``encode_kwargs`` / ``query_encode_kwargs`` onto these arguments, which the base class
    :class:`~m3e_rag.encode.options._EncoderOptions` checks and keeps (:meth:`options` gives them back).
    """

    def __repr__(self) -> str:
        return (
            f"M3EEncoder(model_name={self.model_name!r}, device={self.device!r}, backend={self.backend!r}, "
            f"batch_size={self.batch_size}, normalize={self.normalize})"
        )

    # ------------------------------------------------------------------ loading
    def load(self) -> M3EEncoder:
        """Load the model now (otherwise it loads on first use). Returns self."""
        self._loaded()
        return self

    @property
    def is_loaded(self) -> bool:
        """Whether this encoder's model is already in memory in this process."""
        return _is_cached(self._key())

    def _loaded(self) -> _LoadedModel:
        key = self._key()
        return _cached_model(key, lambda: _load_model(
            self.model_name, key[1], backend=self.backend, multi_process=self.multi_process,
            trust_remote_code=self.trust_remote_code, dtype=self.dtype, cache_folder=self.cache_folder,
            revision=self.revision, local_files_only=self.local_files_only,
        ))

    # --------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Embedding dimension; from the registry or the folder's files, without loading, where they say it."""
        known = None if self.is_loaded else self._unloaded_shape()[0]
        return known if known is not None else self._loaded().dim

    @property
    def max_seq_length(self) -> int:
        """Token window of the model, special tokens included (512 for M3E)."""
        known = None if self.is_loaded else self._unloaded_shape()[1]
        return known if known is not None else self._loaded().max_seq_length

    def _unloaded_shape(self) -> tuple[int | None, int | None]:
        """``(dim, window)`` known without the weights: the registry's, else the folder's files (plain torch)."""
        spec = resolve_spec(self.model_name)
        if spec is not None:
            return spec.dim, spec.max_tokens
        if self.backend != "torch" or self.trust_remote_code:
            return None, None
        return light_shape(self._model_folder())

    @property
    def tokenizer(self) -> Any:
        """The model's own (fast) tokenizer, used to count tokens exactly as the model sees them.

        Before the model is loaded this is the folder's tokenizer alone (:mod:`~m3e_rag.encode.light`), so
        work that needs only tokens (BM25 search, chunking) never loads the weights.
        """
        return self._loaded().st.tokenizer if self.is_loaded else light_tokenizer(self._model_folder())

    def _model_folder(self) -> Path:
        """The local folder of this encoder's model (found in the cache or downloaded; weights not loaded).

        Looked up once per encoder: a sparse-only search asks for it (tokenizer, prompt, window) every time.
        """
        folder: Path | None = self.__dict__.get("_folder")
        if folder is None:
            folder = self._folder = locate_model(self.model_name, cache_folder=self.cache_folder,
                                                 revision=self.revision, local_files_only=self.local_files_only)
        return folder

    def _known_prompts(self) -> dict[str, str]:
        own = self._loaded().prompts if self.is_loaded else light_prompts(self._model_folder())
        return {**own, **self.prompts}

    @property
    def query_prompt(self) -> str:
        """The prefix prepended to queries ('' for M3E).

        Order: ``query_prompt``; else ``query_prompt_name`` looked up in ``prompts`` and the model's
        own prompts; else the model's non-empty ``query`` prompt; else the registry's (the
        bge-*-zh-v1.5 retrieval instruction, see :mod:`m3e_rag.encode.registry`).
        """
        return _resolve_prompt("query", self._query_prompt, self.query_prompt_name, self._known_prompts,
                               self.model_name)

    @property
    def document_prompt(self) -> str:
        """The prefix prepended to documents ('' for M3E); same order as :attr:`query_prompt`."""
        return _resolve_prompt("document", self._document_prompt, self.document_prompt_name, self._known_prompts,
                               self.model_name)


    @property
    def stats(self) -> EncodeStats:
        """Counters of texts, tokens, padding and truncations for this model in this process."""
        return self._loaded().stats

    def info(self) -> dict[str, Any]:
        """A JSON-ready description: model, dim, device, backend, window, prompts and versions."""
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
            "versions": _versions(),
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
        return self._encode([query_text(text, self.max_seq_length)], self.query_prompt, **self._query_side())[0]

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
        left, right = _validate_pairs(a, b)
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
            capped = _capped_lengths(model, self.count_tokens(texts, prompt), self.on_overflow)
            if self.multi_process:  # loaded by sentence-transformers: see loader._load_weights
                out = _encode_in_pool(model, texts, prompt, batch_size, self.show_progress)
            else:

                def prepare(idx: np.ndarray) -> dict[str, Any]:
                    return self._prepare(model, [texts[i] for i in idx], prompt)

                out = _encode_batches(model, capped, batch_size, prepare,
                                      lambda features: self._forward(model, features), self.show_progress)
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
        return _torch_features(model, features)

    def _forward(self, model: _LoadedModel, features: dict[str, Any]) -> np.ndarray:
        import torch

        if self.backend == "torch":
            return _st_embeddings(model.st, features)
        emb: torch.Tensor = model.runner(features)  # the ONNX runner takes CPU tensors and places them itself
        return emb.detach().to(torch.float32).cpu().numpy()
