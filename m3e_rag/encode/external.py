"""Any embedding function as the pipeline's encoder: LangChain ``Embeddings``, LlamaIndex ``BaseEmbedding``, ...

:class:`ExternalEncoder` satisfies :class:`~m3e_rag.encode.protocol.TextEncoder` over two functions,
``embed_documents(texts) -> vectors`` and ``embed_query(text) -> vector``, so the whole pipeline
(Chinese-aware chunking, Chroma with its model guard, BM25, fusion, MMR) runs on vectors m3e-rag did
not compute. What stays M3E-only: the exact token budget (an external model's tokenizer is used
when the object carries a sentence-transformers model, else :class:`~m3e_rag.encode.approx_tokens.ApproxTokenizer`
estimates), prompts, backends and the service.

The index records :attr:`ExternalEncoder.model_name`, built by :func:`external_identity` from the
object's class and model (``langchain:langchain_openai.embeddings.base.OpenAIEmbeddings:text-embedding-3-small``),
and refuses another identity later, as it refuses another M3E model. Vectors are stored as the
function returns them (the index is cosine space, so their length does not change any score);
each call's output is checked (count, one dimension, finite numbers) before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from m3e_rag.encode.approx_tokens import ApproxTokenizer
from m3e_rag.encode.inputs import _validate_texts, query_text
from m3e_rag.errors import InputError

__all__ = ["ExternalEncoder", "external_identity", "DEFAULT_EXTERNAL_WINDOW"]

#: Token window assumed for an external model that does not say its own (M3E's and BERT's).
DEFAULT_EXTERNAL_WINDOW = 512
#: Attributes that name the model inside an embeddings object, most specific first.
_MODEL_ATTRIBUTES = ("model_name", "model", "model_id", "deployment_name", "deployment", "repo_id")
#: Text embedded once to learn the dimension when no vector has been seen yet.
_DIM_PROBE = "m3e-rag dimension probe"


def external_identity(obj: object, framework: str) -> str:
    """The identity an index records for an embeddings object: ``framework:module.Class[:model]``.

    The model comes from the first string attribute among ``model_name``, ``model``, ``model_id``,
    ``deployment_name``... (LangChain's and LlamaIndex's wrappers name their model so), so two
    ``OpenAIEmbeddings`` of different models are different identities.
    """
    cls = type(obj)
    identity = f"{framework}:{cls.__module__}.{cls.__qualname__}"
    for attr in _MODEL_ATTRIBUTES:
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return f"{identity}:{value}"
    return identity


def _local_tokenizer(obj: object) -> tuple[Any, int | None]:
    """The fast tokenizer and window of a sentence-transformers model inside ``obj`` (HuggingFaceEmbeddings')."""
    for attr in ("_client", "client", "_model", "model"):
        inner = getattr(obj, attr, None)
        tokenizer = getattr(inner, "tokenizer", None)
        if tokenizer is not None and getattr(tokenizer, "is_fast", False):
            window = getattr(inner, "max_seq_length", None)
            return tokenizer, window if isinstance(window, int) and window > 0 else None
    return None, None


class ExternalEncoder:
    """An encoder over ``embed_documents`` / ``embed_query`` functions (see the module docstring).

    Args:
        embed_documents: ``texts -> one vector per text`` (LangChain's ``embed_documents``, LlamaIndex's
            ``get_text_embedding_batch``).
        embed_query: ``text -> vector`` (``embed_query`` / ``get_query_embedding``).
        name: the identity recorded in the index (see :func:`external_identity`).
        tokenizer: a fast tokenizer to budget chunks with; None estimates (:class:`ApproxTokenizer`).
        max_seq_length: the model's token window; None assumes :data:`DEFAULT_EXTERNAL_WINDOW`.
        dim: the vector dimension when known; None learns it from the first vectors (or one probe).
    """

    normalize = False
    query_prompt = ""
    document_prompt = ""

    def __init__(
        self,
        embed_documents: Callable[[list[str]], Any],
        embed_query: Callable[[str], Any],
        *,
        name: str,
        tokenizer: Any = None,
        max_seq_length: int | None = None,
        dim: int | None = None,
    ) -> None:
        if not callable(embed_documents) or not callable(embed_query):
            raise InputError("ExternalEncoder needs two callables: embed_documents(texts) and embed_query(text).")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"ExternalEncoder needs a non-empty name (recorded in the index), got {name!r}.")
        self._embed_documents = embed_documents
        self._embed_query = embed_query
        self.model_name = name
        self._tokenizer = tokenizer if tokenizer is not None else ApproxTokenizer()
        self.max_seq_length = int(max_seq_length or DEFAULT_EXTERNAL_WINDOW)
        self._dim = dim

    @classmethod
    def wrap(cls, obj: object, embed_documents: Callable[[list[str]], Any], embed_query: Callable[[str], Any],
             framework: str) -> ExternalEncoder:
        """An encoder for a framework's embeddings object: its identity, and its local tokenizer if it has one."""
        tokenizer, window = _local_tokenizer(obj)
        return cls(embed_documents, embed_query, name=external_identity(obj, framework), tokenizer=tokenizer,
                   max_seq_length=window)

    def __repr__(self) -> str:
        return f"ExternalEncoder(name={self.model_name!r}, dim={self._dim})"

    @property
    def tokenizer(self) -> Any:
        """The tokenizer chunks are budgeted with (the model's own when known, else an estimate)."""
        return self._tokenizer

    @property
    def dim(self) -> int:
        """Vector dimension: as given, else from the first vectors seen, else from one probe text."""
        if self._dim is None:
            self._vectors(self._embed_documents([_DIM_PROBE]), 1, "embed_documents", probe=True)
        assert self._dim is not None
        return self._dim

    def count_tokens(self, texts: Sequence[str], prompt: str = "") -> list[int]:
        """Token count of each text with this encoder's tokenizer (special tokens included)."""
        if not texts:
            return []
        encoded = self._tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages with ``embed_documents``: shape (len(texts), dim), checked."""
        items = _validate_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return self._vectors(self._embed_documents(items), len(items), "embed_documents")

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query with ``embed_query``: shape (dim,), checked."""
        return self._vectors([self._embed_query(query_text(text, self.max_seq_length))], 1, "embed_query")[0]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries, one ``embed_query`` call each: shape (len(texts), dim)."""
        items = _validate_texts(texts, "queries")
        if not items:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return np.stack([self.encode_query(t) for t in items])

    def _vectors(self, raw: Any, n: int, method: str, *, probe: bool = False) -> np.ndarray:
        """``raw`` as an (n, dim) float32 array, or InputError naming the embeddings and what came back.

        A probe (learning the dimension) accepts an all-zero vector; a vector to store or search with does not.
        """
        where = f"{self.model_name} {method}"
        try:
            arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where} returned something that is not a list of equal-length vectors ({exc}).") from exc
        if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
            raise InputError(f"{where} returned shape {arr.shape} for {n} text(s); expected one vector per text.")
        if self._dim is None:
            self._dim = int(arr.shape[1])
        elif arr.shape[1] != self._dim:
            raise InputError(f"{where} returned {arr.shape[1]}-d vectors; this encoder's vectors are {self._dim}-d.")
        if not np.isfinite(arr).all():
            raise InputError(f"{where} returned NaN or infinite values; nothing was stored.")
        if not probe and not np.any(arr, axis=1).all():
            raise InputError(f"{where} returned an all-zero vector, which has no direction in a cosine index.")
        return arr
