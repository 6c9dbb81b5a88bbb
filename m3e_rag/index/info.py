"""Describe an existing index without loading a model: what ``m3e-rag info --index`` prints.

Opening a :class:`~m3e_rag.pipeline.RAGPipeline` loads the embedding model (its dimension and
tokenizer guard the store): seconds of CPU and hundreds of MiB just to print counts. The store
records the model and dimension it was built with, so the description is read from there, with
the same damage checks as any open (:class:`~m3e_rag.index.chroma.ChromaStore`). torch, transformers and
sentence-transformers are never imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3e_rag.encode.loading import resolve_model_name
from m3e_rag.errors import InputError, ModelMismatchError
from m3e_rag.index.chroma import DEFAULT_COLLECTION, ChromaStore, read_index_model

__all__ = ["index_stats"]


def index_stats(
    path: str | Path | None = None,
    *,
    url: str | None = None,
    collection: str = DEFAULT_COLLECTION,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Model, dimension, chunk and source counts, chunker settings and location of an index.

    The same keys as :meth:`RAGPipeline.stats`.

    Args:
        path: the embedded index folder (ignored when ``url`` is given).
        url: a Chroma server address.
        collection: the collection name.
        model_name: if given (``--model``/``$M3E_MODEL``), it must be the model the index was built
            with (alias or hub id), as when the pipeline opens it.

    Raises:
        InputError: if there is no m3e-rag index there.
        ModelMismatchError: if ``model_name`` is not the model that built the index.

    """
    recorded = read_index_model(None if url else path, url, collection)
    where = url or str(path)
    if recorded is None:
        raise InputError(
            f"No m3e-rag index (collection {collection!r}) at {where}; run `m3e-rag ingest PATH --index {where}`."
        )
    model, dim = recorded
    if model_name is not None and resolve_model_name(model_name) != model:
        raise ModelMismatchError(
            f"The index at {where} (collection {collection!r}) was built with model {model!r}, not "
            f"{resolve_model_name(model_name)!r}; drop --model (and $M3E_MODEL) to describe it."
        )
    store = ChromaStore(None if url else path, url=url, collection=collection, model_id=model, dim=dim)
    desc = store.describe()
    return {
        "model": desc["model"],
        "dim": desc["dim"],
        "chunks": store.count(),
        "sources": len(store.sources()),
        "chunker": desc["chunker"],
        "collection": desc["collection"],
        "location": desc["location"],
    }
