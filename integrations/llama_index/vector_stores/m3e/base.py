"""LlamaIndex vector store over m3e-rag's Chroma index: ``from llama_index.vector_stores.m3e import M3EVectorStore``.

The same index as :class:`m3e_rag.RAGPipeline` and ``m3e-rag search``: nodes written here are
found by the CLI, and folders written by ``m3e-rag ingest`` are queryable here (see
:mod:`llama_index.vector_stores.m3e.nodes` for the metadata layout). A shell: writes go through
``RAGPipeline.add_texts`` / ``delete``, queries through ``RAGPipeline.search``, so the model guard,
write lock, BM25 index and filters-before-ranking are the engine's.

Query modes: ``default`` (M3E cosine), ``sparse`` and ``text_search`` (BM25 over jieba tokens),
``hybrid`` (dense and BM25 fused per query), ``mmr`` (dense + maximal marginal relevance, with
``ChromaVectorStore``'s ``mmr_threshold`` / ``mmr_prefetch_factor`` / ``mmr_prefetch_k``: see
:mod:`llama_index.vector_stores.m3e.options`). ``alpha`` (hybrid only) sets the fusion weights for
that query: ``dense=alpha, sparse=1-alpha`` (1 = vectors only, 0 = BM25 only), the pipeline's
``HybridWeights`` otherwise. A query with filters but neither text nor vector returns the matching
nodes unranked, as ``ChromaVectorStore`` does.

Similarities follow the mode: cosine similarity for default/mmr, BM25 score for sparse, the fused
score for hybrid; None for a filters-only query. ``ChromaVectorStore`` returns ``exp(-distance)``
instead: ``exp(cosine - 1)`` on a cosine collection (0.135 to 1), ``exp(-squared L2)`` on Chroma's
default L2 collection (``exp(2 * cosine - 2)`` for unit vectors). The ranking is the same; a
``similarity_cutoff`` tuned on one store does not carry over: convert it (cosine = 1 + ln(s) on a
cosine collection) or re-tune it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from pydantic import PrivateAttr

from m3e_rag.encode.encoder import Backend, M3EEncoder
from m3e_rag.encode.external import ExternalEncoder
from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError, refuse_unknown
from m3e_rag.index.chroma import DEFAULT_COLLECTION, read_index_model
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retrieve.fusion import HybridWeights
from m3e_rag.retrieve.modes import SearchMode, check_k
from m3e_rag.types import RetrievedChunk

from .filters import combine_where, to_chroma_filters
from .nodes import node_to_record, page_records, records_to_nodes
from .options import QUERY_KWARGS, mmr_settings, refuse_ranking_options, refuse_unsupported_fields

__all__ = ["M3EVectorStore"]

logger = logging.getLogger(__name__)

_MODES: dict[VectorStoreQueryMode, SearchMode] = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.MMR: "dense",
    VectorStoreQueryMode.SPARSE: "sparse",
    VectorStoreQueryMode.TEXT_SEARCH: "sparse",
    VectorStoreQueryMode.HYBRID: "hybrid",
}
_INIT_REFUSED = {
    "chroma_collection": "M3EVectorStore opens its own collection, guarded for one model (recorded model, "
    "cosine space, write lock); pass persist_dir= (or host=/port=) and collection_name= instead",
    "collection_kwargs": "the collection is created by m3e-rag (cosine space, model recorded); nothing to pass",
}


_ACCEPTED = ("pipeline", "persist_dir", "index", "collection_name", "host", "port", "ssl", "headers", "chroma_url",
             "client", "model_name", "embed_model", "device", "backend")


def hybrid_weights_for_alpha(base: HybridWeights, alpha: float) -> HybridWeights:
    """LlamaIndex's ``alpha`` (1 = vector only, 0 = BM25 only) as fusion weights ``dense=alpha, sparse=1-alpha``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number from 0 (BM25 only) to 1 (vectors only), got {alpha!r}.")
    return replace(base, dense=float(alpha), sparse=1.0 - float(alpha))


def _ref_where(ref_doc_ids: Sequence[str]) -> dict[str, Any]:
    """Records of these documents: LlamaIndex writes ``doc_id``, ``m3e-rag ingest`` writes ``source``."""
    ids = [str(i) for i in ref_doc_ids]
    return {"$or": [{"doc_id": {"$in": ids}}, {"source": {"$in": ids}}]}


def _store_encoder(embed_model: Any) -> TextEncoder:
    """An M3EEmbedding's own encoder (shared), or any other LlamaIndex ``BaseEmbedding`` wrapped.

    Another embedding is recorded in the index by its class and ``model_name`` and refused if a
    different one opens the index later (see :mod:`m3e_rag.encode.external`).
    """
    encoder = getattr(embed_model, "encoder", None)
    if isinstance(encoder, M3EEncoder):
        return encoder
    if not isinstance(embed_model, BaseEmbedding):
        raise InputError(
            "embed_model must be a LlamaIndex BaseEmbedding (M3EEmbedding or any other), got "
            f"{type(embed_model).__name__}."
        )
    return ExternalEncoder.wrap(embed_model, embed_model.get_text_embedding_batch, embed_model.get_query_embedding,
                                "llamaindex")


def _open_pipeline(
    folder: str | Path | None,
    chroma_url: str | None,
    collection: str,
    model_name: str | None,
    embed_model: Any,
    device: str | None,
    backend: Backend | None,
    connection: dict[str, Any],
) -> RAGPipeline:
    """The store's own pipeline: the embed_model's encoder, else one for the index's recorded model."""
    encoder: TextEncoder | None = None
    if embed_model is not None:
        encoder = _store_encoder(embed_model)
        if model_name is not None and model_name != encoder.model_name:
            raise InputError(
                f"M3EVectorStore got model_name={model_name!r} and an embed_model of {encoder.model_name!r}; "
                "give one."
            )
        if device is not None or backend is not None:
            raise InputError("M3EVectorStore: device=/backend= belong to the embed_model you passed; set them "
                             "there.")
    if encoder is None and model_name is None and connection["client"] is None:
        recorded = read_index_model(None if chroma_url else folder, chroma_url, collection)
        model_name = recorded[0] if recorded else None
    if encoder is None:
        encoder = M3EEncoder(model_name, device=device, backend=backend or "torch")
    return RAGPipeline(folder or ".m3e_index", chroma_url=chroma_url, collection=collection, encoder=encoder,
                       **{k: v for k, v in connection.items() if v})


class M3EVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over an m3e-rag index (embedded Chroma folder or Chroma server).

    Args:
        pipeline: an open :class:`RAGPipeline` to share; or give the location below.
        persist_dir: folder of the embedded index (``index=`` is accepted as m3e-rag's name for it).
        collection_name: Chroma collection (default ``m3e_rag``, the CLI's).
        host, port, ssl, headers: a Chroma server instead of a folder (``chroma_url=`` also accepted);
            ``headers`` go with every request (a token for a server with auth).
        client: a ready ``chromadb`` client (``HttpClient``, ``PersistentClient``...) instead of a location.
        model_name: the model; default: the one recorded in an existing index, else ``$M3E_MODEL``.
        embed_model: an ``M3EEmbedding`` whose encoder (model and prompts) the store shares.
        device, backend: encoder options when the store builds its own encoder.

    Example:
        .. code-block:: python

            from llama_index.core import StorageContext, VectorStoreIndex
            from llama_index.embeddings.m3e import M3EEmbedding
            from llama_index.vector_stores.m3e import M3EVectorStore

            embed = M3EEmbedding(model_name="m3e-base")
            store = M3EVectorStore(persist_dir="./m3e_db", embed_model=embed)
            index = VectorStoreIndex.from_documents(
                docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
            )
            retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3)
    """

    stores_text: bool = True
    flat_metadata: bool = False  # scalars and lists of scalars (Chroma 1.x); nested dicts are refused
    is_embedding_query: bool = True
    persist_dir: str | None = None
    collection_name: str = DEFAULT_COLLECTION
    chroma_url: str | None = None
    model_name: str | None = None

    _pipeline: RAGPipeline = PrivateAttr()

    def __init__(
        self,
        pipeline: RAGPipeline | None = None,
        *,
        persist_dir: str | Path | None = None,
        index: str | Path | None = None,
        collection_name: str | None = None,
        host: str | None = None,
        port: int | str | None = None,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        chroma_url: str | None = None,
        client: Any = None,
        model_name: str | None = None,
        embed_model: Any = None,
        device: str | None = None,
        backend: Backend | None = None,
        **kwargs: Any,
    ) -> None:
        # ChromaVectorStore's names that mean nothing here may be passed empty (as tutorials do); set, they raise.
        refuse_unknown("M3EVectorStore()", [k for k, v in kwargs.items() if k not in _INIT_REFUSED or v], _ACCEPTED,
                       _INIT_REFUSED)
        if persist_dir is not None and index is not None and Path(persist_dir) != Path(index):
            raise InputError("M3EVectorStore got persist_dir= and index= naming different folders; give one.")
        folder = persist_dir if persist_dir is not None else index
        if host is not None:
            if chroma_url is not None:
                raise InputError("M3EVectorStore got host= and chroma_url=; give one.")
            chroma_url = f"{'https' if ssl else 'http'}://{host}:{port or 8000}"
        elif port is not None or ssl:
            raise InputError("M3EVectorStore got port=/ssl= without host=; add host= (e.g. '127.0.0.1').")
        if headers and chroma_url is None and client is None:
            raise InputError("M3EVectorStore got headers= without a server; add host= (or chroma_url=).")
        if pipeline is not None:
            given = {"persist_dir": folder, "collection_name": collection_name, "host/chroma_url": chroma_url,
                     "headers": headers, "client": client, "model_name": model_name, "embed_model": embed_model,
                     "device": device, "backend": backend}
            clash = [k for k, v in given.items() if v is not None]
            if clash:
                raise InputError(
                    "M3EVectorStore(pipeline=...) takes its index and model from the pipeline; drop "
                    f"{', '.join(clash)}."
                )
        elif folder is None and chroma_url is None and client is None:
            raise InputError(
                "M3EVectorStore needs where the index lives: persist_dir='./m3e_db', host='127.0.0.1' (a Chroma "
                "server) or pipeline=RAGPipeline(...)."
            )
        else:
            pipeline = _open_pipeline(folder, chroma_url, collection_name or DEFAULT_COLLECTION, model_name,
                                      embed_model, device, backend, {"headers": headers, "client": client})
        fields: dict[str, Any] = {
            "persist_dir": None if pipeline.chroma_url else str(pipeline.index_path),
            "collection_name": pipeline.collection,
            "chroma_url": pipeline.chroma_url,
            "model_name": pipeline.encoder.model_name,
        }
        super().__init__(**fields)
        self._pipeline = pipeline

    @classmethod
    def from_params(
        cls,
        collection_name: str,
        host: str | None = None,
        port: int | str | None = None,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        persist_dir: str | Path | None = None,
        collection_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> M3EVectorStore:
        """``ChromaVectorStore.from_params``'s signature: a folder (``persist_dir``) or a server (``host``/``port``).

        ``collection_kwargs`` may be empty only (m3e-rag creates the collection: cosine space, model
        recorded); ``kwargs`` are this class's own (``embed_model=``, ``model_name=``...).
        """
        return cls(collection_name=collection_name, host=host, port=port, ssl=ssl, headers=headers,
                   persist_dir=persist_dir, collection_kwargs=collection_kwargs, **kwargs)

    @classmethod
    def from_collection(cls, collection: Any) -> M3EVectorStore:
        """Refused with the reason: ``ChromaVectorStore.from_collection`` wraps a collection as it is.

        M3EVectorStore opens its own collection (cosine space, the model recorded and checked, the
        write lock, the BM25 side); pass ``client=`` with ``collection_name=``, or ``persist_dir=``.
        """
        raise InputError(f"M3EVectorStore.from_collection() cannot wrap a Chroma collection as it is: "
                         f"{_INIT_REFUSED['chroma_collection']} (or client=<its chromadb client>).")

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "M3EVectorStore"

    @property
    def client(self) -> RAGPipeline:
        """The :class:`RAGPipeline` doing the work (same index as ``m3e-rag search``)."""
        return self._pipeline

    @property
    def pipeline(self) -> RAGPipeline:
        """The :class:`RAGPipeline` doing the work."""
        return self._pipeline

    # ------------------------------------------------------------------ writing
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes with the embeddings LlamaIndex computed (checked), embedding those that have none."""
        refuse_unknown("M3EVectorStore.add()", add_kwargs, [])
        if not nodes:
            return []
        records = [node_to_record(n) for n in nodes]
        dim = self._pipeline.encoder.dim
        vectors = np.zeros((len(nodes), dim), dtype=np.float32)
        missing: list[int] = []
        for i, node in enumerate(nodes):
            if node.embedding is None:
                missing.append(i)
                continue
            if len(node.embedding) != dim:
                raise InputError(
                    f"Node {node.node_id!r} has a {len(node.embedding)}-d embedding, but this index holds {dim}-d "
                    f"vectors of {self._pipeline.encoder.model_name!r}: embed with "
                    f"M3EEmbedding(model_name={self._pipeline.encoder.model_name!r}), or build the store for your "
                    "model with M3EVectorStore(..., embed_model=<your M3EEmbedding>)."
                )
            vectors[i] = node.embedding
        if missing:
            texts = [nodes[i].get_content(metadata_mode=MetadataMode.EMBED) for i in missing]
            vectors[missing] = self._pipeline.encoder.encode_documents(texts)
        return self._pipeline.add_texts(
            [text for _, text, _ in records],
            metadatas=[meta for _, _, meta in records],
            ids=[nid for nid, _, _ in records],
            embeddings=vectors,
        )

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Async :meth:`add` (in a worker thread)."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of one source document (LlamaIndex ref_doc_id, or an ingested file's source)."""
        refuse_unknown("M3EVectorStore.delete()", delete_kwargs, [])
        self._pipeline.delete(where=_ref_where([ref_doc_id]))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Async :meth:`delete`."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or filters (both must match when both are given)."""
        refuse_unknown("M3EVectorStore.delete_nodes()", delete_kwargs, [])
        where, where_document = to_chroma_filters(filters)
        if node_ids is not None and not node_ids and where is None and where_document is None:
            return
        if not node_ids and where is None and where_document is None:
            raise InputError("delete_nodes() needs node_ids or filters; to delete everything, call clear().")
        self._pipeline.delete(ids=list(node_ids) if node_ids else None, where=where, where_document=where_document)

    def clear(self) -> None:
        """Delete every node of the collection (the collection itself and its model record stay)."""
        ids = self._pipeline.store.all_ids()
        if ids:
            self._pipeline.delete(ids=ids)

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Nodes by id and/or filters (all nodes when neither is given)."""
        where, where_document = to_chroma_filters(filters)
        found = self._pipeline.store.get(ids=node_ids, where=where, where_document=where_document)
        return list(records_to_nodes(found, {r.id: dict(r.metadata) for r in found}))

    # ------------------------------------------------------------------ reading
    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes for ``query`` in its mode, filters applied before ranking.

        Without ``query_str`` and ``query_embedding`` (filters only, as auto-retrievers send), the
        first ``similarity_top_k`` nodes matching the filters in storage order, with
        ``similarities=None``: what ``ChromaVectorStore`` returns (``collection.get(where, limit)``).
        MMR options: :mod:`llama_index.vector_stores.m3e.options`.
        """
        refuse_unknown("M3EVectorStore.query()", kwargs, QUERY_KWARGS)
        mode = _MODES.get(query.mode)
        if mode is None:
            raise InputError(
                f"vector_store_query_mode={query.mode.value!r} is not supported by M3EVectorStore; use one of "
                f"{', '.join(m.value for m in _MODES)}."
            )
        refuse_unsupported_fields(query)
        where, where_document = to_chroma_filters(query.filters)
        where = combine_where(where, kwargs.get("where"), _ref_where(query.doc_ids) if query.doc_ids else None)
        where_document = combine_where(where_document, kwargs.get("where_document"))
        if not query.query_str and not query.query_embedding:
            refuse_ranking_options(query, kwargs)
            return self._matching(check_k(query.similarity_top_k, "similarity_top_k"), where, where_document)
        return self._ranked(query, mode, where, where_document, kwargs)

    def _ranked(self, query: VectorStoreQuery, mode: SearchMode, where: dict[str, Any] | None,
                where_document: dict[str, Any] | None, kwargs: Mapping[str, Any]) -> VectorStoreQueryResult:
        """The engine's search for a query with text and/or a vector."""
        mmr = query.mode == VectorStoreQueryMode.MMR
        k = query.similarity_top_k
        if query.hybrid_top_k is not None:
            if query.mode != VectorStoreQueryMode.HYBRID:
                raise InputError("hybrid_top_k applies to vector_store_query_mode='hybrid' only; use similarity_top_k.")
            k = query.hybrid_top_k
        weights = None
        if query.alpha is not None:
            if query.mode != VectorStoreQueryMode.HYBRID:
                raise InputError("alpha applies to vector_store_query_mode='hybrid' only.")
            weights = hybrid_weights_for_alpha(self._pipeline.hybrid_weights, query.alpha)
        check_k(k, "hybrid_top_k" if query.hybrid_top_k is not None else "similarity_top_k")
        lambda_mult, fetch_k = mmr_settings(query, k, kwargs)
        vector = query.query_embedding
        if vector is not None and len(vector) != self._pipeline.encoder.dim:
            raise InputError(
                f"The query embedding has {len(vector)} dimensions, but this index holds "
                f"{self._pipeline.encoder.dim}-d vectors of {self._pipeline.encoder.model_name!r}: query with "
                f"embed_model=M3EEmbedding(model_name={self._pipeline.encoder.model_name!r}) (the index's model)."
            )
        if query.query_str:
            results = self._pipeline.search(
                query.query_str, k, where=where, where_document=where_document, mode=mode, mmr=mmr, fetch_k=fetch_k,
                lambda_mult=lambda_mult, query_vector=vector if (mode != "sparse" or mmr) else None,
                hybrid_weights=weights,
            )
        elif vector is not None and mode == "dense":
            results = self._pipeline.search_by_vector(
                vector, k, where=where, where_document=where_document, mmr=mmr, fetch_k=fetch_k,
                lambda_mult=lambda_mult,
            )
        else:
            raise InputError(f"vector_store_query_mode={query.mode.value!r} needs query_str (the question text).")
        return self._result(results)

    def _matching(self, limit: int, where: dict[str, Any] | None,
                  where_document: dict[str, Any] | None) -> VectorStoreQueryResult:
        """The first ``limit`` nodes matching the filters, in storage order (no query to rank by)."""
        found = page_records(self._pipeline.store.page(where=where, where_document=where_document, limit=limit))
        nodes = records_to_nodes(found, {r.id: dict(r.metadata) for r in found})
        return VectorStoreQueryResult(nodes=nodes, similarities=None, ids=[r.id for r in found])

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Async :meth:`query` (in a worker thread)."""
        return await asyncio.to_thread(self.query, query, **kwargs)

    def _result(self, results: Sequence[RetrievedChunk]) -> VectorStoreQueryResult:
        stored = self._pipeline.store.get(ids=[r.id for r in results], include_text=False)
        raw = {r.id: dict(r.metadata) for r in stored}
        nodes = records_to_nodes(results, raw)
        return VectorStoreQueryResult(nodes=nodes, similarities=[r.score for r in results], ids=[r.id for r in results])
