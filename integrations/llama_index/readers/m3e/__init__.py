"""m3e-rag's encoding-aware file loaders as a LlamaIndex reader: ``from llama_index.readers.m3e import M3EReader``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

from m3e_rag.errors import require_extra

require_extra("llama_index.core", "llama-index-core", "llamaindex", "llama_index.readers.m3e")

from .base import M3EReader  # noqa: E402 - after the extra check

__all__ = ["M3EReader"]
