"""Typed records that flow through the pipeline: documents in, chunks stored, results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Document", "Chunk", "RetrievedChunk", "Metadata"]

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
