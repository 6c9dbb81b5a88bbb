"""RAGPipeline: files or texts in, Chinese-aware chunks, M3E vectors, Chroma, and retrieval out.

One object does the product's main job::

    from m3e_rag import RAGPipeline

    rag = RAGPipeline(index="./my_index")              # embedded Chroma in ./my_index
    report = rag.ingest(["docs/"])                     # load, chunk, embed, store
    for hit in rag.search("大熊猫吃什么？", k=3, mode="hybrid"):
        print(hit.score, hit.source, hit.text)

Ingest is incremental and crash-safe: chunk ids derive from content, so an unchanged file
embeds nothing, a changed file replaces the chunks that changed, and an ingest killed midway
is completed by running it again. Writers to one index folder take an inter-process lock.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.encode.encoder import DEFAULT_BATCH_SIZE, Backend, M3EEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.boundary import check_filters
from m3e_rag.index.chroma import DEFAULT_COLLECTION, ChromaStore, StoreRecord
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.sync import SPARSE_DIR, SparseSide, server_cache_folder
from m3e_rag.ingest.chunking import Chunker
from m3e_rag.ingest.loaders import DEFAULT_MAX_FILE_BYTES, FileLoader, SkippedFile, StreamedDocument, load_texts
from m3e_rag.ingest.run import IngestInterrupted, IngestRun, sigint_deferred
from m3e_rag.retrieve.modes import (
    HybridWeights,
    Reranker,
    SearchMode,
    check_k,
    check_mode,
    fuse_hybrid,
    mmr_select,
    rerank,
    strip_private,
)
from m3e_rag.retrieve.rerank import RerankerLike, load_reranker
from m3e_rag.types import Chunk, Document, Metadata, RetrievedChunk

__all__ = ["RAGPipeline", "IngestReport", "DEFAULT_CHUNK_TOKENS", "DEFAULT_OVERLAP_TOKENS"]

logger = logging.getLogger(__name__)

#: Default chunk budget in model tokens (the window is 512 with [CLS] and [SEP]).
DEFAULT_CHUNK_TOKENS = 256
#: Default overlap between consecutive chunks, in tokens (whole sentences only).
DEFAULT_OVERLAP_TOKENS = 32
#: Chunks embedded and written per locked step of an ingest (bounds the work lost to a crash).
INGEST_STEP_CHUNKS = 256
#: Filtered BM25: heads of the unfiltered ranking checked against the filter, as multiples of the depth
#: asked (see ``RAGPipeline._sparse_search``), and the most ids one check may send to the store.
SPARSE_VERIFY_ROUNDS = (8, 64)
SPARSE_VERIFY_MAX_IDS = 5000

ProgressCallback = Callable[[int, int], None]


@dataclass
class IngestReport:
    """What an ingest did.

    Attributes:
        files_seen: files found under the given paths.
        files_skipped: files not ingested, each with the reason.
        documents: documents (files, pages, records or texts) loaded.
        chunks_added: chunks newly embedded and stored.
        chunks_unchanged: chunks already stored with the same content (not re-embedded).
        chunks_removed: stale chunks of re-ingested sources that were deleted.
        texts_embedded: texts sent to the model.
        seconds: wall time of the ingest.
        interrupted: Ctrl-C stopped the ingest after committing its current step (see
            :class:`~m3e_rag.ingest.run.IngestInterrupted`); what is counted here was committed.
        notes: files loaded with a caveat (invalid bytes replaced by U+FFFD), as {path, reason}.
    """

    files_seen: int = 0
    files_skipped: list[SkippedFile] = field(default_factory=list)
    documents: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    texts_embedded: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[SkippedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys named above (skipped files as {path, reason})."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def _check_sequence(value: object, name: str, *, allow_mapping: bool = False) -> None:
    """Refuse a str/bytes (or a dict) where a list is expected: ``ids="abc"`` must not mean ids a, b, c."""
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be a list, got the single string {value!r:.60}; wrap it: {name}=[...].")
    if isinstance(value, Mapping) and not allow_mapping:
        raise InputError(f"{name} must be a list, got a dict; pass one entry per text, e.g. {name}=[{{...}}].")
    if not isinstance(value, Iterable):
        raise InputError(f"{name} must be a list, got {type(value).__name__}; pass a list.")


def _check_threshold(value: object) -> float:
    """A finite number, or InputError: a NaN threshold would silently drop every result."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"score_threshold must be a number, got {type(value).__name__}.")
    if not np.isfinite(float(value)):
        raise InputError(f"score_threshold must be a finite number, got {value!r}; leave it None for no threshold.")
    return float(value)


class RAGPipeline:
    """Load, chunk, embed, store and retrieve, over an embedded Chroma folder or a Chroma server.

    Args:
        index: folder of the embedded Chroma database (created if missing). Also where the BM25
            index is kept. Ignored for Chroma itself when ``chroma_url`` is given.
        model_name: M3E alias, hub id or local folder; None reads ``$M3E_MODEL``, then ``m3e-base``.
        chroma_url: address of a Chroma server (``http://127.0.0.1:8000``) instead of a folder.
        collection: Chroma collection name.
        encoder: an existing :class:`M3EEncoder` to use (then model options here are ignored).
        chunk_tokens: chunk budget in model tokens (<= 510 minus the document prompt).
        overlap_tokens: overlap between consecutive chunks, in tokens.
        device: torch device for the model.
        backend: ``torch``, ``onnx`` or ``onnx-int8``.
        batch_size: texts per forward pass.
        sparse: keep a BM25 index beside the store (needed for ``mode="sparse"``/``"hybrid"``).
        hybrid_weights: how hybrid search fuses dense and BM25 candidates (default: z-score fusion,
            see :class:`~m3e_rag.retrieve.modes.HybridWeights`).
        reranker: optional second stage applied to the top results of every search: a reranker name
            (``"bge-reranker-base"``), hub id or CrossEncoder folder (loaded on first use), a callable
            ``fn(query, texts) -> scores``, or an object with ``predict`` (see :mod:`m3e_rag.retrieve.rerank`).
    """

    def __init__(
        self,
        index: str | Path = ".m3e_index",
        *,
        model_name: str | None = None,
        chroma_url: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        encoder: M3EEncoder | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        device: str | None = None,
        backend: Backend = "torch",
        batch_size: int = DEFAULT_BATCH_SIZE,
        sparse: bool = True,
        hybrid_weights: HybridWeights | None = None,
        reranker: RerankerLike | None = None,
        client: Any = None,
        client_settings: Any = None,
        headers: Mapping[str, str] | None = None,
        collection_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.index_path = Path(index).expanduser()
        self.chroma_url = chroma_url
        # LangChain Chroma's connection options: a ready chromadb client (then the BM25 side lives in
        # memory, rebuilt from the store on open), chromadb Settings, server headers, collection metadata.
        self._chroma_options: dict[str, Any] = {
            "client": client,
            "settings": client_settings,
            "headers": headers,
            "collection_metadata": collection_metadata,
        }
        self.collection = collection
        self.encoder = encoder or M3EEncoder(model_name, device=device, backend=backend, batch_size=batch_size)
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.use_sparse = sparse
        self.hybrid_weights = hybrid_weights or HybridWeights()
        self.reranker: Reranker | None = load_reranker(reranker) if reranker is not None else None
        self._store: ChromaStore | None = None
        self._chunker: Chunker | None = None
        self._sparse: SparseIndex | None = None
        self._sparse_side: SparseSide | None = None
        self._write_generation = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        where = self.chroma_url or str(self.index_path)
        return f"RAGPipeline(index={where!r}, model={self.encoder.model_name!r}, collection={self.collection!r})"

    # ------------------------------------------------------------- components
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

    def _sparse_path(self) -> Path | None:
        """Folder of the BM25 side: beside an embedded index, or a local cache for a Chroma server."""
        if self._chroma_options["client"] is not None:
            return None  # a caller's client: no stable key to cache under; kept in memory
        if self.chroma_url is not None:
            return server_cache_folder(self.chroma_url, self.collection, self.store.collection_id)
        # One folder per collection (the default keeps the plain name).
        name = SPARSE_DIR if self.collection == DEFAULT_COLLECTION else f"{SPARSE_DIR}-{self.collection}"
        return self.index_path / name

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, loaded and checked against the store (caught up from it when stale)."""
        with self._lock:
            if self._sparse is None or self._sparse_side is None:
                self._sparse = self._open_sparse()
            return self._sparse

    def _open_sparse(self) -> SparseIndex:
        side = SparseSide(self.store, self._sparse_path())
        with side.locked():
            self.store.refresh_if_moved()
            index = side.open()
        self._sparse_side = side
        return index

    def _sync(self) -> None:
        """See other processes' writes: one metadata read; reconnect and catch up only if it moved.

        A long-lived pipeline calls this before every search, so its dense results (Chroma's
        in-memory HNSW) and BM25 results follow another process's writes.
        """
        store = self.store
        side = self._sparse_side if self.use_sparse else None
        if store.generation() == store.seen_generation and (side is None or side.generation == store.seen_generation):
            return
        with self._lock:
            if side is None:
                with store.write_lock():
                    store.refresh_if_moved()
                return
            with side.locked():
                store.refresh_if_moved()
                side.sync()
                self._sparse = side.index

    @contextmanager
    def _writing(self) -> Iterator[int]:
        """Hold the write locks, catch up with other writers, bump the store's generation; yield it.

        The bump comes before the records change, so a writer killed midway leaves the generation
        ahead of the BM25 log: the next opener sees it and catches up instead of trusting the log.
        """
        store = self.store
        with self._lock, ExitStack() as stack:
            side = None
            if self.use_sparse:
                self.sparse_index  # noqa: B018 - opens (and catches up) the BM25 side first
                side = self._sparse_side
            stack.enter_context(side.locked() if side is not None else store.write_lock())
            store.refresh_if_moved()
            if side is not None:
                side.sync()
                self._sparse = side.index
            generation = store.bump_generation()
            self._write_generation = generation
            yield generation
            if side is not None:
                side.mark(generation)  # a write that touched no BM25 entry still moved the store
                side.maybe_compact()

    def _sparse_upsert(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Mirror an upsert in the BM25 side (inside :meth:`_writing`)."""
        if self.use_sparse and self._sparse_side is not None and ids:
            self._sparse_side.upsert(ids, texts, self._write_generation)

    def _sparse_delete(self, ids: Sequence[str]) -> None:
        """Mirror a delete in the BM25 side (inside :meth:`_writing`)."""
        if self.use_sparse and self._sparse_side is not None and ids:
            self._sparse_side.delete(ids, self._write_generation)

    # ---------------------------------------------------------------- ingest
    def ingest(
        self,
        paths: str | Path | Sequence[str | Path] | None = None,
        *,
        texts: Sequence[str] | None = None,
        documents: Sequence[Document | Any] | None = None,
        sources: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        follow_symlinks: bool = False,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    ) -> IngestReport:
        """Load, chunk, embed and store files, folders, texts or Documents.

        Args:
            paths: files and folders (folders are walked recursively).
            texts: in-memory texts; ``sources`` names them (default: a hash of the text).
            documents: :class:`Document` objects, or LangChain / LlamaIndex Documents (see
                :mod:`m3e_rag.ingest.documents`).
            sources: one source name per text.
            metadatas: one metadata dict per text.
            include: glob patterns a file must match (folders only).
            exclude: glob patterns that skip a file (folders only).
            progress: called as ``progress(chunks_done, chunks_known)`` after each step (an ingest
                streams, so the total is known only at the end: ``chunks_known`` grows with it).
            follow_symlinks: follow symbolic links that lead out of the given folders (by default
                they are skipped and reported; links inside them are followed).
            max_file_bytes: files larger than this are skipped and reported (default 512 MiB;
                ``None`` for no limit). Large text files stream: memory does not grow with them.

        Re-ingesting a source replaces its chunks: unchanged chunks are kept (not re-embedded),
        new ones added, stale ones removed. Sources not mentioned are untouched. A bad file never
        stops an ingest: it is listed in ``files_skipped`` with the reason.

        Memory is bounded (see :mod:`m3e_rag.ingest.run`): documents stream from the loader, each is
        chunked window by window, and chunks are embedded and stored in steps of
        ``INGEST_STEP_CHUNKS``.

        Raises:
            IngestInterrupted: Ctrl-C (SIGINT) in the main thread: the current step was committed
                first; the exception is a ``KeyboardInterrupt`` carrying ``.report``.
        """
        started = time.perf_counter()
        report = IngestReport()
        if paths is None and texts is None and documents is None:
            raise InputError("ingest() needs paths, texts or documents.")
        given: list[Document] = []
        if texts is not None:
            given.extend(load_texts(texts, sources=sources, metadatas=metadatas))
        if documents is not None:
            from m3e_rag.ingest.documents import coerce_documents  # LangChain / LlamaIndex Documents too

            given.extend(coerce_documents(documents))
        loader: FileLoader | None = None
        if paths is not None:
            path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
            loader = FileLoader(
                path_list, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
                max_file_bytes=max_file_bytes,
            )

        def stream() -> Iterator[tuple[Document | StreamedDocument, bool]]:
            if loader is not None:
                for doc in loader:
                    yield doc, True
            for doc in given:
                yield doc, False

        # Progress total: an estimate (the ingest streams), scaled by the share of input consumed.
        given_chars = sum(len(d.text) for d in given)
        input_size = (loader.estimate_bytes() if loader is not None and progress else 0) + given_chars

        def on_step(done: int, known: int) -> None:
            if progress:
                consumed = (loader.bytes_done if loader is not None else 0) + run_chars_done()
                estimate = round(done * input_size / consumed) if consumed else known
                progress(done, max(known, estimate))

        def run_chars_done() -> int:
            return run.given_chars_done if run is not None else 0

        def commit(pairs: list[tuple[str, Chunk]], finished: list[str], current: dict[str, set[str]]) -> None:
            self._ingest_step(pairs, finished, current, report)

        run: IngestRun | None = None
        try:
            with sigint_deferred() as flag:
                run = IngestRun(self.chunker, commit, INGEST_STEP_CHUNKS, flag, on_step)
                run.run(stream())
        finally:
            if loader is not None:
                report.files_seen = loader.files_seen
                report.files_skipped = list(loader.skipped)
                report.notes = list(loader.notes)
            report.seconds = time.perf_counter() - started
            if run is not None:
                report.files_skipped.extend(run.skipped)
                report.documents = run.documents
        assert run is not None
        if progress:
            progress(run.chunks_done, run.chunks_done)
        if run.interrupted:
            report.interrupted = True
            raise IngestInterrupted(report)
        return report

    @staticmethod
    def _metadata(chunk: Chunk) -> Metadata:
        meta: Metadata = {k: v for k, v in chunk.metadata.items() if v is not None}
        meta.update(
            source=chunk.source, start=chunk.start, end=chunk.end, chunk_index=chunk.index, n_tokens=chunk.n_tokens
        )
        return meta

    def _ingest_step(
        self,
        pairs: list[tuple[str, Chunk]],
        finished: list[str],
        current: Mapping[str, set[str]],
        report: IngestReport,
    ) -> None:
        """Embed and store one step's (id, chunk) pairs; drop stale chunks of the sources it finishes.

        ``finished`` sources were read to their end: their stored chunks whose id is not in
        ``current[source]`` are stale. Existence is checked by id (cost O(step), not O(source)).
        """
        store = self.store
        with self._writing():
            existing = {r.id: r.metadata for r in store.get(ids=[cid for cid, _ in pairs], include_text=False)}
            new: list[tuple[str, Chunk]] = []
            changed_ids: list[str] = []
            changed_meta: list[Metadata] = []
            stale: list[str] = []
            for cid, chunk in pairs:
                if cid in existing:
                    report.chunks_unchanged += 1
                    meta = self._metadata(chunk)
                    if any(existing[cid].get(k) != v for k, v in meta.items()):
                        changed_ids.append(cid)
                        changed_meta.append(meta)
                else:
                    new.append((cid, chunk))
            for source in finished:
                keep = current.get(source, set())
                stale.extend(cid for cid in store.ids_of_source(source) if cid not in keep)
            if new:
                vectors = self.encoder.encode_documents([c.text for _, c in new])
                report.texts_embedded += len(new)
                store.upsert(
                    [StoreRecord(cid, c.text, vectors[i], self._metadata(c)) for i, (cid, c) in enumerate(new)]
                )
                report.chunks_added += len(new)
            if changed_ids:
                store.update_metadata(changed_ids, changed_meta)
            if stale:
                store.delete(ids=stale)
                report.chunks_removed += len(stale)
            self._sparse_upsert([cid for cid, _ in new], [c.text for _, c in new])
            self._sparse_delete(stale)

    # ------------------------------------------------------- records as given
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str | None] | None = None,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> list[str]:
        """Store each text as one record, unchunked (what a framework VectorStore is asked to do).

        Args:
            texts: the texts (each should fit the model's window; longer ones follow ``on_overflow``).
            metadatas: one metadata dict (or None) per text, stored as given.
            ids: one id (or None for a new random id) per text; an existing id is overwritten.
            embeddings: one vector per text, already computed by this index's model (e.g. by a framework's
                embed model); checked for dimension and finite values. None embeds the texts here.

        Returns:
            The ids, in the order of ``texts``.
        """
        _check_sequence(texts, "texts")
        if metadatas is not None:
            _check_sequence(metadatas, "metadatas", allow_mapping=False)
        if ids is not None:
            _check_sequence(ids, "ids")
        items = list(texts)
        if metadatas is not None and len(metadatas) != len(items):
            raise InputError(f"Got {len(metadatas)} metadatas for {len(items)} texts; give one per text.")
        if ids is not None and len(ids) != len(items):
            raise InputError(f"Got {len(ids)} ids for {len(items)} texts; give one per text.")
        final_ids = [str(i) if i is not None else uuid.uuid4().hex for i in (ids or [None] * len(items))]
        dupes = sorted({i for i in final_ids if final_ids.count(i) > 1})
        if dupes:
            raise InputError(f"Duplicate ids in one call: {dupes[:5]}; ids must be unique.")
        if not items:
            return []
        if embeddings is None:
            vectors = self.encoder.encode_documents(items)
        else:
            vectors = self._check_vectors(embeddings, len(items))
        metas = [dict(m or {}) for m in (metadatas or [None] * len(items))]
        store = self.store
        with self._writing():
            store.upsert([StoreRecord(cid, items[n], vectors[n], metas[n]) for n, cid in enumerate(final_ids)])
            self._sparse_upsert(final_ids, items)
        return final_ids

    def _check_vectors(self, vectors: Sequence[Sequence[float]] | np.ndarray, n: int) -> np.ndarray:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (n, self.encoder.dim):
            raise InputError(
                f"embeddings have shape {arr.shape}, expected ({n}, {self.encoder.dim}): one {self.encoder.dim}-d "
                f"vector per text from this index's model ({self.encoder.model_name!r})."
            )
        if not np.isfinite(arr).all():
            raise InputError("embeddings hold NaN or infinite values; embed those texts again with this model.")
        return arr

    def get(self, ids: Sequence[str]) -> list[RetrievedChunk]:
        """Fetch stored records by id (missing ids are left out), in the order of ``ids``."""
        _check_sequence(ids, "ids")
        found = {r.id: r for r in self.store.get(ids=list(ids))}
        return [found[i] for i in ids if i in found]

    def _save_sparse(self) -> None:
        """Fold the BM25 log into a new snapshot if it has grown past its share (writes are logged as made)."""
        if self._sparse_side is not None:
            self._sparse_side.maybe_compact()

    # ---------------------------------------------------------------- delete
    def delete(self, *, source: str | Path | None = None, ids: Sequence[str] | None = None,
               where: Mapping[str, Any] | None = None, where_document: Mapping[str, Any] | None = None) -> int:
        """Delete chunks by source (a file path as ingested), ids, a metadata filter or a document filter.

        Several given together must all match. An empty filter (``where={}``) is refused rather than
        read as "everything".

        Returns:
            How many chunks were deleted.
        """
        if source is None and ids is None and not where and not where_document:
            raise InputError(
                "delete() needs source=, ids=, where= or where_document= (an empty filter would match everything; "
                "to drop the whole index, delete its folder)."
            )
        if ids is not None:
            _check_sequence(ids, "ids")
        conditions: list[dict[str, Any]] = []
        if source is not None:
            # Files are stored under their absolute path; accept the path as typed too.
            names = {str(source), Path(source).expanduser().resolve().as_posix()}
            conditions.append({"source": {"$in": sorted(names)}})
        if where:
            conditions.append(dict(where))
        combined: dict[str, Any] | None = None
        if conditions:
            combined = conditions[0] if len(conditions) == 1 else {"$and": conditions}
        with self._writing():
            doomed = [r.id for r in self.store.get(ids=ids, where=combined, where_document=where_document,
                                                   include_text=False)]
            removed = self.store.delete(ids=doomed) if doomed else 0
            self._sparse_delete(doomed)
        return removed

    # ---------------------------------------------------------------- search
    def search(
        self,
        query: str,
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        mode: SearchMode | None = None,
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        score_threshold: float | None = None,
        reranker: RerankerLike | None = None,
        rerank_top_n: int | None = None,
        query_vector: Sequence[float] | np.ndarray | None = None,
        hybrid_weights: HybridWeights | None = None,
    ) -> list[RetrievedChunk]:
        """Find the ``k`` chunks best matching ``query``.

        Args:
            query: the question or search text.
            k: number of results.
            where: Chroma metadata filter, e.g. ``{"source": "/docs/a.md"}`` or ``{"page": {"$gte": 2}}``.
            where_document: Chroma document filter, e.g. ``{"$contains": "熊猫"}`` (also ``$not_contains``,
                ``$regex``, ``$not_regex``, ``$and``, ``$or``). Both filters restrict the candidates BEFORE
                ranking in every mode: BM25 scores only the matching chunks, so the one matching chunk
                among thousands is still found.
            mode: ``dense`` (M3E cosine), ``sparse`` (BM25) or ``hybrid`` (both fused per query, see
                :class:`~m3e_rag.retrieve.modes.HybridWeights`). None (the default) is ``hybrid`` when the
                pipeline keeps a BM25 index (``sparse=True``, the default), else ``dense``: hybrid
                measured at or above dense on every evaluation set (``benchmarks/results/fusion.json``).
            mmr: diversify with maximal marginal relevance over ``fetch_k`` candidates.
            fetch_k: candidates fetched per ranking before fusion, MMR or reranking.
            lambda_mult: MMR trade-off, 1.0 relevance only, 0.0 diversity only.
            score_threshold: drop results scoring below this. Its meaning follows the mode: cosine
                similarity for dense (M3E scores cluster high, so calibrate it), BM25 score for
                sparse, the fused score for hybrid (a weighted sum of per-query z-scores by default);
                with a reranker, the reranker's score.
            reranker: overrides the pipeline's; reorders the top ``rerank_top_n``. A name, hub id or
                CrossEncoder folder, a callable ``fn(query, texts) -> scores`` or an object with ``predict``.
            rerank_top_n: candidates given to the reranker (default ``max(fetch_k, k)``).
            query_vector: ``encoder.encode_query(query)`` computed beforehand (for instance a row of
                ``encoder.encode_queries(many)``, which batches); the query is then not embedded again.
                ``query`` is still needed for BM25 and reranking.
            hybrid_weights: this search's fusion weights instead of the pipeline's (LlamaIndex's
                ``alpha`` arrives here as ``dense=alpha, sparse=1-alpha``).

        Returns:
            Results, best first, each with id, text, score and metadata (source, start, end, ...).
        """
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r:.80}.")
        check_k(k)
        check_k(fetch_k, "fetch_k")
        if score_threshold is not None:
            score_threshold = _check_threshold(score_threshold)
            if mode is None:
                # A threshold is on the mode's scale; the default mode became hybrid, so a threshold
                # written for cosine must not silently start filtering fused scores.
                raise InputError(
                    "score_threshold is on the search mode's scale (cosine for mode='dense', fused z-score units "
                    "for 'hybrid', BM25 for 'sparse'); pass mode= with it, e.g. mode='dense' for a cosine threshold."
                )
        mode = check_mode(mode) if mode is not None else ("hybrid" if self.use_sparse else "dense")
        check_filters(where, where_document)  # a bad filter fails before the query is embedded
        query = self._bounded_query(query)  # before any tokenizer or BM25 work: the window is all that is read
        reranker = load_reranker(reranker) if reranker is not None else self.reranker
        depth = max(k, fetch_k) if (mmr or reranker is not None or mode != "dense") else k
        if reranker is not None and rerank_top_n is not None:
            depth = max(depth, check_k(rerank_top_n, "rerank_top_n"))
        self._sync()  # another process may have written: one metadata read, catch up only if it did
        store = self.store
        qvec = None
        dense: list[RetrievedChunk] = []
        if mode in ("dense", "hybrid") or mmr:
            qvec = self.encoder.encode_query(query) if query_vector is None else self._check_vector(query_vector)
            dense = store.query(qvec, depth, where=where, where_document=where_document, include_embeddings=mmr)
        if mode == "dense":
            results = dense
        else:
            sparse_hits = self._sparse_search(query, depth, where, where_document)
            if mode == "sparse":
                results = sparse_hits
            else:
                weights = hybrid_weights or self.hybrid_weights
                coverage = self.sparse_index.term_coverage(query) if weights.coverage_power else 1.0
                results = fuse_hybrid(dense, sparse_hits, weights, coverage)
        if mmr and results:
            results = self._mmr(qvec, results, k, lambda_mult)
        if reranker is not None:
            results = rerank(reranker, query, results[: rerank_top_n or depth])
        if score_threshold is not None:
            results = [r for r in results if r.score >= score_threshold]
        return strip_private(results[:k])

    def _check_vector(self, vector: Sequence[float] | np.ndarray) -> np.ndarray:
        if isinstance(vector, (str, bytes)):
            raise InputError("query_vector must be a sequence of floats, got a string; pass encoder.encode_query(q).")
        try:
            vec = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"query_vector is not a vector of numbers ({exc}); pass encoder.encode_query(q).") from exc
        if vec.ndim != 1 or vec.shape[0] != self.encoder.dim:
            raise InputError(
                f"query_vector has shape {vec.shape}, expected ({self.encoder.dim},); pass one row of "
                "encoder.encode_queries(...) from this pipeline's model."
            )
        if not np.isfinite(vec).all():
            raise InputError("query_vector holds NaN or infinite values; embed the query again with this model.")
        return vec

    def _bounded_query(self, query: str) -> str:
        """The part of ``query`` the model reads (its window less the query prompt); lone surrogates refused."""
        from m3e_rag.encode.inputs import cap_query, cap_query_chars, check_unicode

        check_unicode(query)
        window = self.encoder.max_seq_length
        query = cap_query_chars(query, window)  # cheap, before the tokenizer sees it
        prompt = self.encoder.query_prompt
        room = window - 2 - (self.encoder.count_tokens([prompt])[0] - 2 if prompt else 0)
        return cap_query(query, self.encoder.tokenizer, max(1, room))

    def _sparse_search(
        self,
        query: str,
        depth: int,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[RetrievedChunk]:
        """BM25 top-``depth``, ranked among the chunks the filters allow (exact, never post-filtered).

        With a metadata filter, BM25's unfiltered ranking is first walked in score order, its head
        fetched by id and the filter evaluated on it (:data:`SPARSE_VERIFY_ROUNDS`): when the head holds
        ``depth`` allowed chunks, or the ranking ends inside it, those are exactly the filtered top
        (filtered and unfiltered BM25 scores are equal: document frequencies count the whole index).
        That is what a broad filter (half of the chunks) needs: resolving the ids it allows first cost
        2.4 s at 1M chunks (``benchmarks/scale.py``). A narrow filter, a document filter or a record the
        evaluator cannot decide falls through to that exact path, where the allowed ids are resolved
        by Chroma.
        """
        if where or where_document:
            verified = self._sparse_verified(query, depth, where, where_document)
            if verified is not None:
                return verified
        allowed = self.store.allowed_ids(where, where_document)  # None: no filter
        if allowed is not None and not allowed:
            return []
        hits = self.sparse_index.search(query, depth, allowed_ids=None if allowed is None else set(allowed))
        if not hits:
            return []
        records = {r.id: r for r in self.store.get(ids=[cid for cid, _ in hits])}
        return [RetrievedChunk(cid, records[cid].text, score, records[cid].metadata)
                for cid, score in hits if cid in records]

    def _sparse_verified(
        self, query: str, depth: int, where: Mapping[str, Any] | None, where_document: Mapping[str, Any] | None
    ) -> list[RetrievedChunk] | None:
        """The filtered BM25 top-``depth`` from the head of the unfiltered ranking; None to take the exact path.

        The head's records are fetched by id and the metadata filter evaluated on them
        (:func:`m3e_rag.index.where.match_where`); a document filter, a record it cannot decide, or a head
        too short sends the search to the exact path.
        """
        from m3e_rag.index.where import match_where

        if where_document or not where:
            return None
        budgets = [depth * f for f in SPARSE_VERIFY_ROUNDS if depth * f <= SPARSE_VERIFY_MAX_IDS]
        if not budgets:
            return None
        ranked = self.sparse_index.search(query, budgets[-1])  # one scoring; each head is a prefix of it
        if not ranked:
            return []
        records: dict[str, RetrievedChunk] = {}
        kept: list[RetrievedChunk] = []
        walked = 0
        for budget in budgets:
            head = ranked[walked:budget]
            records.update((r.id, r) for r in self.store.get(ids=[cid for cid, _ in head]))
            for cid, score in head:
                record = records.get(cid)
                if record is None:
                    continue  # written to BM25, not (yet) to the store: not a result either way
                verdict = match_where(where, record.metadata)
                if verdict is None:
                    return None
                if verdict:
                    kept.append(RetrievedChunk(cid, record.text, score, record.metadata))
                    if len(kept) == depth:
                        return kept
            walked = budget
            if len(ranked) < budget:
                return kept  # the whole ranking was walked
            if len(kept) * SPARSE_VERIFY_ROUNDS[-1] < budget:
                return None  # too selective for the next round as well: resolve the allowed ids instead
        return None

    def _mmr(self, qvec: Any, results: list[RetrievedChunk], k: int, lambda_mult: float) -> list[RetrievedChunk]:
        missing = [r.id for r in results if "_embedding" not in r.metadata]
        vectors: dict[str, Any] = {r.id: r.metadata["_embedding"] for r in results if "_embedding" in r.metadata}
        if missing:
            for rec in self.store.get(ids=missing, include_text=False, include_embeddings=True):
                vectors[rec.id] = rec.metadata["_embedding"]
        picked = mmr_select(qvec, [vectors[r.id] for r in results], k, lambda_mult)
        return [results[i] for i in picked]

    # ----------------------------------------------------------------- stats
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

    # ------------------------------------------------- framework helpers (LangChain's Chroma surface)
    def search_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Dense search for a query vector computed beforehand (by this index's model).

        Same filters and MMR as :meth:`search`; there is no query text, so no BM25 and no reranking.
        ``include_embeddings`` keeps each stored vector in ``metadata["_embedding"]``.
        """
        check_k(k)
        check_k(fetch_k, "fetch_k")
        vec = self._check_vector(vector)
        depth = max(k, fetch_k) if mmr else k
        self._sync()
        results = self.store.query(vec, depth, where=where, where_document=where_document,
                                   include_embeddings=mmr or include_embeddings)
        if mmr and results:
            results = self._mmr(vec, results, k, lambda_mult)
        results = results[:k]
        return results if include_embeddings else strip_private(results)

    def get_page(
        self,
        ids: Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Stored records by ids and/or filters, one page (``limit``/``offset``) in Chroma's order.

        Unlike :meth:`get`, ids are optional (None: every record the filters allow). Scores are 0.0;
        ``include_embeddings`` puts each vector in ``metadata["_embedding"]``.
        """
        if ids is not None:
            _check_sequence(ids, "ids")
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"{name} must be a non-negative integer or None, got {value!r}.")
        if ids is not None and not list(ids):
            return []
        include = ["documents", "metadatas"] + (["embeddings"] if include_embeddings else [])
        res = self.store.page(ids, where, where_document=where_document, limit=limit, offset=offset, include=include)
        docs = res.get("documents") or [""] * len(res["ids"])
        metas = res.get("metadatas") or [{}] * len(res["ids"])
        embs = res.get("embeddings")
        out = []
        for i, cid in enumerate(res["ids"]):
            meta: dict[str, Any] = dict(metas[i] or {})
            if include_embeddings and embs is not None:
                meta["_embedding"] = np.asarray(embs[i], dtype=np.float32)
            out.append(RetrievedChunk(str(cid), docs[i] or "", 0.0, meta))
        return out

    def reset(self) -> int:
        """Delete every record (and its BM25 entry) but keep the collection and its model guard.

        Returns:
            How many records were deleted.
        """
        store = self.store
        with self._writing():
            ids = store.all_ids()
            removed = store.delete(ids=ids) if ids else 0
            self._sparse_delete(ids)
        return removed

    def drop(self) -> None:
        """Delete the collection itself (records, vectors, model guard) and the BM25 index beside it.

        The next use of this pipeline creates a new, empty collection.
        """
        path = self._sparse_path()
        self.store.drop()
        if path is not None and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        self._store = None
        self._sparse = None
        self._sparse_side = None
