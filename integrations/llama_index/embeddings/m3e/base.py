"""LlamaIndex ``BaseEmbedding`` over the shared :class:`m3e_rag.M3EEncoder`.

A shell: it forwards to the encoder and converts arrays to lists. ``embed_batch_size`` is how many
texts LlamaIndex hands over per call (large, so the encoder can sort a whole group by token length);
``batch_size`` is the encoder's forward-pass batch.
"""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from m3e_rag.encoder import ADAPTER_OPTIONS, DEFAULT_BATCH_SIZE, Backend, M3EEncoder, OnOverflow
from m3e_rag.models import DEFAULT_MODEL

__all__ = ["M3EEmbedding"]


class M3EEmbedding(BaseEmbedding):
    """M3E embeddings for LlamaIndex.

    Example:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            from llama_index.embeddings.m3e import M3EEmbedding

            Settings.embed_model = M3EEmbedding(model_name="m3e-base")
            index = VectorStoreIndex.from_documents(documents)
    """

    model_name: str = Field(
        default_factory=lambda: os.environ.get("M3E_MODEL") or DEFAULT_MODEL,
        description="Alias (m3e-small/m3e-base/m3e-large), hub id or local folder; default $M3E_MODEL.",
    )
    embed_batch_size: int = Field(default=256, gt=0, le=2048, description="Texts handed to the encoder per call.")
    device: str | None = Field(default=None, description="Torch device; None picks CUDA when available.")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalize vectors.")
    backend: Backend = Field(default="torch", description="torch (fp32), onnx or onnx-int8.")
    on_overflow: OnOverflow = Field(default="warn", description="warn, truncate or error on over-long texts.")
    trust_remote_code: bool = Field(default=False, description="Let the model folder run its own code.")

    _encoder: M3EEncoder = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = M3EEncoder(self.model_name, **{name: getattr(self, name) for name in ADAPTER_OPTIONS})

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "M3EEmbedding"

    @property
    def encoder(self) -> M3EEncoder:
        """The shared encoder doing the work."""
        return self._encoder

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.encode_query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._encoder.aencode_query(query)).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.encode_documents([text])[0].tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._encoder.aencode_documents([text]))[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.encode_documents(texts).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return (await self._encoder.aencode_documents(texts)).tolist()
