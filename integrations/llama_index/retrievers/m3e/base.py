"""LlamaIndex ``BaseRetriever`` over :class:`m3e_rag.RAGPipeline` (dense, sparse or hybrid).

A shell: queries go to the pipeline, results come back as ``NodeWithScore``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from m3e_rag.errors import InputError
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retriever import SearchMode, check_k, check_mode

__all__ = ["M3ERetriever"]


class M3ERetriever(BaseRetriever):
    """Retrieve M3E-indexed chunks as LlamaIndex nodes.

    Args:
        pipeline: the :class:`RAGPipeline` to search; or give ``index`` (and ``model_name``...) to open one.
        index: folder of an embedded index (used when ``pipeline`` is None).
        similarity_top_k: number of nodes to return.
        mode: ``dense``, ``sparse`` or ``hybrid``.
        filters: Chroma metadata filter (``where``) applied to every query.
        mmr: diversify with maximal marginal relevance.
        callback_manager: LlamaIndex callbacks.
        **pipeline_kwargs: options for a new :class:`RAGPipeline` (``model_name``, ``chroma_url``...).

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
        filters: dict[str, Any] | None = None,
        mmr: bool = False,
        callback_manager: CallbackManager | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        if pipeline is None:
            if index is None and "chroma_url" not in pipeline_kwargs:
                raise InputError("M3ERetriever needs a pipeline, an index folder (index=...) or chroma_url=...")
            pipeline = RAGPipeline(index or ".m3e_index", **pipeline_kwargs)
        self.pipeline = pipeline
        self.similarity_top_k = check_k(similarity_top_k, "similarity_top_k")
        self.mode = check_mode(mode)
        self.filters = filters
        self.mmr = mmr
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = self.pipeline.search(
            query_bundle.query_str, self.similarity_top_k, where=self.filters, mode=self.mode, mmr=self.mmr
        )
        return [
            NodeWithScore(node=TextNode(id_=r.id, text=r.text, metadata=dict(r.metadata)), score=r.score)
            for r in results
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
