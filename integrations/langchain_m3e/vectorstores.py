"""LangChain ``VectorStore`` and ``BaseRetriever`` over :class:`m3e_rag.RAGPipeline`.

Shells only: Documents become texts, metadata and ids for the pipeline, and results come back as
Documents. Storage, the model guard, BM25, fusion, MMR and the score mapping all live in ``m3e_rag``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from pydantic import ConfigDict, Field

from m3e_rag.errors import InputError, StoreError
from m3e_rag.index.chroma import DEFAULT_COLLECTION
from m3e_rag.ingest.documents import coerce_documents
from m3e_rag.pipeline import IngestReport, RAGPipeline
from m3e_rag.retrieve.modes import SearchMode
from m3e_rag.retrieve.relevance import chroma_distances
from m3e_rag.types import Document as M3EDocument
from m3e_rag.types import RetrievedChunk

from .embeddings import M3EEmbeddings, check_kwargs

__all__ = ["M3EVectorStore", "M3ERetriever", "to_m3e_documents"]

#: Extra keywords every text search accepts (besides k, filter, where_document).
_SEARCH_OPTIONS = ("mode", "fetch_k", "lambda_mult", "mmr", "reranker", "rerank_top_n")
#: RAGPipeline options a store may be built with (the rest are set from Chroma's names here).
_PIPELINE_OPTIONS = tuple(
    name for name in inspect.signature(RAGPipeline.__init__).parameters
    if name not in ("self", "index", "chroma_url", "collection", "encoder", "client", "client_settings", "headers",
                    "collection_metadata", "model_name", "device", "backend", "batch_size")
)
#: Chroma constructor arguments m3e-rag cannot honour, with the reason.
_REFUSED_CHROMA = {
    "chroma_cloud_api_key": "Chroma Cloud is not supported yet; run `chroma run` and pass host=/port=",
    "tenant": "only Chroma's default tenant is supported",
    "database": "only Chroma's default database is supported",
    "collection_configuration": "the collection is always created in cosine space by m3e-rag's model guard",
    "create_collection_if_not_exists": "the collection is always created when missing (with its model guard)",
}


def _to_document(chunk: RetrievedChunk) -> Document:
    return Document(page_content=chunk.text, metadata=dict(chunk.metadata), id=chunk.id)


def to_m3e_documents(documents: Sequence[Any]) -> list[M3EDocument]:
    """LangChain Documents -> m3e_rag Documents for ``ingest`` (see :func:`m3e_rag.ingest.documents.coerce_documents`).

    The source is ``metadata["source"]``, else the Document's ``id``, else a hash of its text, so
    re-ingesting the same Documents replaces their chunks instead of duplicating them.
    """
    return coerce_documents(documents)


class M3EVectorStore(VectorStore):
    """A LangChain vector store backed by Chroma holding M3E vectors only: a drop-in for ``langchain_chroma.Chroma``.

    Constructor (Chroma's names; exactly one location, or none for an in-memory store like Chroma):

    - ``collection_name``, ``embedding_function`` (an :class:`M3EEmbeddings`), ``persist_directory``
      (also ``index=``), ``host``/``port``/``ssl``/``headers`` (a Chroma server, with auth headers;
      also ``chroma_url=``), ``client`` (a ready chromadb client), ``client_settings``,
      ``collection_metadata``, ``relevance_score_fn``;
    - m3e-rag's own: ``pipeline=`` (an existing :class:`RAGPipeline`) and RAGPipeline options
      (``chunk_tokens``, ``overlap_tokens``, ``sparse``, ``hybrid_weights``, ``reranker``).

    Score conventions, side by side with ``langchain_chroma.Chroma`` on a cosine collection:

    - ``similarity_search_with_score``: Chroma returns a distance, lower is better (``1 - cosine``).
      Here the same: dense ``1 - cosine`` (in [0, 2], the very number Chroma returns); sparse and
      hybrid ``1 - relevance`` (in [0, 1]).
    - ``similarity_search_by_vector_with_relevance_scores``: Chroma returns a distance despite the
      name. Here the same: ``1 - cosine``.
    - ``similarity_search_with_relevance_scores``: Chroma returns ``1 - distance`` (negative for
      opposite vectors). Here a relevance in [0, 1] in every mode: dense ``max(0, cosine)``, sparse
      BM25 score / the best BM25 score returned, hybrid the fusion weights' mean of those two
      (non-increasing down the list), see :mod:`m3e_rag.retrieve.relevance`.
    - ``as_retriever(search_type="similarity_score_threshold")``: a threshold on that relevance, as in
      Chroma (here always in [0, 1]).

    ``mode="dense"|"sparse"|"hybrid"`` (and ``where_document``) work on every search method; see
    :mod:`m3e_rag.retrieve.relevance` for how each mode maps to relevance. Differences from Chroma, on purpose:
    metadatas must be one per text (Chroma pads a short list with ``{}``); nested metadata raises
    :class:`~m3e_rag.errors.InputError` naming the key (as Chroma raises); only M3EEmbeddings are accepted.

    Example:
        .. code-block:: python

            from langchain_m3e import M3EEmbeddings, M3EVectorStore

            emb = M3EEmbeddings(model_name="moka-ai/m3e-base", encode_kwargs={"normalize_embeddings": True})
            store = M3EVectorStore.from_documents(docs, emb, persist_directory="./db", collection_name="kb")
            docs = store.similarity_search("大熊猫吃什么？", k=2, filter={"topic": "panda"}, mode="hybrid")
    """

    def __init__(
        self,
        collection_name: str | M3EEmbeddings = DEFAULT_COLLECTION,
        embedding_function: M3EEmbeddings | None = None,
        persist_directory: str | Path | None = None,
        host: str | None = None,
        port: int | None = None,
        headers: dict[str, str] | None = None,
        client_settings: Any = None,
        collection_metadata: dict[str, Any] | None = None,
        client: Any = None,
        relevance_score_fn: Callable[[float], float] | None = None,
        *,
        ssl: bool = False,
        embedding: M3EEmbeddings | None = None,
        index: str | Path | None = None,
        chroma_url: str | None = None,
        collection: str | None = None,
        pipeline: RAGPipeline | None = None,
        **kwargs: Any,
    ) -> None:
        for name, reason in _REFUSED_CHROMA.items():
            value = kwargs.pop(name, None)
            harmless = value is None or (name == "create_collection_if_not_exists" and value is True)
            if not harmless:
                raise InputError(f"M3EVectorStore: {name}={value!r} is not supported: {reason}.")
        check_kwargs("M3EVectorStore", kwargs, _PIPELINE_OPTIONS + tuple(_REFUSED_CHROMA) + (
            "collection_name", "embedding_function", "persist_directory", "host", "port", "headers",
            "client_settings", "collection_metadata", "client", "relevance_score_fn", "ssl", "embedding", "index",
            "chroma_url", "collection", "pipeline"))
        if isinstance(collection_name, Embeddings):  # the pre-Chroma signature: M3EVectorStore(embeddings, ...)
            embedding, collection_name = collection_name, DEFAULT_COLLECTION
        emb = _one("embedding_function", embedding_function, "embedding", embedding)
        name = _one("collection_name", None if collection_name == DEFAULT_COLLECTION else collection_name,
                    "collection", collection) or DEFAULT_COLLECTION
        folder = _one("persist_directory", persist_directory, "index", index)
        if host is not None and chroma_url is not None:
            raise InputError("M3EVectorStore: give host= (with port/ssl) or chroma_url=, not both.")
        if host is None and (port is not None or ssl or headers):
            raise InputError("M3EVectorStore: port=, ssl= and headers= are for a Chroma server; give host= too.")
        url = chroma_url or (f"{'https' if ssl else 'http'}://{host}:{port or 8000}" if host else None)
        given = [n for n, v in (("persist_directory", folder), ("host", url), ("client", client)) if v is not None]
        if len(given) > 1:
            raise InputError(f"M3EVectorStore: give only one of persist_directory, host and client; got {given}.")
        if emb is not None and not isinstance(emb, M3EEmbeddings):
            raise InputError(
                f"M3EVectorStore takes M3EEmbeddings, got {type(emb).__name__}; it stores M3E vectors only."
            )
        self._embedding: M3EEmbeddings = emb or M3EEmbeddings()
        self.override_relevance_score_fn = relevance_score_fn
        self._deleted = False
        if pipeline is not None:
            if given or kwargs or client_settings is not None or collection_metadata is not None:
                raise InputError("M3EVectorStore: with pipeline=, give no other location or pipeline option.")
            self.pipeline = pipeline
            return
        if not given:  # like Chroma: no location means an in-memory (ephemeral) client
            import chromadb
            from chromadb.config import Settings

            client = chromadb.EphemeralClient(settings=client_settings or Settings(anonymized_telemetry=False))
            client_settings = None
        self.pipeline = RAGPipeline(
            folder if folder is not None else ".m3e_index",
            chroma_url=url,
            collection=name,
            encoder=self._embedding.encoder,
            client=client,
            client_settings=client_settings,
            headers=headers,
            collection_metadata=collection_metadata,
            **kwargs,
        )

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings object (M3EEmbeddings)."""
        return self._embedding

    @property
    def _pipe(self) -> RAGPipeline:
        if self._deleted:
            raise StoreError(
                "The collection was deleted by delete_collection(); call reset_collection() to create it again."
            )
        return self.pipeline

    # ----------------------------------------------------------------- writing
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts (one record each, unchunked); returns their ids."""
        check_kwargs("M3EVectorStore.add_texts", kwargs, ())
        return self._pipe.add_texts(list(texts), metadatas, ids)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and store Documents; a Document's ``id`` is honoured (``ids=`` overrides it)."""
        check_kwargs("M3EVectorStore.add_documents", kwargs, ("ids",))
        ids = kwargs.get("ids") or [doc.id for doc in documents]
        return self._pipe.add_texts([doc.page_content for doc in documents], [doc.metadata for doc in documents], ids)

    def update_document(self, document_id: str, document: Document) -> None:
        """Replace one stored record (text, vector and metadata) by id."""
        self.update_documents([document_id], [document])

    def update_documents(self, ids: list[str], documents: list[Document]) -> None:
        """Replace stored records by id: each text is embedded again and its metadata replaced."""
        if len(ids) != len(documents):
            raise InputError(f"Got {len(ids)} ids for {len(documents)} documents; give one id per document.")
        self._pipe.add_texts([d.page_content for d in documents], [d.metadata for d in documents], ids)

    def ingest(
        self,
        paths: str | Path | Sequence[str | Path] | None = None,
        *,
        documents: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> IngestReport:
        """Load, chunk (Chinese-aware) and store files, folders or Documents; returns the IngestReport.

        ``documents`` may be LangChain Documents (source: ``metadata["source"]``, else ``id``) or
        m3e_rag Documents; other keywords are :meth:`RAGPipeline.ingest`'s.
        """
        docs = to_m3e_documents(documents) if documents is not None else None
        return self._pipe.ingest(paths, documents=docs, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids and/or ``where=``/``filter=``, ``where_document=``, ``source=``; True when it succeeded."""
        check_kwargs("M3EVectorStore.delete", kwargs, ("where", "filter", "where_document", "source"))
        where = _one("where", kwargs.get("where"), "filter", kwargs.get("filter"))
        if ids is None and not any(kwargs.values()):
            raise InputError(
                "delete() needs ids or where=/where_document=/source=; to drop everything, call delete_collection()."
            )
        if ids is not None and not ids:
            return True
        self._pipe.delete(ids=ids, source=kwargs.get("source"), where=where,
                          where_document=kwargs.get("where_document"))
        return True

    def delete_collection(self) -> None:
        """Delete the collection (records, vectors, BM25). Later calls raise until :meth:`reset_collection`."""
        self._pipe.drop()
        self._deleted = True

    def reset_collection(self) -> None:
        """Empty the collection (or create it again after :meth:`delete_collection`); the model guard stays."""
        if self._deleted:
            self._deleted = False
            self.pipeline.store  # noqa: B018 - creates the collection again, with its model guard
            return
        self.pipeline.reset()

    # ----------------------------------------------------------------- reading
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents stored under these ids (missing ids are left out)."""
        return [_to_document(c) for c in self._pipe.get(list(ids))]

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
        check_kwargs(f"M3EVectorStore.{what}", kwargs, (*_SEARCH_OPTIONS, "where"))
        where = _one("filter", filter, "where", kwargs.pop("where", None))
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
        return [(_to_document(r), d) for r, d in zip(results, distances, strict=True)]

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
        return [_to_document(r) for r in results]

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
        where = _one("filter", filter, "where", kwargs.get("where"))
        results = self._pipe.search_by_vector(embedding, k, where=where, where_document=where_document)
        return [(_to_document(r), 1.0 - r.score) for r in results]

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
        return [_to_document(r) for r in results]

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
        where = _one("filter", filter, "where", kwargs.get("where"))
        results = self._pipe.search_by_vector(embedding, k, where=where, where_document=where_document, mmr=True,
                                              fetch_k=fetch_k, lambda_mult=lambda_mult)
        return [_to_document(r) for r in results]

    # ------------------------------------------------------------------ async twins not in LangChain's base
    async def aget(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Async :meth:`get`."""
        return await run_in_executor(None, self.get, *args, **kwargs)

    async def aupdate_document(self, document_id: str, document: Document) -> None:
        """Async :meth:`update_document`."""
        await run_in_executor(None, self.update_document, document_id, document)

    async def aupdate_documents(self, ids: list[str], documents: list[Document]) -> None:
        """Async :meth:`update_documents`."""
        await run_in_executor(None, self.update_documents, ids, documents)

    async def adelete_collection(self) -> None:
        """Async :meth:`delete_collection`."""
        await run_in_executor(None, self.delete_collection)

    async def areset_collection(self) -> None:
        """Async :meth:`reset_collection`."""
        await run_in_executor(None, self.reset_collection)

    async def asimilarity_search_by_vector_with_relevance_scores(
        self, *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_by_vector_with_relevance_scores`."""
        return await run_in_executor(None, self.similarity_search_by_vector_with_relevance_scores, *args, **kwargs)

    async def aingest(self, *args: Any, **kwargs: Any) -> IngestReport:
        """Async :meth:`ingest`."""
        return await run_in_executor(None, self.ingest, *args, **kwargs)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> M3EVectorStore:
        """Create a store (Chroma's keywords: ``collection_name``, ``persist_directory``, ``client``...), add texts."""
        if embedding is not None and not isinstance(embedding, M3EEmbeddings):
            raise InputError(f"M3EVectorStore needs M3EEmbeddings, got {type(embedding).__name__}.")
        function = kwargs.pop("embedding_function", None)
        if embedding is not None and function is not None and function is not embedding:
            raise InputError("M3EVectorStore.from_texts: give embedding or embedding_function, not both.")
        store = cls(embedding_function=embedding or function, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """LangChain's retriever (``search_type`` similarity | mmr | similarity_score_threshold).

        ``search_kwargs`` go to the search methods (``k``, ``filter``, ``where_document``, ``mode``,
        ``fetch_k``, ``lambda_mult``, ``score_threshold``); unknown keys raise now, not at the first query.
        Search keywords given directly (``as_retriever(k=2)``) are moved into ``search_kwargs``
        (LangChain's retriever would silently ignore them).
        """
        accepted = ("search_type", "search_kwargs", "tags", "metadata", "name")
        search_keys = ("k", "filter", "where", "where_document", *_SEARCH_OPTIONS, "score_threshold")
        direct = {key: kwargs.pop(key) for key in list(kwargs) if key in search_keys}
        check_kwargs("M3EVectorStore.as_retriever", kwargs, accepted + search_keys)
        search_kwargs = dict(kwargs.pop("search_kwargs", None) or {})
        for key, value in direct.items():
            if key in search_kwargs and search_kwargs[key] != value:
                raise InputError(f"as_retriever: {key}={value!r} conflicts with search_kwargs[{key!r}].")
            search_kwargs[key] = value
        search_type = kwargs.get("search_type", "similarity")
        allowed = {"k", "filter", "where", "where_document", "mode", "fetch_k", "reranker", "rerank_top_n"}
        if search_type == "mmr":
            allowed |= {"lambda_mult"}
        elif search_type == "similarity_score_threshold":
            allowed |= {"score_threshold"}
        check_kwargs(f"as_retriever(search_type={search_type!r}) search_kwargs", search_kwargs, allowed)
        return super().as_retriever(search_kwargs=search_kwargs, **kwargs)

    def as_m3e_retriever(self, **kwargs: Any) -> M3ERetriever:
        """A :class:`M3ERetriever` over this store (supports hybrid mode and its own ``k``)."""
        return M3ERetriever(vectorstore=self, **kwargs)


def _one(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The value given under ``name`` or its ``alias``; both given and different is an error."""
    if value is not None and alias_value is not None and value != alias_value:
        raise InputError(f"{name}={value!r} and {alias}={alias_value!r} name the same thing; give one.")
    return value if value is not None else alias_value


class M3ERetriever(BaseRetriever):
    """A LangChain retriever over an :class:`M3EVectorStore`, with dense, sparse or hybrid search.

    ``k`` (alias ``top_k``) is set in the constructor, or in ``search_kwargs={"k": 2}`` as for
    ``as_retriever``, and may be overridden per call: ``retriever.invoke(q, k=2)``. Unknown
    arguments raise, in the constructor and in ``invoke``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    vectorstore: M3EVectorStore
    """The store to search."""
    k: int = Field(default=4, gt=0)
    """Number of documents to return."""
    mode: SearchMode = "dense"
    """``dense`` (M3E), ``sparse`` (BM25) or ``hybrid`` (both, fused per query)."""
    filter: dict[str, Any] | None = None
    """Chroma metadata filter applied to every search."""
    where_document: dict[str, Any] | None = None
    """Chroma document filter (``{"$contains": "熊猫"}``) applied to every search."""
    mmr: bool = False
    """Diversify results with maximal marginal relevance."""
    fetch_k: int = Field(default=20, gt=0)
    """Candidates per ranking before fusion, MMR or reranking."""
    lambda_mult: float = Field(default=0.5, ge=0.0, le=1.0)
    """MMR trade-off: 1.0 relevance only, 0.0 diversity only."""
    score_threshold: float | None = None
    """Drop results scoring below this (see RAGPipeline.search for its meaning per mode)."""

    def __init__(self, **kwargs: Any) -> None:
        fields = set(type(self).model_fields)
        check_kwargs("M3ERetriever", kwargs, fields | {"search_kwargs", "top_k"})
        search_kwargs = dict(kwargs.pop("search_kwargs", None) or {})
        if "top_k" in kwargs:
            search_kwargs.setdefault("k", kwargs["top_k"])
            if search_kwargs["k"] != kwargs.pop("top_k"):
                raise InputError("M3ERetriever: top_k and search_kwargs['k'] differ; give one.")
        if "where" in search_kwargs:
            search_kwargs["filter"] = _one("filter", search_kwargs.get("filter"), "where", search_kwargs.pop("where"))
        check_kwargs("M3ERetriever search_kwargs", search_kwargs, fields - {"vectorstore", "tags", "metadata"})
        for key, value in search_kwargs.items():
            if key in kwargs and kwargs[key] != value:
                raise InputError(f"M3ERetriever: {key}={kwargs[key]!r} conflicts with search_kwargs[{key!r}].")
            kwargs[key] = value
        super().__init__(**kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        options: dict[str, Any] = {
            "k": self.k,
            "where": self.filter,
            "where_document": self.where_document,
            "mode": self.mode,
            "mmr": self.mmr,
            "fetch_k": self.fetch_k,
            "lambda_mult": self.lambda_mult,
            "score_threshold": self.score_threshold,
        }
        if "filter" in kwargs:
            kwargs["where"] = kwargs.pop("filter")
        if "top_k" in kwargs:
            kwargs["k"] = kwargs.pop("top_k")
        unknown = set(kwargs) - set(options)
        if unknown:
            raise InputError(f"Unknown search options {sorted(unknown)}; use {sorted(options)} (or filter, top_k).")
        options.update(kwargs)
        k = options.pop("k")
        results = self.vectorstore._pipe.search(query, k, **options)
        return [_to_document(r) for r in results]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # LangChain's default runs the sync method without the per-call options; keep them.
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )

