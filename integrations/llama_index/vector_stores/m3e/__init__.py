"""LlamaIndex vector store of m3e-rag: ``from llama_index.vector_stores.m3e import M3EVectorStore``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "llama_index.vector_stores.m3e needs llama-index-core, which is not installed; "
        "run: pip install 'm3e-rag[llamaindex]'"
    ) from exc

from .base import M3EVectorStore

__all__ = ["M3EVectorStore"]
