"""LangChain integration of m3e-rag: ``from langchain_m3e import M3EEmbeddings, M3EVectorStore, M3ERetriever``.

Also ``M3ETextSplitter``, the Chinese-aware chunker as a LangChain ``TextSplitter``.

Needs ``pip install 'm3e-rag[langchain]'``.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "langchain_m3e needs langchain-core, which is not installed; run: pip install 'm3e-rag[langchain]'"
    ) from exc

from .embeddings import M3EEmbeddings
from .text_splitter import M3ETextSplitter
from .vectorstores import M3ERetriever, M3EVectorStore

__all__ = ["M3EEmbeddings", "M3EVectorStore", "M3ERetriever", "M3ETextSplitter"]
