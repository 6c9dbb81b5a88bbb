"""LlamaIndex ``BaseRetriever`` over :class:`m3e_rag.RAGPipeline` (dense, sparse or hybrid).

A shell: queries go to the pipeline, results come back as ``NodeWithScore`` whose nodes carry
``ref_doc_id`` (a SOURCE relationship to the source document), ``start_char_idx`` /
``end_char_idx`` from the stored spans, and the node's own metadata (see
:mod:`llama_index.vector_stores.m3e.nodes`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.vector_stores.m3e.base import hybrid_weights_for_alpha
from llama_index.vector_stores.m3e.filters import combine_where, to_chroma_filters
from llama_index.vector_stores.m3e.nodes import records_to_nodes

from m3e_rag.errors import InputError, refuse_unknown
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retrieve.modes import SearchMode, check_k, check_mode

__all__ = ["M3ERetriever"]

#: Options of a new RAGPipeline that M3ERetriever(index=...) passes on.
_PIPELINE_OPTIONS = tuple(p for p in inspect.signature(RAGPipeline.__init__).parameters if p not in ("self", "index"))
_REFUSED = {
    "search_kwargs": "that is LangChain's name; pass similarity_top_k=, mode=, filters=, mmr= directly",
    "top_k": "LlamaIndex's name is similarity_top_k",
    "k": "LlamaIndex's name is similarity_top_k",
}


class M3ERetriever(BaseRetriever):
    """Retrieve M3E-indexed chunks as LlamaIndex nodes.

    Args:
        pipeline: the :class:`RAGPipeline` to search; or give ``index`` (and ``model_name``...) to open one.
        index: folder of an embedded index (used when ``pipeline`` is None).
        similarity_top_k: number of nodes to return.
        mode: ``dense``, ``sparse`` or ``hybrid``.
        filters: LlamaIndex ``MetadataFilters`` or a Chroma ``where`` dict, applied to every query
            before ranking.
        where_document: Chroma document filter (``{"$contains": "熊猫"}``), applied to every query.
        mmr: diversify with maximal marginal relevance.
        fetch_k: candidates per ranking before fusion / MMR.
        lambda_mult: MMR trade-off (1.0 relevance only, 0.0 diversity only).
        alpha: hybrid mode only: 1 = vectors only, 0 = BM25 only (fusion weights ``dense=alpha,
            sparse=1-alpha``); None keeps the pipeline's ``hybrid_weights``.
        callback_manager: LlamaIndex callbacks.
        verbose: LlamaIndex's verbose flag.
        **pipeline_kwargs: options for a new :class:`RAGPipeline` (``model_name``, ``chroma_url``...).

    A ``QueryBundle`` with an ``embedding`` is searched with that vector (it must come from the
    index's model); its ``query_str`` still drives BM25 in sparse and hybrid modes.

    Example:
        .. code-block:: python

            from llama_index.core.query_engine import RetrieverQueryEngine
            from llama_index.retrievers.m3e import M3ERetriever

            retriever = M3ERetriever(index="./index", similarity_top_k=3, mode="hybrid")
            engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)
    """

    def __init__(
        self,
        pipeline: RAGPipeline | None = None,
        *,
        index: str | Path | None = None,
        similarity_top_k: int = 4,
        mode: SearchMode = "dense",
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        alpha: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **pipeline_kwargs: Any,
    ) -> None:
        refuse_unknown("M3ERetriever()", pipeline_kwargs, _PIPELINE_OPTIONS, _REFUSED)
        if pipeline is None:
            if index is None and "chroma_url" not in pipeline_kwargs:
                raise InputError("M3ERetriever needs a pipeline, an index folder (index=...) or chroma_url=...")
            pipeline = RAGPipeline(index or ".m3e_index", **pipeline_kwargs)
        elif pipeline_kwargs or index is not None:
            names = sorted(pipeline_kwargs) + (["index"] if index is not None else [])
            raise InputError(f"M3ERetriever(pipeline=...) already has its index and model; drop {', '.join(names)}.")
        self.pipeline = pipeline
        self.similarity_top_k = check_k(similarity_top_k, "similarity_top_k")
        self.mode = check_mode(mode)
        self.fetch_k = check_k(fetch_k, "fetch_k")
        self.lambda_mult = lambda_mult
        if isinstance(filters, MetadataFilters):
            where, doc_filter = to_chroma_filters(filters)
        elif filters is None or isinstance(filters, Mapping):
            where, doc_filter = (dict(filters) if filters else None), None
        else:
            raise InputError(
                f"filters must be MetadataFilters or a Chroma where dict, got {type(filters).__name__}."
            )
        self.filters = filters
        self.where = where
        self.where_document = combine_where(doc_filter, where_document)
        self.mmr = mmr
        self.hybrid_weights = None
        if alpha is not None:
            if self.mode != "hybrid":
                raise InputError("alpha applies to mode='hybrid' only.")
            self.hybrid_weights = hybrid_weights_for_alpha(pipeline.hybrid_weights, alpha)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = self.pipeline.search(
            query_bundle.query_str,
            self.similarity_top_k,
            where=self.where,
            where_document=self.where_document,
            mode=self.mode,
            mmr=self.mmr,
            fetch_k=self.fetch_k,
            lambda_mult=self.lambda_mult,
            query_vector=query_bundle.embedding,
            hybrid_weights=self.hybrid_weights,
        )
        stored = self.pipeline.store.get(ids=[r.id for r in results], include_text=False)
        nodes = records_to_nodes(results, {r.id: dict(r.metadata) for r in stored})
        return [NodeWithScore(node=node, score=r.score) for node, r in zip(nodes, results, strict=True)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
