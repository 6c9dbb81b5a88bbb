"""What the pipeline needs of an encoder: the :class:`TextEncoder` protocol.

:class:`~m3e_rag.encode.encoder.M3EEncoder` is the encoder m3e-rag is built around (one model shared
by both frameworks, exact token budgets, prompts, backends). Any other embedding function can back an
index too, through :class:`~m3e_rag.encode.external.ExternalEncoder`: a LangChain ``Embeddings``, a
LlamaIndex ``BaseEmbedding`` or a plain pair of functions. The ingest, records and search code use only
what this protocol names, so hybrid search with Chinese BM25 works over any embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["TextEncoder"]


@runtime_checkable
class TextEncoder(Protocol):
    """An encoder as the pipeline uses it: identity recorded in the index, tokens, and vectors.

    ``model_name`` and ``dim`` are what the index records and checks on every open (another model is
    refused); ``tokenizer`` and ``max_seq_length`` budget chunks and cap queries; ``normalize`` says
    whether vectors come out L2-normalized (recorded; the index is cosine space either way).
    """

    @property
    def model_name(self) -> str:
        """The identity recorded in the index (an M3E alias, hub id or folder, or an external identity)."""

    @property
    def dim(self) -> int:
        """Vector dimension."""

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalized."""

    @property
    def max_seq_length(self) -> int:
        """Token window, special tokens included."""

    @property
    def tokenizer(self) -> Any:
        """A fast-tokenizer-like callable that reports ``input_ids`` and ``offset_mapping``."""

    @property
    def query_prompt(self) -> str:
        """Prefix prepended to queries ('' when none)."""

    @property
    def document_prompt(self) -> str:
        """Prefix prepended to documents ('' when none)."""

    def count_tokens(self, texts: Sequence[str], prompt: str = "") -> list[int]:
        """Token count of each text as the model sees it (special tokens and ``prompt`` included)."""

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages: an array of shape (len(texts), dim)."""

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query: shape (dim,)."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries: shape (len(texts), dim)."""
