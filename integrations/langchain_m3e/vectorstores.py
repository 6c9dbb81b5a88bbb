"""LangChain ``VectorStore`` and ``BaseRetriever`` over :class:`m3e_rag.RAGPipeline`.

Shells only: Documents become texts, metadata and ids for the pipeline, and results come back as
Documents. Storage, the model guard, BM25, fusion and MMR all live in ``m3e_rag``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field

from m3e_rag.errors import InputError
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retriever import SearchMode
from m3e_rag.types import RetrievedChunk

from .embeddings import M3EEmbeddings

__all__ = ["M3EVectorStore", "M3ERetriever"]


def _to_document(chunk: RetrievedChunk) -> Document:
    return Document(page_content=chunk.text, metadata=dict(chunk.metadata), id=chunk.id)


class M3EVectorStore(VectorStore):
    """A LangChain vector store backed by Chroma, holding M3E vectors only.

    Texts are stored as given (split them first, or use :meth:`ingest` to load and chunk files).
    Scores from ``similarity_search_with_score`` are cosine similarities (higher is better);
    ``mode="sparse"`` or ``"hybrid"`` switches to BM25 or fused ranking.

    Args:
        embedding: the :class:`M3EEmbeddings` to use (default: ``$M3E_MODEL`` or m3e-base).
        index: folder of the embedded Chroma database.
        chroma_url: a Chroma server address instead of a folder.
        collection: collection name.
        pipeline: an existing :class:`RAGPipeline` (then the other arguments are ignored).
        **kwargs: further :class:`RAGPipeline` options (``chunk_tokens``, ``sparse``, ``reranker``...).

    Example:
        .. code-block:: python

            from langchain_m3e import M3EEmbeddings, M3EVectorStore

            store = M3EVectorStore(M3EEmbeddings(model_name="m3e-base"), index="./index")
            store.add_texts(["大熊猫主要吃竹子。", "Pandas eat bamboo."])
            docs = store.similarity_search("大熊猫吃什么？", k=1)
    """

    def __init__(
        self,
        embedding: M3EEmbeddings | None = None,
        *,
        index: str | Path = ".m3e_index",
        chroma_url: str | None = None,
        collection: str = "m3e_rag",
        pipeline: RAGPipeline | None = None,
        **kwargs: Any,
    ) -> None:
        if embedding is not None and not isinstance(embedding, M3EEmbeddings):
            raise InputError(
                f"M3EVectorStore takes M3EEmbeddings, got {type(embedding).__name__}; it stores M3E vectors only."
            )
        self._embedding = embedding or M3EEmbeddings()
        self.pipeline = pipeline or RAGPipeline(
            index, chroma_url=chroma_url, collection=collection, encoder=self._embedding.encoder, **kwargs
        )

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings object (M3EEmbeddings)."""
        return self._embedding

    # ----------------------------------------------------------------- writing
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts (one record each); returns their ids."""
        return self.pipeline.add_texts(list(texts), metadatas, ids)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and store Documents; a Document's ``id`` is honoured (``ids=`` overrides it)."""
        ids = kwargs.pop("ids", None) or [doc.id for doc in documents]
        return self.pipeline.add_texts(
            [doc.page_content for doc in documents], [doc.metadata for doc in documents], ids
        )

    def ingest(self, paths: str | Path | Sequence[str | Path], **kwargs: Any) -> Any:
        """Load, chunk (Chinese-aware) and store files or folders; returns the IngestReport."""
        return self.pipeline.ingest(paths, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids (or ``source=``/``where=`` keyword); True when the call succeeded."""
        if ids is None and not kwargs:
            raise InputError("delete() needs ids (or source=/where=); to drop everything, delete the index folder.")
        if ids is not None and not ids:
            return True
        self.pipeline.delete(ids=ids, source=kwargs.get("source"), where=kwargs.get("where") or kwargs.get("filter"))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents stored under these ids (missing ids are left out)."""
        return [_to_document(c) for c in self.pipeline.get(list(ids))]

    # ----------------------------------------------------------------- reading
    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        *,
        mode: SearchMode = "dense",
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Top-``k`` Documents with their scores (cosine similarity for dense mode), best first."""
        results = self.pipeline.search(query, k, where=filter, mode=mode, **kwargs)
        return [(_to_document(r), r.score) for r in results]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        """Top-``k`` Documents, best first (``mode=`` selects dense, sparse or hybrid)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Any:
        # Scores are already cosine similarities: relevance is the score itself.
        return lambda score: score

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any  # noqa: A002
    ) -> list[Document]:
        """Top-``k`` Documents for a query vector computed elsewhere (must be an M3E vector)."""
        import numpy as np

        results = self.pipeline.store.query(np.asarray(embedding, dtype=np.float32), k, where=filter)
        return [_to_document(r) for r in results]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        """Diverse results: maximal marginal relevance over ``fetch_k`` candidates."""
        results = self.pipeline.search(
            query, k, where=filter, mmr=True, fetch_k=fetch_k, lambda_mult=lambda_mult, **kwargs
        )
        return [_to_document(r) for r in results]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M3EVectorStore:
        """Create a store and add texts to it."""
        if not isinstance(embedding, M3EEmbeddings):
            raise InputError(f"M3EVectorStore needs M3EEmbeddings, got {type(embedding).__name__}.")
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def as_m3e_retriever(self, **kwargs: Any) -> M3ERetriever:
        """A :class:`M3ERetriever` over this store (supports hybrid mode and its own ``k``)."""
        return M3ERetriever(vectorstore=self, **kwargs)


class M3ERetriever(BaseRetriever):
    """A LangChain retriever over an :class:`M3EVectorStore`, with dense, sparse or hybrid search.

    ``k`` is set in the constructor and may be overridden per call: ``retriever.invoke(q, k=2)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vectorstore: M3EVectorStore
    """The store to search."""
    k: int = Field(default=4, gt=0)
    """Number of documents to return."""
    mode: SearchMode = "dense"
    """``dense`` (M3E), ``sparse`` (BM25) or ``hybrid`` (reciprocal-rank fusion)."""
    filter: dict[str, Any] | None = None
    """Chroma metadata filter applied to every search."""
    mmr: bool = False
    """Diversify results with maximal marginal relevance."""
    fetch_k: int = Field(default=20, gt=0)
    """Candidates per ranking before fusion, MMR or reranking."""
    score_threshold: float | None = None
    """Drop results scoring below this (see RAGPipeline.search for its meaning per mode)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        options: dict[str, Any] = {
            "k": self.k,
            "where": self.filter,
            "mode": self.mode,
            "mmr": self.mmr,
            "fetch_k": self.fetch_k,
            "score_threshold": self.score_threshold,
        }
        if "filter" in kwargs:
            kwargs["where"] = kwargs.pop("filter")
        unknown = set(kwargs) - set(options)
        if unknown:
            raise InputError(f"Unknown search options {sorted(unknown)}; use {sorted(options)}.")
        options.update(kwargs)
        k = options.pop("k")
        results = self.vectorstore.pipeline.search(query, k, **options)
        return [_to_document(r) for r in results]
