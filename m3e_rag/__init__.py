"""m3e-rag: M3E embeddings and a Chinese-aware retrieval pipeline over Chroma.

The front door is small: :class:`M3EEncoder` turns text into vectors, :class:`RAGPipeline` loads,
chunks, embeds, stores and retrieves. Framework adapters live in ``langchain_m3e`` and
``llama_index.{embeddings,retrievers}.m3e``. Importing this package loads no model, starts no
network traffic and imports neither torch nor Chroma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .encoder import M3EEncoder
from .errors import InputError, M3ERagError, ModelLoadError, ModelMismatchError, StoreError
from .models import MODELS, ModelSpec
from .types import Chunk, Document, RetrievedChunk

if TYPE_CHECKING:
    from .pipeline import IngestReport, RAGPipeline

__version__ = "0.1.0"

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
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'm3e_rag' has no attribute {name!r}")
