"""m3e-rag's Chinese-aware chunker for LlamaIndex: ``from llama_index.node_parser.m3e import M3ENodeParser``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "llama_index.node_parser.m3e needs llama-index-core, which is not installed; "
        "run: pip install 'm3e-rag[llamaindex]'"
    ) from exc

from .base import M3ENodeParser

__all__ = ["M3ENodeParser"]
