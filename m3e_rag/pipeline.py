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

The pipeline is a facade: it wires the parts that do the work and adds no algorithm of its own.
:class:`~m3e_rag.ingest.index_handle.IndexHandle` holds the store and its BM25 side,
:class:`~m3e_rag.ingest.ingestor.Ingestor` runs ingests, :class:`~m3e_rag.ingest.records.Records`
stores, reads back and deletes records as given, and :class:`~m3e_rag.retrieve.searcher.Searcher`
runs searches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np

from m3e_rag.encode.encoder import DEFAULT_BATCH_SIZE, Backend, M3EEncoder
from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.index.chroma import DEFAULT_COLLECTION, ChromaStore
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.ingest.adopt import AdoptProgress, AdoptReport, adopt_index
from m3e_rag.ingest.chunking import Chunker
from m3e_rag.ingest.index_handle import IndexHandle
from m3e_rag.ingest.ingestor import Ingestor, IngestReport, ProgressCallback
from m3e_rag.ingest.loaders import DEFAULT_MAX_FILE_BYTES
from m3e_rag.ingest.records import Records
from m3e_rag.ingest.sentences import sentence_starts
from m3e_rag.retrieve.context import DEFAULT_CONTEXT_TOKENS, ContextOptions, context_for_query
from m3e_rag.retrieve.fusion import HybridWeights
from m3e_rag.retrieve.modes import SearchMode
from m3e_rag.retrieve.rerank import Reranker, RerankerLike, load_reranker
from m3e_rag.retrieve.searcher import Searcher
from m3e_rag.types import Context, Document, RetrievedChunk

if TYPE_CHECKING:
    from typing_extensions import Unpack  # PEP 692 typed **options (typing.Unpack from Python 3.11)

__all__ = ["RAGPipeline", "IngestReport", "DEFAULT_CHUNK_TOKENS", "DEFAULT_OVERLAP_TOKENS"]

#: Default chunk budget in model tokens (the window is 512 with [CLS] and [SEP]).
DEFAULT_CHUNK_TOKENS = 256
#: Default overlap between consecutive chunks, in tokens (whole sentences only).
DEFAULT_OVERLAP_TOKENS = 32

T = TypeVar("T")


class _OnPart(Generic[T]):
    """A pipeline attribute kept by one of its parts: ``rag.name`` reads and writes ``rag.<part>.name``.

    The parts read their settings when they use them, so setting one on the pipeline still takes effect.
    """

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, objtype: type | None = None) -> T:
        if obj is None:
            return cast(T, self)  # on the class: the descriptor itself (for introspection)
        return cast(T, getattr(getattr(obj, self.part), self.name))

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class _RecordDoors:
    """The record-level doors of :class:`RAGPipeline`: store, read, delete and clear records as given.

    What framework VectorStores are asked to do, one record per text, over
    :class:`~m3e_rag.ingest.records.Records`; a base class of the pipeline so each class keeps one job.
    """

    _records: Records
    _index: IndexHandle

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
        return self._records.add_texts(texts, metadatas, ids, embeddings)

    def get(self, ids: Sequence[str]) -> list[RetrievedChunk]:
        """Fetch stored records by id (missing ids are left out), in the order of ``ids``."""
        return self._records.get(ids)

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
        return self._records.get_page(ids, where=where, where_document=where_document, limit=limit, offset=offset,
                                      include_embeddings=include_embeddings)

    def delete(self, *, source: str | Path | None = None, ids: Sequence[str] | None = None,
               where: Mapping[str, Any] | None = None, where_document: Mapping[str, Any] | None = None) -> int:
        """Delete chunks by source (a file path as ingested), ids, a metadata filter or a document filter.

        Several given together must all match. An empty filter (``where={}``) is refused rather than
        read as "everything".

        Returns:
            How many chunks were deleted.
        """
        return self._records.delete(source=source, ids=ids, where=where, where_document=where_document)

    def reset(self) -> int:
        """Delete every record (and its BM25 entry) but keep the collection and its model guard.

        Returns:
            How many records were deleted.
        """
        return self._records.reset()

    def drop(self) -> None:
        """Delete the collection itself (records, vectors, model guard) and the BM25 index beside it.

        The next use of this pipeline creates a new, empty collection.
        """
        self._index.drop()

    def adopt(self, copy_to: str | None = None, progress: AdoptProgress | None = None) -> AdoptReport:
        """Take over this collection when langchain_chroma or LlamaIndex's ChromaVectorStore wrote it.

        The stored vectors are checked against this pipeline's model (dimension, and a sample embedded
        again) and the model is recorded; documents, ids and vectors are not rewritten. A collection in
        l2 or ip space is refused unless ``copy_to`` names a new cosine collection to copy it into
        (the original untouched; open the copy by that name). See :mod:`m3e_rag.ingest.adopt`.
        """
        return adopt_index(self._index, copy_to=copy_to, progress=progress)


class RAGPipeline(_RecordDoors):
    """Load, chunk, embed, store and retrieve, over an embedded Chroma folder or a Chroma server.

    Args:
        index: folder of the embedded Chroma database (created if missing). Also where the BM25
            index is kept. Ignored for Chroma itself when ``chroma_url`` is given.
        model_name: M3E alias, hub id or local folder; None reads ``$M3E_MODEL``, then ``m3e-base``.
        chroma_url: address of a Chroma server (``http://127.0.0.1:8000``) instead of a folder.
        collection: Chroma collection name.
        encoder: an existing :class:`M3EEncoder` to use (then model options here are ignored), or any
            :class:`~m3e_rag.encode.protocol.TextEncoder`, e.g. an
            :class:`~m3e_rag.encode.external.ExternalEncoder` over another embedding function (the index
            records its identity and refuses another later, as for models).
        chunk_tokens: chunk budget in model tokens (<= 510 minus the document prompt).
        overlap_tokens: overlap between consecutive chunks, in tokens.
        device: torch device for the model.
        backend: ``torch``, ``onnx``, ``onnx-int8`` or ``onnx-int8-fast``.
        batch_size: texts per forward pass.
        sparse: keep a BM25 index beside the store (needed for ``mode="sparse"``/``"hybrid"``).
        hybrid_weights: how hybrid search fuses dense and BM25 candidates (default: z-score fusion,
            see :class:`~m3e_rag.retrieve.fusion.HybridWeights`).
        reranker: optional second stage applied to the top results of every search: a reranker name
            (``"bge-reranker-base"``), hub id or CrossEncoder folder (loaded on first use), a callable
            ``fn(query, texts) -> scores``, or an object with ``predict`` (see :mod:`m3e_rag.retrieve.rerank`).
    """

    index_path = _OnPart[Path]("_index")
    chroma_url = _OnPart[str | None]("_index")
    collection = _OnPart[str]("_index")
    chunk_tokens = _OnPart[int]("_index")
    overlap_tokens = _OnPart[int]("_index")
    use_sparse = _OnPart[bool]("_index")
    hybrid_weights = _OnPart[HybridWeights]("_searcher")
    reranker = _OnPart[Reranker | None]("_searcher")

    def __init__(
        self,
        index: str | Path = ".m3e_index",
        *,
        model_name: str | None = None,
        chroma_url: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        encoder: TextEncoder | None = None,
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
        path = Path(index).expanduser()
        self.encoder: TextEncoder = encoder or M3EEncoder(
            model_name, device=device, backend=backend, batch_size=batch_size
        )
        weights = hybrid_weights or HybridWeights()
        default_reranker = load_reranker(reranker) if reranker is not None else None
        self._index = IndexHandle(
            path, chroma_url, collection, self.encoder, chunk_tokens, overlap_tokens, sparse,
            client=client, settings=client_settings, headers=headers, collection_metadata=collection_metadata,
        )
        self._searcher = Searcher(self._index, self.encoder, weights, default_reranker)
        self._ingestor = Ingestor(self._index, self.encoder)
        self._records = Records(self._index, self.encoder)

    def __repr__(self) -> str:
        where = self.chroma_url or str(self.index_path)
        return f"RAGPipeline(index={where!r}, model={self.encoder.model_name!r}, collection={self.collection!r})"

    @property
    def chunker(self) -> Chunker:
        """The chunker, budgeted with the model's own tokenizer (loads the model on first use)."""
        return self._index.chunker

    @property
    def store(self) -> ChromaStore:
        """The Chroma store, opened (and its model checked) on first use."""
        return self._index.store

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, loaded and checked against the store (caught up from it when stale)."""
        return self._index.sparse_index

    @property
    def has_learned(self) -> bool:
        """The index keeps the model's learned-sparse output beside BM25 (its model ships a sparse head: BGE-M3)."""
        return self._index.has_learned

    def _save_sparse(self) -> None:
        """Fold the BM25 log into a new snapshot if it has grown past its share (writes are logged as made)."""
        self._index.save_sparse()

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
        confine_to: Sequence[str | Path] | None = None,
        sync: bool = False,
        text_field: str = "text", text_column: str = "text",
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
                ``None`` for no limit), and so are .docx files that expand to more. Large text files
                stream: memory does not grow with them.
            confine_to: folders every file must lie in, checked on the opened file (a path swapped
                for a link out of them after any earlier check is skipped unread and reported).
            sync: also remove the chunks of files gone from the folders in ``paths`` (only files confirmed gone;
                see :mod:`m3e_rag.ingest.sync`). Default False: an ingest deletes nothing it was not asked to.
            text_field: the key holding the text in JSON and JSONL records (CLI: ``--text-field``).
            text_column: the column holding the text in CSV/TSV files (CLI: ``--text-column``).

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
        return self._ingestor.ingest(paths, texts=texts, documents=documents, sources=sources, metadatas=metadatas,
                                     include=include, exclude=exclude, progress=progress,
                                     follow_symlinks=follow_symlinks, max_file_bytes=max_file_bytes,
                                     confine_to=confine_to, sync=sync, text_field=text_field, text_column=text_column)

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
        sparse: str = "auto",
        colbert: bool = False,
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
                :class:`~m3e_rag.retrieve.fusion.HybridWeights`). None (the default) is ``hybrid`` when the
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
            sparse: the sparse list of ``mode="sparse"`` / ``"hybrid"``: ``"auto"`` (the model's own learned-sparse
                output when it has a sparse head, as BGE-M3 does, else BM25), ``"bm25"`` or ``"learned"``
                (:mod:`m3e_rag.retrieve.learned`).
            colbert: rescore the fused candidates with the model's ColBERT, dense and lexical scores combined as
                FlagEmbedding does (needs a model with both heads; :mod:`m3e_rag.retrieve.colbert`).

        Returns:
            Results, best first, each with id, text, score and metadata (source, start, end, ...).
        """
        return self._searcher.search(query, k, where=where, where_document=where_document, mode=mode, mmr=mmr,
                                     fetch_k=fetch_k, lambda_mult=lambda_mult, score_threshold=score_threshold,
                                     reranker=reranker, rerank_top_n=rerank_top_n, query_vector=query_vector,
                                     hybrid_weights=hybrid_weights, sparse=sparse, colbert=colbert)

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
        return self._searcher.search_by_vector(vector, k, where=where, where_document=where_document, mmr=mmr,
                                               fetch_k=fetch_k, lambda_mult=lambda_mult,
                                               include_embeddings=include_embeddings)

    def stats(self) -> dict[str, Any]:
        """Model, dimension, chunk and source counts, and where the index lives."""
        return self._index.stats()

    def context(
        self, query: str, budget_tokens: int = DEFAULT_CONTEXT_TOKENS, **options: Unpack[ContextOptions]
    ) -> Context:
        """The best hits as merged, cited pieces within ``budget_tokens`` (:mod:`m3e_rag.retrieve.context`)."""
        return context_for_query(self._searcher, self._index, self.encoder, query, budget_tokens, sentence_starts,
                                 **options)
