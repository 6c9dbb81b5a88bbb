"""LangChain integration of m3e-rag: ``from langchain_m3e import M3EEmbeddings, M3EVectorStore, M3ERetriever``.

Also ``M3ETextSplitter``, the Chinese-aware chunker as a LangChain ``TextSplitter``.

Needs ``pip install 'm3e-rag[langchain]'``.
"""

from __future__ import annotations

from m3e_rag.errors import require_extra

require_extra("langchain_core", "langchain-core", "langchain", "langchain_m3e")

from .context import M3EContextRetriever  # noqa: E402 - after the extra check
from .embeddings import M3EEmbeddings  # noqa: E402 - after the extra check
from .text_splitter import M3ETextSplitter  # noqa: E402 - after the extra check
from .vectorstores import M3ERetriever, M3EVectorStore  # noqa: E402 - after the extra check

__all__ = ["M3EEmbeddings", "M3EVectorStore", "M3ERetriever", "M3EContextRetriever", "M3ETextSplitter"]
