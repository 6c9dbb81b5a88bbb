"""LlamaIndex node postprocessor of m3e-rag: ``from llama_index.postprocessor.m3e import M3EContextPostprocessor``.

Needs ``pip install 'm3e-rag[llamaindex]'``.
"""

from __future__ import annotations

from m3e_rag.errors import require_extra

require_extra("llama_index.core", "llama-index-core", "llamaindex", "llama_index.postprocessor.m3e")

from .base import M3EContextPostprocessor  # noqa: E402 - after the extra check

__all__ = ["M3EContextPostprocessor"]
