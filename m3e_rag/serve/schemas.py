"""Request bodies of the service, as pydantic models (they also make ``/openapi.json``).

``/v1/embeddings`` follows OpenAI's schema exactly (plus optional extensions: ``input_type``, ``return_sparse``);
``/v1/rerank`` follows the Jina/Cohere shape that Dify and FastGPT send. Every model forbids
unknown fields: a misspelt option is a 422 naming it, never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EmbeddingRequest",
    "EmbeddingResponse",
    "RerankRequest",
    "RerankDocument",
    "SearchRequest",
    "IngestRequest",
    "IngestText",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Strict):
    """OpenAI ``POST /v1/embeddings``."""

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts. Token-id arrays (OpenAI's tokenizer) are refused with a 400: "
        "this server tokenizes with the model's own tokenizer."
    )
    model: str = Field(description="The served model's name (see GET /v1/models).")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes (the openai client's default)."
    )
    dimensions: int | None = Field(None, description="Must equal the model's dimension when given (no truncation).")
    user: str | None = Field(None, description="An end-user id (accepted for compatibility, logged nowhere).")
    input_type: Literal["document", "query"] = Field(
        "document", description="Extension: which prompt the model prepends (M3E has none; e5-style models do)."
    )
    return_sparse: bool = Field(
        False, description="Extension: also return each text's lexical weights as `sparse_embedding` "
        "({indices: token ids, values: weights}, from the same forward pass as the dense vector), for models whose "
        "folder ships a sparse head (BGE-M3's sparse_linear.pt); other models answer 400."
    )


class _SparseEmbedding(BaseModel):
    indices: list[int]
    values: list[float]


class _EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    sparse_embedding: _SparseEmbedding | None = None


class _Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """OpenAI's embedding response (documentation only: responses are serialized directly)."""

    object: Literal["list"] = "list"
    data: list[_EmbeddingData]
    model: str
    usage: _Usage


class RerankDocument(_Strict):
    """A document given as an object (Cohere accepts ``{"text": ...}``)."""

    text: str


class RerankRequest(_Strict):
    """Jina/Cohere ``POST /v1/rerank`` (what Dify and FastGPT send)."""

    model: str | None = Field(None, description="The reranker's name (optional; checked when given).")
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = Field(None, ge=1, description="Return the best top_n (default: all).")
    return_documents: bool = Field(True, description="Include each document's text in the results.")


class SearchRequest(_Strict):
    """``POST /v1/search``: the pipeline's search over the served index."""

    query: str
    k: int = Field(4, ge=1)
    mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    where: dict[str, Any] | None = Field(None, description='Chroma metadata filter, e.g. {"source": "a.md"}.')
    where_document: dict[str, Any] | None = Field(
        None, description='Chroma document filter, e.g. {"$contains": "熊猫"}.'
    )
    mmr: bool = False
    fetch_k: int = Field(20, ge=1)
    lambda_mult: float = Field(0.5, ge=0.0, le=1.0)
    score_threshold: float | None = None
    rerank: bool = Field(False, description="Reorder with the server's cross-encoder (needs --reranker).")
    rerank_top_n: int | None = Field(None, ge=1)
    sparse: Literal["auto", "bm25", "learned"] = Field(
        "auto", description="The sparse list of sparse/hybrid: the model's learned one when it ships a sparse head "
        "(BGE-M3), else BM25 (auto); or one by name."
    )
    colbert: bool = Field(False, description="Rescore the fused candidates with the model's ColBERT head (BGE-M3).")


class IngestText(_Strict):
    """One text to ingest."""

    text: str
    source: str | None = Field(None, description="Stable name; re-ingesting a source replaces its chunks.")
    metadata: dict[str, str | int | float | bool] | None = None


class IngestRequest(_Strict):
    """``POST /v1/ingest``: texts, or server-side paths under the server's --ingest-root."""

    texts: list[IngestText] | None = None
    paths: list[str] | None = Field(None, description="Files or folders, relative to --ingest-root or inside it.")
    include: list[str] | None = None
    exclude: list[str] | None = None
