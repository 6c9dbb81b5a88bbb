"""Framework documents (LangChain, LlamaIndex) as m3e_rag Documents, without importing any framework.

``RAGPipeline.ingest(documents=...)`` and the adapters' ``ingest`` accept them, so the
Chinese-aware chunker is one call away from a framework's loaders. Recognised by shape:

- LangChain ``Document``: ``page_content``, ``metadata``, ``id``;
- LlamaIndex ``Document`` / ``TextNode``: ``get_content()`` (or ``text``), ``metadata``, ``id_``.

The source (what re-ingesting replaces) is ``metadata["source"]``, else LlamaIndex's
``metadata["file_path"]``, else the document's id, else a hash of its text: the same documents
ingested twice replace their chunks instead of duplicating them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.types import Document

__all__ = ["coerce_documents"]


def _text_of(doc: Any) -> str | None:
    if hasattr(doc, "page_content"):  # LangChain
        return doc.page_content
    get_content = getattr(doc, "get_content", None)
    if callable(get_content):  # LlamaIndex (metadata is not prepended: it is stored as metadata)
        try:
            return get_content(metadata_mode="none")
        except TypeError:
            return get_content()
    text = getattr(doc, "text", None)
    return text if isinstance(text, str) else None


def coerce_documents(documents: Iterable[Any]) -> list[Document]:
    """Return ``documents`` as m3e_rag Documents; raise InputError naming the first unusable one."""
    if isinstance(documents, (str, bytes)):
        raise InputError("documents must be a list of Documents, got a string; use texts=[...] for plain texts.")
    out: list[Document] = []
    for i, doc in enumerate(documents):
        if isinstance(doc, Document):
            out.append(doc)
            continue
        text = _text_of(doc)
        meta = getattr(doc, "metadata", None)
        if not isinstance(text, str) or not (meta is None or isinstance(meta, dict)):
            raise InputError(
                f"documents[{i}] is a {type(doc).__name__}; pass m3e_rag Documents, LangChain Documents "
                "(page_content, metadata) or LlamaIndex Documents (get_content(), metadata)."
            )
        metadata = dict(meta or {})
        doc_id = getattr(doc, "id", None) or getattr(doc, "id_", None)
        source = metadata.pop("source", None) or metadata.get("file_path") or doc_id
        if not source:
            source = "text:" + hashlib.sha256(text.encode()).hexdigest()[:16]
        out.append(Document(text=text, source=str(source), metadata=metadata))
    return out
