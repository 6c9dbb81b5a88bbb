"""Conversions between LangChain's ``Document`` and m3e_rag's records, for the LangChain shells.

Owns the one mapping both ways (search results to LangChain Documents, LangChain Documents to
m3e_rag Documents for ``ingest``), so the store, its read side and the retriever convert alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document

from m3e_rag.ingest.documents import coerce_documents
from m3e_rag.types import Document as M3EDocument
from m3e_rag.types import RetrievedChunk

__all__ = ["to_document", "to_m3e_documents"]


def to_document(chunk: RetrievedChunk) -> Document:
    """A retrieved (or stored) chunk as a LangChain Document: text, a copy of its metadata, its id."""
    return Document(page_content=chunk.text, metadata=dict(chunk.metadata), id=chunk.id)


def to_m3e_documents(documents: Sequence[Any]) -> list[M3EDocument]:
    """LangChain Documents -> m3e_rag Documents for ``ingest`` (see :func:`m3e_rag.ingest.documents.coerce_documents`).

    The source is ``metadata["source"]``, else the Document's ``id``, else a hash of its text, so
    re-ingesting the same Documents replaces their chunks instead of duplicating them.
    """
    return coerce_documents(documents)
