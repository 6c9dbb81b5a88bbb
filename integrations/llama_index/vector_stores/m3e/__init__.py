"""LlamaIndex vector store of m3e-rag: ``from llama_index.vector_stores.m3e import M3EVectorStore``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

from m3e_rag.errors import require_extra

require_extra("llama_index.core", "llama-index-core", "llamaindex", "llama_index.vector_stores.m3e")

from .base import M3EVectorStore  # noqa: E402 - after the extra check

__all__ = ["M3EVectorStore"]
