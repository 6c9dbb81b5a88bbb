"""LangChain ``Embeddings`` over the shared :class:`m3e_rag.M3EEncoder`.

A shell: it converts arrays to lists of floats and forwards every option to the encoder, which
holds all the logic (batching, prompts, truncation accounting, backends).
"""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from m3e_rag.encoder import ADAPTER_OPTIONS, DEFAULT_BATCH_SIZE, Backend, M3EEncoder, OnOverflow

__all__ = ["M3EEmbeddings"]


class M3EEmbeddings(BaseModel, Embeddings):
    """M3E embeddings for LangChain.

    Example:
        .. code-block:: python

            from langchain_m3e import M3EEmbeddings

            emb = M3EEmbeddings(model_name="m3e-base")  # or a local folder, or $M3E_MODEL
            vectors = emb.embed_documents(["大熊猫主要吃竹子。", "Pandas mostly eat bamboo."])
            query = emb.embed_query("大熊猫吃什么？")

    Every instance with the same model, device and backend shares one loaded model.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(default_factory=from_env("M3E_MODEL", default="m3e-base"))
    """Alias (``m3e-small``/``m3e-base``/``m3e-large``), hub id or local folder; default ``$M3E_MODEL``."""
    device: str | None = None
    """Torch device; None picks CUDA when available, else CPU."""
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    """Texts per forward pass (batches are formed by token length)."""
    normalize: bool = True
    """L2-normalize vectors (recommended: cosine space)."""
    backend: Backend = "torch"
    """``torch`` (fp32 reference), ``onnx`` or ``onnx-int8``."""
    on_overflow: OnOverflow = "warn"
    """Texts over the 512-token window: ``warn`` (truncate and log), ``truncate`` or ``error``."""
    trust_remote_code: bool = False
    """Let the model folder run its own code. Off unless you ask."""

    _encoder: M3EEncoder = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Build the (cheap, lazy) encoder from the fields."""
        self._encoder = M3EEncoder(self.model_name, **{name: getattr(self, name) for name in ADAPTER_OPTIONS})

    @classmethod
    def from_encoder(cls, encoder: M3EEncoder) -> M3EEmbeddings:
        """Wrap an existing encoder (its options become this object's fields)."""
        return cls(model_name=encoder.model_name, **{name: getattr(encoder, name) for name in ADAPTER_OPTIONS})

    @property
    def encoder(self) -> M3EEncoder:
        """The shared encoder doing the work."""
        return self._encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages; one list of floats per text."""
        return self._encoder.encode_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self._encoder.encode_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages without blocking the event loop."""
        return (await self._encoder.aencode_documents(texts)).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one query without blocking the event loop."""
        return (await self._encoder.aencode_query(text)).tolist()
