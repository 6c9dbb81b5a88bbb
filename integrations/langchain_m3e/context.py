"""A LangChain retriever that returns an LLM context: merged, cited pieces within a token budget.

A shell over :meth:`m3e_rag.RAGPipeline.context`: the search is :class:`~langchain_m3e.M3ERetriever`'s
(same options), the hits are assembled by m3e-rag (overlapping chunks merged, trimmed around the
query, widened with the tokens left), and each piece comes back as one ``Document`` whose metadata
holds its ``source``, ``start`` / ``end`` (its exact span in the source document), ``chunk_ids``,
``score`` and ``tokens``::

    retriever = M3EContextRetriever(vectorstore=store, context_budget=512, mode="hybrid")
    docs = retriever.invoke("大熊猫吃什么？")      # at most 512 tokens of text in all, best first
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.documents import Document
from pydantic import Field

from m3e_rag.retrieve.context import DEFAULT_CONTEXT_K, DEFAULT_WIDEN, ContextOrder
from m3e_rag.types import ContextPiece

from .vectorstores import M3ERetriever

__all__ = ["M3EContextRetriever", "piece_to_document"]


def piece_to_document(piece: ContextPiece) -> Document:
    """A context piece as a LangChain Document: its text, and its citation in the metadata."""
    metadata = {**piece.metadata, "source": piece.source, "start": piece.start, "end": piece.end,
                "chunk_ids": list(piece.chunk_ids), "score": piece.score, "tokens": piece.tokens}
    return Document(page_content=piece.text, metadata=metadata)


class M3EContextRetriever(M3ERetriever):
    """:class:`~langchain_m3e.M3ERetriever` whose Documents are an LLM context of ``context_budget`` tokens.

    The ``k`` hits found (by the same options as M3ERetriever) are merged, trimmed and widened by
    :meth:`m3e_rag.RAGPipeline.context`; the Documents' texts hold at most ``context_budget`` tokens
    together, counted by ``count_tokens`` (default: the index model's tokenizer).
    """

    k: int = Field(default=DEFAULT_CONTEXT_K, gt=0)
    """Hits searched before assembly."""
    context_budget: int = Field(gt=0)
    """The most tokens the returned Documents hold together."""
    widen: int = Field(default=DEFAULT_WIDEN, ge=0)
    """Neighbouring chunks per side that the tokens left may spread into."""
    order: ContextOrder = "score"
    """``score`` (best piece first) or ``source`` (sources best first, each in text order)."""
    max_piece_tokens: int | None = Field(default=None, gt=0)
    """The most tokens one hit takes before every hit is placed (None: no cap)."""
    count_tokens: Callable[[str], int] | None = Field(default=None, exclude=True)
    """``fn(text) -> int`` counting the budget (your LLM's tokenizer); None: the index model's."""

    def _answer(self, query: str, k: int, options: dict[str, Any]) -> list[Document]:
        pipe = self.vectorstore._pipe
        hits = pipe.search(query, k, **options)
        context = pipe.context(query, self.context_budget, hits=hits, widen=self.widen,
                               count_tokens=self.count_tokens, order=self.order, max_piece_tokens=self.max_piece_tokens)
        return [piece_to_document(piece) for piece in context.pieces]
