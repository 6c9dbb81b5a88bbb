"""m3e-rag: M3E embeddings and a Chinese-aware retrieval pipeline over Chroma.

The front door is small: :class:`M3EEncoder` turns text into vectors, :class:`RAGPipeline` loads,
chunks, embeds, stores and retrieves. Framework adapters live in ``langchain_m3e`` and
``llama_index.{embeddings,retrievers}.m3e``. Importing this package loads no model, starts no
network traffic and imports neither torch nor Chroma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m3e_rag._version import __version__ as __version__
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.encode.registry import MODELS, ModelSpec
from m3e_rag.errors import InputError, M3ERagError, ModelLoadError, ModelMismatchError, StoreError
from m3e_rag.types import Chunk, Document, RetrievedChunk

if TYPE_CHECKING:
    from m3e_rag.pipeline import IngestReport, RAGPipeline


__all__ = [
    "M3EEncoder",
    "RAGPipeline",
    "IngestReport",
    "Document",
    "Chunk",
    "RetrievedChunk",
    "ModelSpec",
    "MODELS",
    "M3ERagError",
    "InputError",
    "ModelLoadError",
    "ModelMismatchError",
    "StoreError",
]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in chromadb; load it only when asked for.
    if name in ("RAGPipeline", "IngestReport"):
        from m3e_rag import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'm3e_rag' has no attribute {name!r}")
