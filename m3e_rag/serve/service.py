"""The service's engine room: the loaded model, the batcher, the index and the reranker.

The server adds transport, batching and auth to the library, nothing else: vectors come from
:class:`~m3e_rag.encode.encoder.M3EEncoder`, search and ingest from :class:`~m3e_rag.pipeline.RAGPipeline`.
Every model call (embedding requests, the pipeline's ingest and query embeddings, the reranker)
runs on the batcher's single worker thread, so requests and ingests share forward passes instead
of competing for the cores; the batcher takes them in fair turns, so a small request is not stuck
behind a large one or behind an ingest.

Searches do not wait for whole ingests: :attr:`Service.index_lock` serializes the service's writers
only. A search reads while an ingest writes, as Chroma allows; the pipeline's own lock keeps each
ingest step whole (:meth:`m3e_rag.ingest.index_handle.IndexHandle.writing`), so a search that
arrives during a step waits for that step (``INGEST_STEP_CHUNKS`` chunks), not for the ingest. The
one piece of state searches and an ingest share in this process, the pipeline encoder's tokenizer,
is used by one thread at a time (:class:`SerialTokenizer`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.encode.inputs import cap_query_chars, check_unicode
from m3e_rag.errors import InputError, M3ERagError
from m3e_rag.serve.batcher import Batcher, Kind
from m3e_rag.serve.config import ServeConfig
from m3e_rag.serve.metrics import ServeMetrics

__all__ = ["Service", "SerialTokenizer", "WorkerEncoder", "WorkerReranker"]

logger = logging.getLogger(__name__)

#: Texts per submission when the pipeline (ingest) embeds through the batcher: the batcher shares
#: its batches fairly anyway; small submissions also keep an ingest's share of the queue small.
INGEST_SLICE = 32


class SerialTokenizer:
    """A Hugging Face tokenizer whose calls run one at a time (attributes are passed through).

    Searches now run in several threads at once, beside an ingest, and they all tokenize with the
    pipeline encoder's tokenizer (the query bound, token counts). A Rust fast tokenizer switches its
    truncation and padding settings in place on a call, and fails ("Already borrowed") if another
    thread is inside it meanwhile; the calls here are a few kilobytes each (queries are capped first),
    so taking turns costs nothing measurable.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.RLock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Tokenize (see the wrapped tokenizer), alone."""
        with self._lock:
            return self._inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or isinstance(value, type):
            return value

        def serial(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return serial


class WorkerEncoder(M3EEncoder):
    """An M3EEncoder whose encoding runs on the batcher's worker (for the pipeline's ingest and search).

    It is called from worker threads (never the event loop) and blocks until its batch is done.
    Its tokenizer is a private copy: the chunker tokenizes in the ingest thread while the model
    worker tokenizes its batches, and one Rust tokenizer must not be used by two threads at once;
    the copy itself is shared by concurrent searches and an ingest, so its calls take turns
    (:class:`SerialTokenizer`).
    """

    def __init__(self, base: M3EEncoder, batcher: Batcher) -> None:
        super().__init__(
            base.model_name, device=base.device, batch_size=base.batch_size, normalize=base.normalize,
            backend=base.backend, on_overflow=base.on_overflow, trust_remote_code=base.trust_remote_code,
            cache_folder=base.cache_folder, revision=base.revision,
        )
        self._batcher = batcher
        self._tokenizer_copy: Any = None
        self._tokenizer_lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """A private copy of the model's tokenizer (see the class docstring)."""
        with self._tokenizer_lock:
            if self._tokenizer_copy is None:
                self._tokenizer_copy = SerialTokenizer(copy.deepcopy(self._loaded().st.tokenizer))
            return self._tokenizer_copy

    def _through_worker(self, texts: list[str], kind: Kind) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), INGEST_SLICE):
            future = self._batcher.submit_texts(texts[start : start + INGEST_SLICE], kind, block=True)
            parts.append(future.result().vectors)
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages on the model worker."""
        return self._through_worker(list(texts), "document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries on the model worker."""
        return self._through_worker(list(texts), "query")

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query on the model worker, bounded to the window first (as :meth:`M3EEncoder.encode_query`)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("query must be a non-empty string.")
        check_unicode(text)
        return self._through_worker([cap_query_chars(text, self.max_seq_length)], "query")[0]


class WorkerReranker:
    """A cross-encoder whose ``predict`` runs on the batcher's worker (called from worker threads).

    Pairs are scored ``max_batch_texts`` at a time, each slice a call taking its own turn at the
    worker, so a search reranking many candidates does not hold the worker for all of them at once.
    """

    def __init__(self, model: Any, batcher: Batcher) -> None:
        self.model = model
        self._batcher = batcher

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> Any:
        """Score (query, passage) pairs; higher is more relevant."""
        pairs = list(sentences)
        step = self._batcher.max_batch_texts
        if len(pairs) <= step:
            return self._batcher.submit_call(lambda: self.model.predict(pairs, **kwargs)).result()
        parts = [
            np.asarray(self._batcher.submit_call(partial(self.model.predict, pairs[start : start + step], **kwargs))
                       .result())
            for start in range(0, len(pairs), step)
        ]
        return np.concatenate(parts)


def load_reranker(spec: str, device: str | None) -> Any:
    """Load a cross-encoder by alias, hub id or folder (``m3e_rag.retrieve.rerank``), now rather than on first use."""
    # Not a copy of m3e_rag.retrieve.rerank.load_reranker: it builds the reranker through that function and
    # differs only in loading the weights at once. The library's loader is lazy (the model loads on the first
    # predict); the server wants a missing or broken reranker to fail the start (and /health), not the first
    # /v1/rerank request, and its first request not to pay the load.
    from m3e_rag.retrieve.rerank import load_reranker as _load

    reranker = _load(spec, device=device)
    loader = getattr(reranker, "load", None)
    if callable(loader):
        loader()
    return reranker


def model_id(name: str) -> str:
    """The short id a model is listed under: the last part of a hub id or path (``m3e-base``)."""
    return Path(name.rstrip("/\\")).name or name


class Service:
    """Everything a request needs, created empty and filled by :meth:`load` (in a thread)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServeMetrics()
        self.encoder: M3EEncoder | None = None
        self.batcher: Batcher | None = None
        self.pipeline: Any = None
        self.reranker: WorkerReranker | None = None
        self.reranker_id: str | None = None
        self.model_id = ""
        self.model_names: frozenset[str] = frozenset()
        self.dim = 0
        self.window = 0
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        #: Serializes the service's ingests (writers). Searches do not take it: they read while an
        #: ingest writes (see the module docstring).
        self.index_lock = asyncio.Lock()

    # ----------------------------------------------------------------- loading
    def _model_name(self) -> str | None:
        import os

        cfg = self.config
        if cfg.model or os.environ.get("M3E_MODEL"):
            return cfg.model or os.environ.get("M3E_MODEL")
        if cfg.has_index:
            from m3e_rag.index.chroma import read_index_model

            recorded = read_index_model(None if cfg.chroma_url else cfg.index, cfg.chroma_url, cfg.collection)
            if recorded:
                return str(recorded[0])
        return None

    def load(self) -> None:
        """Load the model (and index and reranker), start the worker, then mark the service ready."""
        cfg = self.config
        encoder = M3EEncoder(
            self._model_name(), device=cfg.device, backend=cfg.backend,  # type: ignore[arg-type]
            batch_size=cfg.batch_size, on_overflow="truncate",
        ).load()
        self.encoder = encoder
        self.dim = encoder.dim
        self.window = encoder.max_seq_length
        self.model_id = cfg.served_names[0] if cfg.served_names else model_id(encoder.model_name)
        self.model_names = frozenset({*cfg.served_names, self.model_id, encoder.model_name})
        prompts = {"document": encoder.document_prompt, "query": encoder.query_prompt}

        def embed(texts: list[str], kind: Kind) -> np.ndarray:
            return encoder.encode_documents(texts) if kind == "document" else encoder.encode_queries(texts)

        def count(texts: list[str], kind: Kind) -> list[int]:
            return encoder.count_tokens(texts, prompts[kind])

        self.batcher = Batcher(
            embed, count, window=self.window, on_overflow=cfg.on_overflow, max_batch_texts=cfg.max_batch_texts,
            max_wait_s=cfg.max_wait_ms / 1000.0, max_queue_texts=cfg.max_queue_texts, observer=self.metrics,
        ).start()
        if cfg.reranker:
            self.reranker = WorkerReranker(load_reranker(cfg.reranker, cfg.device), self.batcher)
            self.reranker_id = model_id(cfg.reranker)
        if cfg.has_index:
            from m3e_rag.pipeline import RAGPipeline

            self.pipeline = RAGPipeline(
                cfg.index or ".m3e_index", chroma_url=cfg.chroma_url, collection=cfg.collection,
                encoder=WorkerEncoder(encoder, self.batcher),
            )
            _ = self.pipeline.store  # open it now: a model mismatch stops the start, not the first search
            if self.pipeline.use_sparse:
                _ = self.pipeline.sparse_index
        self.metrics.ready.set(1)
        self.ready.set()
        logger.info("Serving %s (%d-d, window %d)", self.model_id, self.dim, self.window)

    def load_or_record(self) -> bool:
        """:meth:`load`, keeping the error for ``/health`` and the CLI. Returns whether it worked."""
        try:
            self.load()
            return True
        except (M3ERagError, OSError, ValueError, RuntimeError) as exc:
            logger.error("The service could not start: %s", exc)
            self.load_error = exc
            return False

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        if self.batcher is not None:
            self.batcher.close()
