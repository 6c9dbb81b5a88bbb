"""LangChain ``VectorStore`` and ``BaseRetriever`` over :class:`m3e_rag.RAGPipeline`.

Shells only: Documents become texts, metadata and ids for the pipeline, and results come back as
Documents. Storage, the model guard, BM25, fusion, MMR and the score mapping all live in ``m3e_rag``.
The store's read side (searches, ``get``) is in :mod:`langchain_m3e._reading`, its argument checks in
:mod:`langchain_m3e._args` and the Document conversions in :mod:`langchain_m3e._convert`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import ConfigDict, Field

from m3e_rag.errors import InputError
from m3e_rag.index.chroma import DEFAULT_COLLECTION, chroma_objects
from m3e_rag.pipeline import IngestReport, RAGPipeline
from m3e_rag.retrieve.modes import SearchMode
from m3e_rag.retrieve.searcher import check_threshold

from ._args import (
    check_collection_metadata,
    one_of,
    resolve_store_args,
    retriever_search_kwargs,
    store_encoder,
    write_steps,
)
from ._convert import to_document, to_m3e_documents
from ._existing import require_collection
from ._reading import StoreReads
from .embeddings import M3EEmbeddings, check_kwargs

__all__ = ["M3EVectorStore", "M3ERetriever", "to_m3e_documents"]


class M3EVectorStore(StoreReads):
    """A LangChain vector store over Chroma, with Chinese BM25 beside it: a drop-in for ``langchain_chroma.Chroma``.

    Constructor (Chroma's names; exactly one location, or none for an in-memory store like Chroma):

    - ``collection_name``, ``embedding_function`` (:class:`M3EEmbeddings` by default, or any LangChain
      ``Embeddings``: the index records which, by class and model, and refuses another later),
      ``persist_directory``
      (also ``index=``), ``host``/``port``/``ssl``/``headers`` (a Chroma server, with auth headers;
      also ``chroma_url=``), ``client`` (a ready chromadb client), ``client_settings``,
      ``collection_metadata`` (``hnsw:space`` only ``cosine``: see below), ``relevance_score_fn``,
      ``create_collection_if_not_exists`` (False: the collection must exist, else StoreError at construction);
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
    :class:`~m3e_rag.errors.InputError` naming the key (as Chroma raises), and so do NaN and infinite
    values (Chroma stores them as None); an index opened with other embeddings than the ones that built
    it is refused (ModelMismatchError naming them); ``collection_metadata``
    ``{"hnsw:space": "l2"}`` (or ``"ip"``) is refused: the index is cosine space, where l2 and ip rank
    exactly as cosine over normalized vectors (pass ``relevance_score_fn=lambda d: 1 - math.sqrt(2) * d``
    for Chroma's l2 relevance numbers).

    LangChain's indexing API (``langchain_core.indexing.index`` / ``aindex``, every cleanup mode)
    works on it: the ``ids`` and ``batch_size`` it passes to ``add_documents`` are honoured.

    Example:
        .. code-block:: python

            from langchain_m3e import M3EEmbeddings, M3EVectorStore

            emb = M3EEmbeddings(model_name="moka-ai/m3e-base", encode_kwargs={"normalize_embeddings": True})
            store = M3EVectorStore.from_documents(docs, emb, persist_directory="./db", collection_name="kb")
            docs = store.similarity_search("大熊猫吃什么？", k=2, filter={"topic": "panda"}, mode="hybrid")
    """

    def __init__(
        self,
        collection_name: str | Embeddings = DEFAULT_COLLECTION,
        embedding_function: Embeddings | None = None,
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
        embedding: Embeddings | None = None,
        index: str | Path | None = None,
        chroma_url: str | None = None,
        collection: str | None = None,
        pipeline: RAGPipeline | None = None,
        create_collection_if_not_exists: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(create_collection_if_not_exists, bool):
            raise InputError(
                f"create_collection_if_not_exists must be True or False, got {create_collection_if_not_exists!r}."
            )
        emb, name, folder, url, given = resolve_store_args(
            kwargs, collection_name, embedding_function, persist_directory, host, port, headers, client,
            ssl=ssl, embedding=embedding, index=index, chroma_url=chroma_url, collection=collection,
        )
        self._embedding: Embeddings = emb or M3EEmbeddings()
        self.override_relevance_score_fn = relevance_score_fn
        self._deleted = False
        if pipeline is not None:
            if given or kwargs or client_settings is not None or collection_metadata is not None or (
                not create_collection_if_not_exists
            ):
                raise InputError("M3EVectorStore: with pipeline=, give no other location or pipeline option.")
            self.pipeline = pipeline
            return
        check_collection_metadata(collection_metadata)
        if not given:  # like Chroma: no location means an in-memory (ephemeral) client
            import chromadb
            from chromadb.config import Settings

            client = chromadb.EphemeralClient(settings=client_settings or Settings(anonymized_telemetry=False))
            client_settings = None
        if not create_collection_if_not_exists:
            require_collection(name, folder if folder is not None else ".m3e_index", url, client, client_settings,
                               headers)
        self.pipeline = RAGPipeline(
            folder if folder is not None else ".m3e_index",
            chroma_url=url,
            collection=name,
            encoder=store_encoder(self._embedding),
            client=client,
            client_settings=client_settings,
            headers=headers,
            collection_metadata=collection_metadata,
            **kwargs,
        )

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings object the store was given (M3EEmbeddings by default)."""
        return self._embedding

    # ----------------------------------------------------------------- writing
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts (one record each, unchunked); returns their ids.

        ``batch_size=n`` stores them in steps of ``n`` texts, each embedded and written on its own.
        """
        check_kwargs("M3EVectorStore.add_texts", kwargs, ("batch_size",))
        return self._write(texts, metadatas, ids, kwargs.get("batch_size"))

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and store Documents; a Document's ``id`` is honoured (``ids=`` overrides it).

        ``batch_size=n`` (LangChain's indexing API passes it) stores them in steps of ``n`` Documents.
        """
        check_kwargs("M3EVectorStore.add_documents", kwargs, ("ids", "batch_size"))
        ids = kwargs.get("ids") or [doc.id for doc in documents]
        return self._write([doc.page_content for doc in documents], [doc.metadata for doc in documents], ids,
                           kwargs.get("batch_size"))

    def _write(self, texts: Iterable[str], metadatas: list[dict] | None, ids: Sequence[str | None] | None,
               batch_size: Any) -> list[str]:
        """Store the texts in the steps :func:`~langchain_m3e._args.write_steps` splits them into; all ids."""
        out: list[str] = []
        for step in write_steps(texts, metadatas, ids, batch_size):
            out.extend(self._pipe.add_texts(step.texts, step.metadatas, step.ids))
        return out

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
        where = one_of("where", kwargs.get("where"), "filter", kwargs.get("filter"))
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
        self._dropped_client = chroma_objects(self._pipe.store)[0]  # ``_client`` still answers, as in Chroma
        self._pipe.drop()
        self._deleted = True

    def reset_collection(self) -> None:
        """Empty the collection (or create it again after :meth:`delete_collection`); the model guard stays."""
        if self._deleted:
            self._deleted = False
            self.pipeline.store  # noqa: B018 - creates the collection again, with its model guard
            return
        self.pipeline.reset()

    # ------------------------------------------------------------------ async twins not in LangChain's base
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
        search_kwargs = retriever_search_kwargs(kwargs)
        return super().as_retriever(search_kwargs=search_kwargs, **kwargs)

    def as_m3e_retriever(self, **kwargs: Any) -> M3ERetriever:
        """A :class:`M3ERetriever` over this store (supports hybrid mode and its own ``k``)."""
        return M3ERetriever(vectorstore=self, **kwargs)


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
            search_kwargs["filter"] = one_of("filter", search_kwargs.get("filter"), "where", search_kwargs.pop("where"))
        check_kwargs("M3ERetriever search_kwargs", search_kwargs, fields - {"vectorstore", "tags", "metadata"})
        for key, value in search_kwargs.items():
            if key in kwargs and kwargs[key] != value:
                raise InputError(f"M3ERetriever: {key}={kwargs[key]!r} conflicts with search_kwargs[{key!r}].")
            kwargs[key] = value
        if kwargs.get("score_threshold") is not None:
            check_threshold(kwargs["score_threshold"])  # NaN would make every search return nothing
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
        return self._answer(query, k, options)

    def _answer(self, query: str, k: int, options: dict[str, Any]) -> list[Document]:
        """The Documents for one query: the ``k`` best chunks (a context retriever assembles them instead)."""
        return [to_document(r) for r in self.vectorstore._pipe.search(query, k, **options)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # LangChain's default runs the sync method without the per-call options; keep them.
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )

