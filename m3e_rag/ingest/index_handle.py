"""The index one pipeline works on: its Chroma store and BM25 side, opened lazily, written under their locks.

:class:`IndexHandle` opens the store (and builds the chunker whose settings the store guards) on
first use, opens the BM25 side beside it and keeps both in step with other processes: a write holds
the locks and bumps the store's generation (:meth:`IndexHandle.writing`), a search first catches up
with other writers (:meth:`IndexHandle.sync`). It lives with ingest because writing is what it is
for; searches read through it as well, as :class:`m3e_rag.retrieve.searcher.IndexReader` describes,
wired by :class:`m3e_rag.RAGPipeline` (the two layers do not import each other).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.index.chroma import DEFAULT_COLLECTION, ChromaStore
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.learned import LearnedSparseIndex
from m3e_rag.index.sparse.learned_side import LearnedSide, learned_folder
from m3e_rag.index.sparse.sync import SparseSide, server_cache_folder, sparse_folder
from m3e_rag.ingest.chunking import Chunker

__all__ = ["IndexHandle"]

logger = logging.getLogger(__name__)


class IndexHandle:
    """The Chroma store, its BM25 side and the chunker of one pipeline, opened on first use.

    Args:
        index_path: folder of the embedded Chroma database (and of the BM25 side).
        chroma_url: address of a Chroma server instead of the folder, or None.
        collection: Chroma collection name.
        encoder: the pipeline's encoder (its model loads when the chunker or the store is first needed).
        chunk_tokens: chunk budget in model tokens.
        overlap_tokens: overlap between consecutive chunks, in tokens.
        use_sparse: keep a BM25 index beside the store.
        client, settings, headers, collection_metadata: LangChain Chroma's connection options (see below).
    """

    def __init__(
        self,
        index_path: Path,
        chroma_url: str | None,
        collection: str,
        encoder: TextEncoder,
        chunk_tokens: int,
        overlap_tokens: int,
        use_sparse: bool,
        *,
        client: Any = None,
        settings: Any = None,
        headers: Mapping[str, str] | None = None,
        collection_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.index_path = index_path
        self.chroma_url = chroma_url
        # LangChain Chroma's connection options: a ready chromadb client (then the BM25 side lives in
        # memory, rebuilt from the store on open), chromadb Settings, server headers, collection metadata.
        self._chroma_options: dict[str, Any] = {
            "client": client,
            "settings": settings,
            "headers": headers,
            "collection_metadata": collection_metadata,
        }
        self.collection = collection
        self.encoder = encoder
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.use_sparse = use_sparse
        self._store: ChromaStore | None = None
        self._chunker: Chunker | None = None
        self._sparse: SparseIndex | None = None
        self._sparse_side: SparseSide | None = None
        self._learned_side: LearnedSide | None = None
        self._write_generation = 0
        self._lock = threading.RLock()

    @property
    def chroma_options(self) -> dict[str, Any]:
        """The connection options the store is opened with (client, settings, headers, collection metadata)."""
        return dict(self._chroma_options)

    @property
    def sparse_side(self) -> SparseSide | None:
        """The BM25 side once opened (None before the first search or write that needs it)."""
        return self._sparse_side

    @property
    def has_learned(self) -> bool:
        """The index keeps a learned-sparse side: the encoder has a sparse head and a sparse side is kept.

        Decided by the encoder's ``outputs`` (a model folder that ships the heads), never by a model name.
        """
        return self.use_sparse and "sparse" in getattr(self.encoder, "outputs", ("dense",))

    @property
    def learned_index(self) -> LearnedSparseIndex | None:
        """The learned-sparse index (the model's lexical weights), caught up with the store; None without a head."""
        if not self.has_learned:
            return None
        with self._lock:
            if self._learned_side is None:
                side = LearnedSide(self.store, self._learned_path(), self._document_lexical)
                with side.locked():
                    self.store.refresh_if_moved()
                    side.open()
                self._learned_side = side
            return self._learned_side.learned

    def embed_documents(self, texts: Sequence[str]) -> tuple[Any, list[dict[str, float]] | None]:
        """Document vectors, and their lexical weights when a learned side is kept: ONE forward pass for both.

        Returns:
            ``(vectors, lexical)``; ``lexical`` is None for a model without a sparse head.
        """
        if not self.has_learned:
            return self.encoder.encode_documents(texts), None
        out = self.encoder.encode_outputs(list(texts), "document", sparse=True)  # type: ignore[attr-defined]
        return out.dense, list(out.lexical)

    def _learned_path(self) -> Path | None:
        path = self.sparse_path()
        return None if path is None else learned_folder(path)

    def _document_lexical(self, texts: list[str]) -> list[dict[str, float]]:
        """The model's lexical weights of document texts (a catch-up from the store: weights come from the model)."""
        return self.embed_documents(texts)[1] or []

    def _sides(self) -> list[SparseSide]:
        """The sparse sides opened: BM25, then the learned one."""
        return [side for side in (self._sparse_side, self._learned_side) if side is not None]

    @property
    def chunker(self) -> Chunker:
        """The chunker, budgeted with the model's own tokenizer (loads the model on first use)."""
        if self._chunker is None:
            prompt_tokens = 0
            if self.encoder.document_prompt:
                prompt_tokens = self.encoder.count_tokens([self.encoder.document_prompt])[0] - 2
            room = self.encoder.max_seq_length - 2 - max(0, prompt_tokens)
            if self.chunk_tokens > room:
                logger.info("chunk_tokens=%d exceeds the model's room of %d tokens; using %d",
                            self.chunk_tokens, room, room)
            self._chunker = Chunker(
                self.encoder.tokenizer, max_tokens=min(self.chunk_tokens, room), overlap_tokens=self.overlap_tokens
            )
        return self._chunker

    @property
    def store(self) -> ChromaStore:
        """The Chroma store, opened (and its model checked) on first use."""
        if self._store is None:
            self._store = ChromaStore(
                None if self.chroma_url else self.index_path,
                url=self.chroma_url,
                collection=self.collection,
                model_id=self.encoder.model_name,
                dim=self.encoder.dim,
                normalize=self.encoder.normalize,
                chunker=self.chunker.settings(),
                **self._chroma_options,
            )
        return self._store

    def sparse_path(self) -> Path | None:
        """Folder of the BM25 side: beside an embedded index, or a local cache for a Chroma server."""
        if self._chroma_options["client"] is not None:
            return None  # a caller's client: no stable key to cache under; kept in memory
        if self.chroma_url is not None:
            return server_cache_folder(self.chroma_url, self.collection, self.store.collection_id)
        return sparse_folder(self.index_path, self.collection, DEFAULT_COLLECTION)

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, loaded and checked against the store (caught up from it when stale)."""
        with self._lock:
            if self._sparse is None or self._sparse_side is None:
                self._sparse = self._open_sparse()
            return self._sparse

    def _open_sparse(self) -> SparseIndex:
        side = SparseSide(self.store, self.sparse_path())
        with side.locked():
            self.store.refresh_if_moved()
            index = side.open()
        self._sparse_side = side
        return index

    def sync(self) -> None:
        """See other processes' writes: one metadata read; reconnect and catch up only if it moved.

        A long-lived pipeline calls this before every search, so its dense results (Chroma's
        in-memory HNSW) and BM25 results follow another process's writes.
        """
        store = self.store
        sides = self._sides() if self.use_sparse else []
        if store.generation() == store.seen_generation and all(s.generation == store.seen_generation for s in sides):
            return
        with self._lock, ExitStack() as stack:
            stack.enter_context(store.open_lock())
            for side in sides:
                stack.enter_context(side.locked())
            store.refresh_if_moved()
            for side in sides:
                side.sync()
            if self._sparse_side is not None:
                self._sparse = self._sparse_side.index

    @contextmanager
    def writing(self) -> Iterator[int]:
        """Hold the write locks, catch up with other writers, bump the store's generation; yield it.

        The bump comes before the records change, so a writer killed midway leaves the generation
        ahead of the BM25 log: the next opener sees it and catches up instead of trusting the log.

        Raises:
            StoreError: when the index is read-only (it can be searched; writing needs a writable copy).
        """
        store = self.store
        store.require_writable()  # before the BM25 side is opened or anything else is done
        with self._lock, ExitStack() as stack:
            if self.use_sparse:
                self.sparse_index  # noqa: B018 - opens (and catches up) the BM25 side first
                self.learned_index  # noqa: B018 - and the learned side, when the model has a sparse head
            stack.enter_context(store.write_lock())
            sides = self._sides()
            for side in sides:
                stack.enter_context(side.locked())
            store.refresh_if_moved()
            for side in sides:
                side.sync()
            if self._sparse_side is not None:
                self._sparse = self._sparse_side.index
            generation = store.bump_generation()
            self._write_generation = generation
            yield generation
            for side in sides:
                side.mark(generation)  # a write that touched no sparse entry still moved the store
                side.maybe_compact()

    def sparse_upsert(
        self, ids: Sequence[str], texts: Sequence[str], lexical: Sequence[Mapping[str, float]] | None = None
    ) -> None:
        """Mirror an upsert in the sparse sides (inside :meth:`writing`).

        ``lexical``: the texts' lexical weights from the forward pass that gave their vectors (ingest); without
        them a learned side runs the model's sparse output on the texts itself.
        """
        if not (self.use_sparse and ids):
            return
        if self._sparse_side is not None:
            self._sparse_side.upsert(ids, texts, self._write_generation)
        if self._learned_side is not None:
            if lexical is None:
                self._learned_side.upsert(ids, texts, self._write_generation)
            else:
                self._learned_side.upsert_weights(ids, lexical, self._write_generation)

    def sparse_delete(self, ids: Sequence[str]) -> None:
        """Mirror a delete in the sparse sides (inside :meth:`writing`)."""
        if self.use_sparse and ids:
            for side in self._sides():
                side.delete(ids, self._write_generation)

    def save_sparse(self) -> None:
        """Fold the sparse logs into new snapshots if they have grown past their share (writes are logged as made)."""
        for side in self._sides():
            side.maybe_compact()

    def stats(self) -> dict[str, Any]:
        """Model, dimension, chunk and source counts, and where the index lives."""
        desc = self.store.describe()
        sources = self.store.sources()
        return {
            "model": desc["model"],
            "dim": desc["dim"],
            "chunks": self.store.count(),
            "sources": len(sources),
            "chunker": desc["chunker"],
            "collection": desc["collection"],
            "location": desc["location"],
        }

    def drop(self) -> None:
        """Delete the collection itself (records, vectors, model guard) and the BM25 index beside it.

        The next use creates a new, empty collection.
        """
        path = self.sparse_path()
        self.store.drop()
        for folder in (path, None if path is None else learned_folder(path)):
            if folder is not None and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        self._store = None
        self._sparse = None
        self._sparse_side = None
        self._learned_side = None
