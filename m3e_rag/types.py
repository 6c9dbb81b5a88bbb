"""Typed records that flow through the pipeline: documents in, chunks stored, results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Document", "Chunk", "RetrievedChunk", "Metadata", "ContextPiece", "Context"]

#: Metadata values Chroma can store: str, int, float or bool (no None, no nesting).
Metadata = dict[str, Any]


@dataclass(frozen=True)
class Document:
    """A loaded text with where it came from.

    Attributes:
        text: the decoded text.
        source: a stable name for the origin (a file path, or an id the caller gave).
        metadata: extra scalar metadata (page, encoding, title, ...).
    """

    text: str
    source: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the model's token window.

    Attributes:
        text: the chunk text, an exact slice ``document.text[start:end]``.
        source: the document's source.
        start: character offset of the chunk in the document text.
        end: character offset one past the chunk's last character.
        index: position of the chunk within its document (0-based).
        n_tokens: model tokens in ``text`` (without the special tokens).
        metadata: the document's metadata (copied).
    """

    text: str
    source: str
    start: int
    end: int
    index: int
    n_tokens: int
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class RetrievedChunk:
    """One search result.

    Attributes:
        id: the chunk's id in the store (derived from source and text).
        text: the chunk text.
        score: higher is better. For dense search it is the cosine similarity in [-1, 1];
            for sparse it is the BM25 score; for hybrid it is the fused score (weighted per-query z-scores by default).
        metadata: stored metadata, including ``source``, ``start``, ``end`` and ``chunk_index``.
    """

    id: str
    text: str
    score: float
    metadata: Metadata = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        """The source the chunk came from, if recorded."""
        value = self.metadata.get("source")
        return None if value is None else str(value)


@dataclass(frozen=True)
class ContextPiece:
    """One contiguous passage of a source handed to the LLM: merged hits, possibly trimmed or widened.

    Attributes:
        text: the passage, exactly ``document_text[start:end]`` when the span is known.
        source: the source it came from (the record id for a record stored without one).
        start: character offset of the passage in the source document; None when the records
            carried no usable span (stored unchunked by ``add_texts``): such a piece is one record, unmerged.
        end: character offset one past its last character (None with ``start``).
        chunk_ids: ids of the stored chunks the passage covers (hits and widened neighbours), in text order.
        score: the best score among the hits it holds (the search's scale).
        tokens: its size as counted by the context's token counter.
        metadata: the best hit's stored metadata (``page``, ``title``...) without the span keys.
    """

    text: str
    source: str
    start: int | None
    end: int | None
    chunk_ids: tuple[str, ...]
    score: float
    tokens: int
    metadata: Metadata = field(default_factory=dict)

    @property
    def citation(self) -> str:
        """``source (start-end)``, or the bare source when the span is unknown."""
        return self.source if self.start is None else f"{self.source} ({self.start}-{self.end})"


@dataclass(frozen=True)
class Context:
    """What an LLM receives for one query: pieces in the order to show them, within a token budget.

    Attributes:
        pieces: the passages, best first (or grouped by source, as asked).
        tokens: the pieces' tokens summed (each counted on its own text); never above ``budget``.
        budget: the budget in tokens the pieces were fitted into.
        left_out: ids of hits that are in no piece (the budget ran out before them).
    """

    pieces: list[ContextPiece]
    tokens: int
    budget: int
    left_out: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The pieces with numbered citations (``[1] source (start-end)`` above each), for a prompt.

        The citation lines are not counted in ``tokens``: the budget is spent on the passages.
        """
        return "\n\n".join(f"[{i}] {piece.citation}\n{piece.text}" for i, piece in enumerate(self.pieces, 1))
