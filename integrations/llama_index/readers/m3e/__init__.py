"""m3e-rag's encoding-aware file loaders as a LlamaIndex reader: ``from llama_index.readers.m3e import M3EReader``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "llama_index.readers.m3e needs llama-index-core, which is not installed; "
        "run: pip install 'm3e-rag[llamaindex]'"
    ) from exc

from .base import M3EReader

__all__ = ["M3EReader"]
