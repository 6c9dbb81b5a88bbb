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
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chunking import Chunker
from .encoder import DEFAULT_BATCH_SIZE, Backend, M3EEncoder
from .errors import InputError
from .loaders import SkippedFile, load_paths, load_texts
from .retriever import (
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
from .sparse import SparseIndex, fingerprint
from .store import DEFAULT_COLLECTION, ChromaStore, StoreRecord, chunk_id
from .types import Chunk, Document, Metadata, RetrievedChunk

__all__ = ["RAGPipeline", "IngestReport", "DEFAULT_CHUNK_TOKENS", "DEFAULT_OVERLAP_TOKENS"]

logger = logging.getLogger(__name__)

#: Default chunk budget in model tokens (the window is 512 with [CLS] and [SEP]).
DEFAULT_CHUNK_TOKENS = 256
#: Default overlap between consecutive chunks, in tokens (whole sentences only).
DEFAULT_OVERLAP_TOKENS = 32
#: Chunks embedded and written per locked step of an ingest (bounds the work lost to a crash).
INGEST_STEP_CHUNKS = 256
_SPARSE_FILE = "sparse_bm25.json"

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
    """

    files_seen: int = 0
    files_skipped: list[SkippedFile] = field(default_factory=list)
    documents: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    texts_embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys named above (skipped files as {path, reason})."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


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
        hybrid_weights: RRF weights for hybrid search.
        reranker: optional cross-encoder applied to the top results of every search.
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
        reranker: Reranker | None = None,
    ) -> None:
        self.index_path = Path(index).expanduser()
        self.chroma_url = chroma_url
        self.collection = collection
        self.encoder = encoder or M3EEncoder(model_name, device=device, backend=backend, batch_size=batch_size)
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.use_sparse = sparse
        self.hybrid_weights = hybrid_weights or HybridWeights()
        self.reranker = reranker
        self._store: ChromaStore | None = None
        self._chunker: Chunker | None = None
        self._sparse: SparseIndex | None = None
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
            )
        return self._store

    def _sparse_path(self) -> Path | None:
        if self.chroma_url is not None:
            return None
        return self.index_path / _SPARSE_FILE

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, loaded and checked against the store (rebuilt from it when stale)."""
        with self._lock:
            if self._sparse is None:
                self._sparse = self._open_sparse()
            return self._sparse

    def _open_sparse(self) -> SparseIndex:
        path = self._sparse_path()
        ids = self.store.all_ids()
        index: SparseIndex | None = None
        if path is not None and path.exists():
            try:
                index = SparseIndex.load(path)
            except Exception as exc:  # unreadable or another format: rebuild, never fail a search for it
                logger.warning("BM25 index at %s is unusable (%s); rebuilding it from the store", path, exc)
        if index is not None and index.fingerprint == fingerprint(ids):
            return index
        if index is not None or ids:
            logger.info("BM25 index is missing or stale; rebuilding it from %d stored chunks", len(ids))
        index = SparseIndex()
        for page_ids, texts in self.store.iter_texts():
            index.upsert(page_ids, texts)
        if path is not None:
            index.save(path)
        return index

    # ---------------------------------------------------------------- ingest
    def ingest(
        self,
        paths: str | Path | Sequence[str | Path] | None = None,
        *,
        texts: Sequence[str] | None = None,
        documents: Sequence[Document] | None = None,
        sources: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Load, chunk, embed and store files, folders, texts or Documents.

        Args:
            paths: files and folders (folders are walked recursively).
            texts: in-memory texts; ``sources`` names them (default: a hash of the text).
            documents: :class:`Document` objects.
            sources: one source name per text.
            metadatas: one metadata dict per text.
            include: glob patterns a file must match (folders only).
            exclude: glob patterns that skip a file (folders only).
            progress: called as ``progress(chunks_done, chunks_total)`` after each step.

        Re-ingesting a source replaces its chunks: unchanged chunks are kept (not re-embedded),
        new ones added, stale ones removed. Sources not mentioned are untouched.
        """
        started = time.perf_counter()
        report = IngestReport()
        docs: list[Document] = []
        if paths is not None:
            path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
            loaded = load_paths(path_list, include=include, exclude=exclude)
            docs.extend(loaded.documents)
            report.files_seen = loaded.files_seen
            report.files_skipped = list(loaded.skipped)
        if texts is not None:
            docs.extend(load_texts(texts, sources=sources, metadatas=metadatas))
        if documents is not None:
            for i, doc in enumerate(documents):
                if not isinstance(doc, Document):
                    raise InputError(f"documents[{i}] is a {type(doc).__name__}, not an m3e_rag.Document.")
            docs.extend(documents)
        if paths is None and texts is None and documents is None:
            raise InputError("ingest() needs paths, texts or documents.")
        report.documents = len(docs)

        by_source = self._chunk_by_source(docs)
        if self.use_sparse and self._sparse is not None:
            with self.store.write_lock():
                # Another process may have written since we loaded the BM25 index: re-check it.
                if self._sparse.fingerprint != fingerprint(self.store.all_ids()):
                    self._sparse = None
        total = sum(len(chunks) for chunks in by_source.values())
        done = 0
        step: list[str] = []
        step_chunks = 0
        for source, chunks in by_source.items():
            step.append(source)
            step_chunks += len(chunks)
            if step_chunks >= INGEST_STEP_CHUNKS:
                self._ingest_step(step, by_source, report)
                done += step_chunks
                step, step_chunks = [], 0
                if progress:
                    progress(done, total)
        if step:
            self._ingest_step(step, by_source, report)
            done += step_chunks
        if progress:
            progress(done, total)
        if self.use_sparse:
            with self.store.write_lock():
                self._save_sparse()
        report.seconds = time.perf_counter() - started
        return report

    def _chunk_by_source(self, docs: Sequence[Document]) -> dict[str, list[tuple[str, Chunk]]]:
        """Chunk every document; group (id, chunk) pairs by source, ids unique within a source."""
        by_source: dict[str, list[tuple[str, Chunk]]] = {}
        seen: dict[str, dict[str, int]] = {}
        for doc in docs:
            chunks = self.chunker.split(doc)
            counts = seen.setdefault(doc.source, {})
            bucket = by_source.setdefault(doc.source, [])
            for chunk in chunks:
                key = chunk.text
                occurrence = counts.get(key, 0)
                counts[key] = occurrence + 1
                bucket.append((chunk_id(doc.source, chunk.text, occurrence), chunk))
        return by_source

    @staticmethod
    def _metadata(chunk: Chunk) -> Metadata:
        meta: Metadata = {k: v for k, v in chunk.metadata.items() if v is not None}
        meta.update(
            source=chunk.source, start=chunk.start, end=chunk.end, chunk_index=chunk.index, n_tokens=chunk.n_tokens
        )
        return meta

    def _ingest_step(
        self, sources: list[str], by_source: Mapping[str, list[tuple[str, Chunk]]], report: IngestReport
    ) -> None:
        store = self.store
        with store.write_lock():
            sparse = self.sparse_index if self.use_sparse else None
            existing = store.ids_by_source(sources)
            new: list[tuple[str, Chunk]] = []
            changed_ids: list[str] = []
            changed_meta: list[Metadata] = []
            stale: list[str] = []
            for source in sources:
                stored = existing.get(source, {})
                current = {cid for cid, _ in by_source[source]}
                for cid, chunk in by_source[source]:
                    if cid in stored:
                        report.chunks_unchanged += 1
                        meta = self._metadata(chunk)
                        if any(stored[cid].get(k) != v for k, v in meta.items()):
                            changed_ids.append(cid)
                            changed_meta.append(meta)
                    else:
                        new.append((cid, chunk))
                stale.extend(cid for cid in stored if cid not in current)
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
            if sparse is not None:
                if new:
                    sparse.upsert([cid for cid, _ in new], [c.text for _, c in new])
                if stale:
                    sparse.delete(stale)

    # ------------------------------------------------------- records as given
    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Store each text as one record, unchunked (what a framework VectorStore is asked to do).

        Args:
            texts: the texts (each should fit the model's window; longer ones follow ``on_overflow``).
            metadatas: one metadata dict (or None) per text, stored as given.
            ids: one id (or None for a new random id) per text; an existing id is overwritten.

        Returns:
            The ids, in the order of ``texts``.
        """
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
        vectors = self.encoder.encode_documents(items)
        metas = [dict(m or {}) for m in (metadatas or [None] * len(items))]
        store = self.store
        with store.write_lock():
            store.upsert([StoreRecord(cid, items[n], vectors[n], metas[n]) for n, cid in enumerate(final_ids)])
            if self.use_sparse:
                self.sparse_index.upsert(final_ids, items)
                self._save_sparse()
        return final_ids

    def get(self, ids: Sequence[str]) -> list[RetrievedChunk]:
        """Fetch stored records by id (missing ids are left out), in the order of ``ids``."""
        found = {r.id: r for r in self.store.get(ids=list(ids))}
        return [found[i] for i in ids if i in found]

    def _save_sparse(self) -> None:
        if self._sparse is not None and (path := self._sparse_path()) is not None:
            self._sparse.save(path)

    # ---------------------------------------------------------------- delete
    def delete(self, *, source: str | Path | None = None, ids: Sequence[str] | None = None,
               where: Mapping[str, Any] | None = None) -> int:
        """Delete chunks by source (a file path as ingested), ids, or a metadata filter.

        Returns:
            How many chunks were deleted.
        """
        if source is None and ids is None and where is None:
            raise InputError("delete() needs source=, ids= or where=.")
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
        with self.store.write_lock():
            doomed = [r.id for r in self.store.get(ids=ids, where=combined, include_text=False)]
            removed = self.store.delete(ids=doomed) if doomed else 0
            if self.use_sparse and doomed:
                self.sparse_index.delete(doomed)
                self._save_sparse()
        return removed

    # ---------------------------------------------------------------- search
    def search(
        self,
        query: str,
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        mode: SearchMode = "dense",
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        score_threshold: float | None = None,
        reranker: Reranker | None = None,
        rerank_top_n: int | None = None,
        query_vector: Sequence[float] | np.ndarray | None = None,
    ) -> list[RetrievedChunk]:
        """Find the ``k`` chunks best matching ``query``.

        Args:
            query: the question or search text.
            k: number of results.
            where: Chroma metadata filter, e.g. ``{"source": "/docs/a.md"}`` or ``{"page": {"$gte": 2}}``.
            mode: ``dense`` (M3E cosine), ``sparse`` (BM25) or ``hybrid`` (reciprocal-rank fusion).
            mmr: diversify with maximal marginal relevance over ``fetch_k`` candidates.
            fetch_k: candidates fetched per ranking before fusion, MMR or reranking.
            lambda_mult: MMR trade-off, 1.0 relevance only, 0.0 diversity only.
            score_threshold: drop results scoring below this. Its meaning follows the mode: cosine
                similarity for dense (M3E scores cluster high, so calibrate it), BM25 score for
                sparse, RRF score for hybrid; with a reranker, the reranker's score.
            reranker: a cross-encoder overriding the pipeline's; reorders the top ``rerank_top_n``.
            rerank_top_n: candidates given to the reranker (default ``max(fetch_k, k)``).
            query_vector: ``encoder.encode_query(query)`` computed beforehand (for instance a row of
                ``encoder.encode_queries(many)``, which batches); the query is then not embedded again.
                ``query`` is still needed for BM25 and reranking.

        Returns:
            Results, best first, each with id, text, score and metadata (source, start, end, ...).
        """
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r}.")
        check_k(k)
        check_k(fetch_k, "fetch_k")
        mode = check_mode(mode)
        reranker = reranker or self.reranker
        depth = max(k, fetch_k) if (mmr or reranker is not None or mode != "dense") else k
        if reranker is not None and rerank_top_n is not None:
            depth = max(depth, check_k(rerank_top_n, "rerank_top_n"))
        store = self.store
        qvec = None
        dense: list[RetrievedChunk] = []
        if mode in ("dense", "hybrid") or mmr:
            qvec = self.encoder.encode_query(query) if query_vector is None else self._check_vector(query_vector)
            dense = store.query(qvec, depth, where=where, include_embeddings=mmr)
        if mode == "dense":
            results = dense
        else:
            sparse_hits = self._sparse_search(query, depth, where)
            if mode == "sparse":
                results = sparse_hits
            else:
                coverage = self.sparse_index.term_coverage(query)
                results = fuse_hybrid(dense, sparse_hits, self.hybrid_weights, coverage)
        if mmr and results:
            results = self._mmr(qvec, results, k, lambda_mult)
        if reranker is not None:
            results = rerank(reranker, query, results[: rerank_top_n or depth])
        if score_threshold is not None:
            results = [r for r in results if r.score >= score_threshold]
        return strip_private(results[:k])

    def _check_vector(self, vector: Sequence[float] | np.ndarray) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32)
        if vec.ndim != 1 or vec.shape[0] != self.encoder.dim:
            raise InputError(
                f"query_vector has shape {vec.shape}, expected ({self.encoder.dim},); pass one row of "
                "encoder.encode_queries(...) from this pipeline's model."
            )
        return vec

    def _sparse_search(self, query: str, depth: int, where: Mapping[str, Any] | None) -> list[RetrievedChunk]:
        index = self.sparse_index
        hits = index.search(query, depth if not where else max(depth * 5, 100))
        if not hits:
            return []
        records = {r.id: r for r in self.store.get(ids=[cid for cid, _ in hits], where=where)}
        out = [RetrievedChunk(cid, records[cid].text, score, records[cid].metadata)
               for cid, score in hits if cid in records]
        return out[:depth]

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
