"""Argument checks of the LangChain store and retriever: Chroma's names, their aliases, what is refused.

Owns which keywords :class:`~langchain_m3e.M3EVectorStore` and :class:`~langchain_m3e.M3ERetriever`
accept under ``langchain_chroma.Chroma``'s names and m3e-rag's, and the errors for the rest, so the
shells themselves only forward to :class:`m3e_rag.RAGPipeline`. Unknown arguments raise, never pass silently.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from langchain_core.embeddings import Embeddings

from m3e_rag.encode.external import ExternalEncoder
from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.chroma import DEFAULT_COLLECTION
from m3e_rag.index.guard import user_metadata
from m3e_rag.pipeline import RAGPipeline
from m3e_rag.retrieve.searcher import check_threshold

from .embeddings import M3EEmbeddings, check_kwargs

__all__ = [
    "SEARCH_OPTIONS",
    "StoreLocation",
    "WriteStep",
    "check_collection_metadata",
    "one_of",
    "resolve_store_args",
    "store_encoder",
    "retriever_search_kwargs",
    "write_steps",
]

#: Extra keywords every text search accepts (besides k, filter, where_document).
SEARCH_OPTIONS = ("mode", "fetch_k", "lambda_mult", "mmr", "reranker", "rerank_top_n")
#: RAGPipeline options a store may be built with (the rest are set from Chroma's names here).
_PIPELINE_OPTIONS = tuple(
    name for name in inspect.signature(RAGPipeline.__init__).parameters
    if name not in ("self", "index", "chroma_url", "collection", "encoder", "client", "client_settings", "headers",
                    "collection_metadata", "model_name", "device", "backend", "batch_size")
)
#: Chroma constructor arguments m3e-rag cannot honour, with the reason.
_REFUSED_CHROMA = {
    "chroma_cloud_api_key": "Chroma Cloud is not supported yet; run `chroma run` and pass host=/port=",
    "tenant": "only Chroma's default tenant is supported",
    "database": "only Chroma's default database is supported",
    "collection_configuration": "the collection is always created in cosine space by m3e-rag's model guard",
}


def store_encoder(embedding: Embeddings) -> TextEncoder:
    """The encoder behind a store: M3EEmbeddings' own (shared), or any other Embeddings wrapped.

    Another Embeddings is recorded in the index by its class and model (see
    :func:`m3e_rag.encode.external.external_identity`); chunk budgets use its sentence-transformers
    tokenizer when it has one, else an estimate.
    """
    if isinstance(embedding, M3EEmbeddings):
        return embedding.encoder
    return ExternalEncoder.wrap(embedding, embedding.embed_documents, embedding.embed_query, "langchain")


def one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The value given under ``name`` or its ``alias``; both given and different is an error."""
    if value is not None and alias_value is not None and value != alias_value:
        raise InputError(f"{name}={value!r} and {alias}={alias_value!r} name the same thing; give one.")
    return value if value is not None else alias_value


class StoreLocation(NamedTuple):
    """The store's constructor arguments once aliases are resolved and conflicts refused."""

    embedding: Embeddings | None
    collection: str
    folder: str | Path | None
    url: str | None
    given: list[str]


def resolve_store_args(
    kwargs: dict[str, Any],
    collection_name: str | Embeddings,
    embedding_function: Embeddings | None,
    persist_directory: str | Path | None,
    host: str | None,
    port: int | None,
    headers: dict[str, str] | None,
    client: Any,
    *,
    ssl: bool,
    embedding: Embeddings | None,
    index: str | Path | None,
    chroma_url: str | None,
    collection: str | None,
) -> StoreLocation:
    """Check M3EVectorStore's arguments (Chroma's names and m3e-rag's) and resolve their aliases.

    Pops the refused Chroma arguments from ``kwargs`` (the pipeline options stay there). ``given``
    names the locations given among persist_directory, host and client (at most one).
    """
    for name, reason in _REFUSED_CHROMA.items():
        value = kwargs.pop(name, None)
        if value is not None:
            raise InputError(f"M3EVectorStore: {name}={value!r} is not supported: {reason}.")
    check_kwargs("M3EVectorStore", kwargs, _PIPELINE_OPTIONS + tuple(_REFUSED_CHROMA) + (
        "collection_name", "embedding_function", "persist_directory", "host", "port", "headers",
        "client_settings", "collection_metadata", "client", "relevance_score_fn", "ssl", "embedding", "index",
        "chroma_url", "collection", "pipeline", "create_collection_if_not_exists"))
    if isinstance(collection_name, Embeddings):  # the pre-Chroma signature: M3EVectorStore(embeddings, ...)
        embedding, collection_name = collection_name, DEFAULT_COLLECTION
    emb = one_of("embedding_function", embedding_function, "embedding", embedding)
    name = one_of("collection_name", None if collection_name == DEFAULT_COLLECTION else collection_name,
                  "collection", collection) or DEFAULT_COLLECTION
    folder = one_of("persist_directory", persist_directory, "index", index)
    if host is not None and chroma_url is not None:
        raise InputError("M3EVectorStore: give host= (with port/ssl) or chroma_url=, not both.")
    if host is None and (port is not None or ssl or headers):
        raise InputError("M3EVectorStore: port=, ssl= and headers= are for a Chroma server; give host= too.")
    url = chroma_url or (f"{'https' if ssl else 'http'}://{host}:{port or 8000}" if host else None)
    given = [n for n, v in (("persist_directory", folder), ("host", url), ("client", client)) if v is not None]
    if len(given) > 1:
        raise InputError(f"M3EVectorStore: give only one of persist_directory, host and client; got {given}.")
    if emb is not None and not isinstance(emb, Embeddings):
        raise InputError(
            f"M3EVectorStore takes a LangChain Embeddings (M3EEmbeddings or any other), got {type(emb).__name__}."
        )
    return StoreLocation(emb, name, folder, url, given)


def retriever_search_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``as_retriever``'s arguments; returns its ``search_kwargs``, popping them from ``kwargs``.

    Search keywords given directly (``as_retriever(k=2)``) are moved into ``search_kwargs``; unknown
    keys, and keys the chosen ``search_type`` does not use, raise.
    """
    accepted = ("search_type", "search_kwargs", "tags", "metadata", "name")
    search_keys = ("k", "filter", "where", "where_document", *SEARCH_OPTIONS, "score_threshold")
    direct = {key: kwargs.pop(key) for key in list(kwargs) if key in search_keys}
    check_kwargs("M3EVectorStore.as_retriever", kwargs, accepted + search_keys)
    search_kwargs = dict(kwargs.pop("search_kwargs", None) or {})
    for key, value in direct.items():
        if key in search_kwargs and search_kwargs[key] != value:
            raise InputError(f"as_retriever: {key}={value!r} conflicts with search_kwargs[{key!r}].")
        search_kwargs[key] = value
    search_type = kwargs.get("search_type", "similarity")
    allowed = {"k", "filter", "where", "where_document", "mode", "fetch_k", "reranker", "rerank_top_n"}
    if search_type == "mmr":
        allowed |= {"lambda_mult"}
    elif search_type == "similarity_score_threshold":
        allowed |= {"score_threshold"}
    check_kwargs(f"as_retriever(search_type={search_type!r}) search_kwargs", search_kwargs, allowed)
    if search_kwargs.get("score_threshold") is not None:
        check_threshold(search_kwargs["score_threshold"])  # NaN would make every search return nothing
    return search_kwargs


def check_collection_metadata(metadata: Mapping[str, Any] | None) -> None:
    """Refuse, at construction, collection metadata the index cannot honour (the engine checks it again on open).

    ``hnsw:space`` other than ``cosine`` is refused with the reason and the way to Chroma's numbers:
    m3e-rag's dense scores, hybrid fusion and relevance mapping are cosine, and on normalized vectors
    l2 and ip rank exactly as cosine (Chroma's squared l2 distance is twice the cosine distance).
    """
    space = metadata.get("hnsw:space", "cosine") if isinstance(metadata, Mapping) else "cosine"
    if space != "cosine":
        raise InputError(
            f"M3EVectorStore: collection_metadata={{'hnsw:space': {space!r}}} is refused: m3e-rag indexes are always "
            "cosine space over normalized vectors (its dense scores, hybrid fusion and relevance scores are cosine). "
            "On normalized vectors l2 and ip rank exactly as cosine (Chroma's l2 distance = 2 x the cosine distance): "
            "drop the key; for Chroma's l2 relevance numbers pass relevance_score_fn=lambda d: 1 - math.sqrt(2) * d."
        )
    user_metadata(metadata)


class WriteStep(NamedTuple):
    """One write of ``add_texts``: texts with their metadatas and ids (None where not given)."""

    texts: Sequence[str]
    metadatas: Sequence[Mapping[str, Any] | None] | None
    ids: Sequence[str | None] | None


def write_steps(
    texts: Iterable[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None,
    ids: Sequence[str | None] | None,
    batch_size: Any,
) -> list[WriteStep]:
    """The writes of one ``add_texts``/``add_documents`` call: the whole call, or steps of ``batch_size`` texts.

    LangChain's indexing API passes ``batch_size``; each step is embedded and written on its own
    (memory bounded by the step, each step atomic). A call split in steps is checked whole first (lists,
    one metadata and one id per text, no id twice), so a mistake in a late step writes nothing.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size must be a positive integer (texts per write) or None, got {batch_size!r}.")
    # A generator becomes a list; what is not a list of texts (a str, a dict, a number) goes to the engine as given,
    # which refuses it by name.
    listed = isinstance(texts, (str, bytes, Mapping, Sequence)) or not isinstance(texts, Iterable)
    whole: Any = texts if listed else list(texts)
    if batch_size is None or not isinstance(whole, Sequence) or isinstance(whole, (str, bytes)) or (
        len(whole) <= batch_size
    ):
        return [WriteStep(whole, metadatas, ids)]  # one write: the engine checks it all before writing
    for name, value in (("metadatas", metadatas), ("ids", ids)):
        if value is not None and (isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence)):
            raise InputError(f"{name} must be a list with one entry per text, got {type(value).__name__}.")
        if value is not None and len(value) != len(whole):
            raise InputError(f"Got {len(value)} {name} for {len(whole)} texts; give one per text.")
    dupes = sorted(i for i, n in Counter(i for i in ids or [] if i is not None).items() if n > 1)
    if dupes:
        raise InputError(f"Duplicate ids in one call: {dupes[:5]}; ids must be unique.")
    return [
        WriteStep(whole[s : s + batch_size], None if metadatas is None else metadatas[s : s + batch_size],
                  None if ids is None else ids[s : s + batch_size])
        for s in range(0, len(whole), batch_size)
    ]
