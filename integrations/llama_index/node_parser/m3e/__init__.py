"""m3e-rag's Chinese-aware chunker for LlamaIndex: ``from llama_index.node_parser.m3e import M3ENodeParser``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

from m3e_rag.errors import require_extra

require_extra("llama_index.core", "llama-index-core", "llamaindex", "llama_index.node_parser.m3e")

from .base import M3ENodeParser  # noqa: E402 - after the extra check

__all__ = ["M3ENodeParser"]
