"""LlamaIndex ``BaseNodePostprocessor`` that turns retrieved nodes into an LLM context within a token budget.

A shell over :func:`m3e_rag.retrieve.context.assemble_context` (with a pipeline: over
:meth:`m3e_rag.RAGPipeline.context`, which also widens into the stored neighbouring chunks): nodes of one
source whose character spans overlap or touch are merged (no text twice), a piece too big for what is
left is trimmed around the sentence sharing most terms with the query, and each piece comes back as a
``TextNode`` with ``start_char_idx`` / ``end_char_idx``, its ``source`` and the ``chunk_ids`` it covers.

A node's source is its ``source`` metadata (as m3e-rag stores it), else its ``ref_doc_id``; its span is
its ``start`` / ``end`` metadata, else ``start_char_idx`` / ``end_char_idx``. A node without a usable span
(its text not exactly ``end - start`` characters) is kept as a piece of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from m3e_rag.errors import InputError
from m3e_rag.ingest.sentences import sentence_starts
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retrieve.context import ContextOrder, assemble_context
from m3e_rag.types import ContextPiece, RetrievedChunk

__all__ = ["M3EContextPostprocessor", "node_to_hit", "piece_to_node"]

#: Keys of a piece's node that are for citation, not for the LLM's or the embedder's view of the text.
_CITATION_KEYS = ["start", "end", "chunk_ids", "tokens"]


def node_to_hit(scored: NodeWithScore) -> RetrievedChunk:
    """A retrieved node as an m3e-rag hit: id, text, score (0.0 when None), metadata with source and span."""
    node = scored.node
    meta: dict[str, Any] = dict(node.metadata)
    meta.setdefault("source", node.ref_doc_id or node.node_id)
    if not isinstance(meta.get("start"), int) and isinstance(node, TextNode):
        meta["start"], meta["end"] = node.start_char_idx, node.end_char_idx
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    return RetrievedChunk(node.node_id, text, float(scored.score or 0.0), meta)


def piece_to_node(piece: ContextPiece) -> NodeWithScore:
    """A context piece as a scored ``TextNode``: its text, span, source (also as its SOURCE relation), chunk ids."""
    key = f"{piece.source}\x00{piece.start}\x00{piece.end}\x00{','.join(piece.chunk_ids)}"
    metadata = {**piece.metadata, "source": piece.source, "start": piece.start, "end": piece.end,
                "chunk_ids": list(piece.chunk_ids), "tokens": piece.tokens}
    node = TextNode(
        id_=hashlib.sha256(key.encode()).hexdigest()[:32],
        text=piece.text,
        metadata=metadata,
        start_char_idx=piece.start,
        end_char_idx=piece.end,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=piece.source)},
        excluded_llm_metadata_keys=_CITATION_KEYS,
        excluded_embed_metadata_keys=_CITATION_KEYS,
    )
    return NodeWithScore(node=node, score=piece.score)


class M3EContextPostprocessor(BaseNodePostprocessor):
    """Merge, trim and order retrieved nodes into at most ``budget_tokens`` tokens of context.

    Args:
        budget_tokens: the most tokens the returned nodes' texts hold together.
        pipeline: an m3e-rag pipeline: its model's tokenizer counts (unless ``count_tokens``), and the
            nodes' neighbouring chunks are fetched from its store for widening.
        count_tokens: ``fn(text) -> int`` counting the budget (your LLM's tokenizer); needed without ``pipeline``.
        widen: neighbouring chunks per side to fetch from ``pipeline``'s store (needs ``pipeline``).
        order: ``score`` (best first) or ``source`` (sources best first, each in text order).
        max_piece_tokens: the most tokens one node takes before every node is placed (None: no cap).

    Example:
        .. code-block:: python

            from llama_index.postprocessor.m3e import M3EContextPostprocessor

            engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[
                M3EContextPostprocessor(budget_tokens=512, count_tokens=lambda t: len(tok.encode(t)))])
    """

    budget_tokens: int = Field(gt=0)
    widen: int = Field(default=0, ge=0)
    order: ContextOrder = "score"
    max_piece_tokens: int | None = Field(default=None, gt=0)
    _pipeline: RAGPipeline | None = PrivateAttr(default=None)
    _count_tokens: Callable[[str], int] | None = PrivateAttr(default=None)

    def __init__(
        self,
        budget_tokens: int,
        *,
        pipeline: RAGPipeline | None = None,
        count_tokens: Callable[[str], int] | None = None,
        widen: int = 0,
        order: ContextOrder = "score",
        max_piece_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        if pipeline is None and count_tokens is None:
            raise InputError("M3EContextPostprocessor needs count_tokens= (your LLM's tokenizer) or pipeline= "
                             "(its model's tokenizer counts).")
        if widen and pipeline is None:
            raise InputError("M3EContextPostprocessor: widen= fetches neighbouring chunks from a store: "
                             "pass pipeline=.")
        if pipeline is not None and not isinstance(pipeline, RAGPipeline):
            raise InputError(f"pipeline must be an m3e_rag.RAGPipeline, got {type(pipeline).__name__}.")
        fields: dict[str, Any] = {"budget_tokens": budget_tokens, "widen": widen, "order": order,
                                  "max_piece_tokens": max_piece_tokens}
        super().__init__(**fields, **kwargs)
        self._pipeline = pipeline
        self._count_tokens = count_tokens

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's registry name for this component."""
        return "M3EContextPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        hits = [node_to_hit(n) for n in nodes]
        query = query_bundle.query_str if query_bundle is not None else ""
        if self._pipeline is not None:
            context = self._pipeline.context(query, self.budget_tokens, hits=hits, widen=self.widen,
                                             count_tokens=self._count_tokens, order=self.order,
                                             max_piece_tokens=self.max_piece_tokens)
        else:
            assert self._count_tokens is not None  # checked in __init__
            context = assemble_context(hits, self._count_tokens, self.budget_tokens, query=query or None,
                                       sentence_starts=sentence_starts, order=self.order,
                                       max_piece_tokens=self.max_piece_tokens)
        return [piece_to_node(piece) for piece in context.pieces]
