"""The read side of the LangChain store: ``get``, similarity and MMR searches, with Chroma's score conventions.

:class:`~langchain_m3e.M3EVectorStore` inherits these methods; they are kept apart from writing and
construction because they hold one job: turn LangChain's search calls into :meth:`RAGPipeline.search`
/ ``search_by_vector`` / ``get_page`` calls and the results into Documents, with the distances and
relevances ``langchain_chroma.Chroma`` returns (the conventions are listed on M3EVectorStore).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore

from m3e_rag.errors import InputError, StoreError
from m3e_rag.index.chroma import chroma_objects
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retrieve.relevance import chroma_distances
from m3e_rag.retrieve.searcher import check_threshold
from m3e_rag.types import RetrievedChunk

from ._args import SEARCH_OPTIONS, one_of
from ._convert import to_document
from .embeddings import check_kwargs

__all__ = ["StoreReads"]


class StoreReads(VectorStore):
    """Reading and searching an m3e-rag pipeline as a LangChain ``VectorStore`` (base of M3EVectorStore)."""

    pipeline: RAGPipeline
    _deleted: bool
    override_relevance_score_fn: Callable[[float], float] | None

    @property
    def _pipe(self) -> RAGPipeline:
        if self._deleted:
            raise StoreError(
                "The collection was deleted by delete_collection(); call reset_collection() to create it again."
            )
        return self.pipeline

    # ------------------------------------------------- Chroma's own objects, under langchain_chroma's names
    @property
    def _client(self) -> Any:
        """Chroma's client (``langchain_chroma.Chroma._client``); reads are safe, see :func:`chroma_objects`."""
        dropped = getattr(self, "_dropped_client", None)
        return dropped if self._deleted and dropped is not None else chroma_objects(self.pipeline.store)[0]

    @property
    def _chroma_collection(self) -> Any:
        """Chroma's collection, None after :meth:`delete_collection` (as in ``langchain_chroma.Chroma``)."""
        return None if self._deleted else chroma_objects(self.pipeline.store)[1]

    @property
    def _collection(self) -> Any:
        """Chroma's collection (``db._collection.count()``); writing through it bypasses BM25 and the model guard."""
        if self._deleted:
            raise StoreError(
                "Chroma collection not initialized. Use `reset_collection` to re-create and initialize the collection."
            )
        return chroma_objects(self.pipeline.store)[1]

    # ----------------------------------------------------------------- reading
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents stored under these ids (missing ids are left out)."""
        return [to_document(c) for c in self._pipe.get(list(ids))]

    def get(
        self,
        ids: str | list[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        where_document: dict[str, Any] | None = None,
        include: list[str] | None = None,
    ) -> dict[str, Any]:
        """Stored records in Chroma's ``get`` shape: ``{"ids", "documents", "metadatas", "embeddings", ...}``.

        ``include`` picks among ``documents``, ``metadatas`` and ``embeddings`` (default: the first two);
        keys not included are None, as in Chroma.
        """
        wanted = ["documents", "metadatas"] if include is None else list(include)
        bad = sorted(set(wanted) - {"documents", "metadatas", "embeddings"})
        if bad:
            raise InputError(f"get(include=...) got {bad}; accepted: documents, metadatas, embeddings.")
        id_list = [ids] if isinstance(ids, str) else ids
        rows = self._pipe.get_page(id_list, where=where, where_document=where_document, limit=limit,
                                   offset=offset, include_embeddings="embeddings" in wanted)
        return {
            "ids": [r.id for r in rows],
            "documents": [r.text for r in rows] if "documents" in wanted else None,
            "metadatas": [{k: v for k, v in r.metadata.items() if k != "_embedding"} or None for r in rows]
            if "metadatas" in wanted else None,
            "embeddings": [r.metadata["_embedding"] for r in rows] if "embeddings" in wanted else None,
            "uris": None,
            "data": None,
            "included": wanted,
        }

    def _search(self, query: str, k: int, filter: dict[str, Any] | None,  # noqa: A002 - LangChain's name
                where_document: dict[str, Any] | None, kwargs: dict[str, Any], what: str) -> list[RetrievedChunk]:
        check_kwargs(f"M3EVectorStore.{what}", kwargs, (*SEARCH_OPTIONS, "where"))
        where = one_of("filter", filter, "where", kwargs.pop("where", None))
        kwargs.setdefault("mode", "dense")  # a VectorStore's similarity search is vector similarity unless asked
        return self._pipe.search(query, k, where=where, where_document=where_document, **kwargs)

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Top-``k`` Documents with Chroma-style DISTANCES (lower is better), best first.

        Dense: ``1 - cosine`` exactly as Chroma; sparse/hybrid: ``1 - relevance`` (see the class doc).
        Keywords: ``mode``, ``fetch_k``, ``mmr``, ``lambda_mult``, ``reranker``, ``rerank_top_n``.
        """
        mode = kwargs.get("mode", "dense")
        results = self._search(query, k, filter, where_document, dict(kwargs), "similarity_search_with_score")
        distances = chroma_distances(results, mode, self._pipe.hybrid_weights)
        return [(to_document(r), d) for r, d in zip(results, distances, strict=True)]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Top-``k`` Documents, best first (``mode=`` selects dense, sparse or hybrid)."""
        results = self._search(query, k, filter, where_document, dict(kwargs), "similarity_search")
        return [to_document(r) for r in results]

    def similarity_search_with_vectors(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, np.ndarray]]:
        """Top-``k`` Documents with their stored vectors, best first: ``langchain_chroma.Chroma``'s shape.

        The ranking is :meth:`similarity_search`'s (same keywords, any ``mode``); each vector is the
        record's stored embedding as a float32 array.
        """
        results = self._search(query, k, filter, where_document, dict(kwargs), "similarity_search_with_vectors")
        rows = self._pipe.get_page([r.id for r in results], include_embeddings=True)
        stored = {r.id: r.metadata["_embedding"] for r in rows}
        return [(to_document(r), stored[r.id]) for r in results if r.id in stored]

    def similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """LangChain's method (relevance in [0, 1], best first); ``score_threshold`` must be a finite number.

        LangChain compares each relevance with the threshold itself: a NaN threshold would silently
        return nothing, so it is refused by name first.
        """
        if kwargs.get("score_threshold") is not None:
            check_threshold(kwargs["score_threshold"])
        return super().similarity_search_with_relevance_scores(query, k, **kwargs)

    async def asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_relevance_scores` (the same threshold check)."""
        if kwargs.get("score_threshold") is not None:
            check_threshold(kwargs["score_threshold"])
        return await super().asimilarity_search_with_relevance_scores(query, k, **kwargs)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance from the distances above: ``1 - distance`` clamped to [0, 1] (or ``relevance_score_fn``)."""
        if self.override_relevance_score_fn is not None:
            return self.override_relevance_score_fn
        return lambda distance: min(1.0, max(0.0, 1.0 - distance))

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Top-``k`` Documents for a query vector computed elsewhere (must be this index's M3E vector)."""
        return [doc for doc, _ in self.similarity_search_by_vector_with_relevance_scores(
            embedding, k, filter, where_document, **kwargs)]

    def similarity_search_by_vector_with_relevance_scores(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Top-``k`` Documents for a query vector, with cosine DISTANCES (lower is better), as Chroma returns."""
        check_kwargs("M3EVectorStore.similarity_search_by_vector", kwargs, ("where",))
        where = one_of("filter", filter, "where", kwargs.get("where"))
        results = self._pipe.search_by_vector(embedding, k, where=where, where_document=where_document)
        return [(to_document(r), 1.0 - r.score) for r in results]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Diverse results: maximal marginal relevance over ``fetch_k`` candidates (any ``mode``)."""
        options = {**kwargs, "mmr": True, "fetch_k": fetch_k, "lambda_mult": lambda_mult}
        results = self._search(query, k, filter, where_document, options, "max_marginal_relevance_search")
        return [to_document(r) for r in results]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR over ``fetch_k`` candidates nearest to a query vector."""
        check_kwargs("M3EVectorStore.max_marginal_relevance_search_by_vector", kwargs, ("where",))
        where = one_of("filter", filter, "where", kwargs.get("where"))
        results = self._pipe.search_by_vector(embedding, k, where=where, where_document=where_document, mmr=True,
                                              fetch_k=fetch_k, lambda_mult=lambda_mult)
        return [to_document(r) for r in results]

    # ------------------------------------------------------------------ async twins not in LangChain's base
    async def aget(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Async :meth:`get`."""
        return await run_in_executor(None, self.get, *args, **kwargs)

    async def asimilarity_search_by_vector_with_relevance_scores(
        self, *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_by_vector_with_relevance_scores`."""
        return await run_in_executor(None, self.similarity_search_by_vector_with_relevance_scores, *args, **kwargs)
