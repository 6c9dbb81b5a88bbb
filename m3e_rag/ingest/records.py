"""Records as given: what a framework VectorStore stores, reads back and deletes, one record per text.

A framework VectorStore hands over texts that are already its chunks, with their own ids and
metadata (and sometimes vectors), and later asks for them back by id or page, or deletes them.
:class:`Records` stores each text as one record (no chunking), reads records back unranked (score
0.0), deletes by source, ids or filter, and empties the collection. Every write holds the index's
write lock and is mirrored in the BM25 side (:meth:`~m3e_rag.ingest.index_handle.IndexHandle.writing`);
the arguments are checked before the store is opened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.chroma import StoreRecord
from m3e_rag.index.metadata import check_metadata
from m3e_rag.ingest.index_handle import IndexHandle
from m3e_rag.ingest.loaders._common import display_path
from m3e_rag.types import RetrievedChunk

__all__ = ["Records"]


def _check_sequence(value: object, name: str, *, allow_mapping: bool = False) -> None:
    """Refuse a str/bytes (or a dict) where a list is expected: ``ids="abc"`` must not mean ids a, b, c."""
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be a list, got the single string {value!r:.60}; wrap it: {name}=[...].")
    if isinstance(value, Mapping) and not allow_mapping:
        raise InputError(f"{name} must be a list, got a dict; pass one entry per text, e.g. {name}=[{{...}}].")
    if not isinstance(value, Iterable):
        raise InputError(f"{name} must be a list, got {type(value).__name__}; pass a list.")


class Records:
    """Stores, reads back, deletes and clears the records of one pipeline's index.

    Args:
        index: the store and its BM25 side (see :class:`~m3e_rag.ingest.index_handle.IndexHandle`).
        encoder: the pipeline's encoder (its model loads on the first text embedded).
    """

    def __init__(self, index: IndexHandle, encoder: TextEncoder) -> None:
        self._index = index
        self._encoder = encoder

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str | None] | None = None,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> list[str]:
        """Store each text as one record, unchunked; see :meth:`m3e_rag.RAGPipeline.add_texts`."""
        _check_sequence(texts, "texts")
        if metadatas is not None:
            _check_sequence(metadatas, "metadatas", allow_mapping=False)
        if ids is not None:
            _check_sequence(ids, "ids")
        items = list(texts)
        if metadatas is not None and len(metadatas) != len(items):
            raise InputError(f"Got {len(metadatas)} metadatas for {len(items)} texts; give one per text.")
        if ids is not None and len(ids) != len(items):
            raise InputError(f"Got {len(ids)} ids for {len(items)} texts; give one per text.")
        for n, meta in enumerate(metadatas or []):  # before any text is embedded or anything written
            check_metadata(meta, f"metadatas[{n}]")
        final_ids = [str(i) if i is not None else uuid.uuid4().hex for i in (ids or [None] * len(items))]
        dupes = sorted({i for i in final_ids if final_ids.count(i) > 1})
        if dupes:
            raise InputError(f"Duplicate ids in one call: {dupes[:5]}; ids must be unique.")
        if not items:
            return []
        lexical = None
        if embeddings is None:
            vectors, lexical = self._index.embed_documents(items)  # with the lexical weights, in one pass
        else:
            vectors = self.check_vectors(embeddings, len(items))
        metas = [dict(m or {}) for m in (metadatas or [None] * len(items))]
        store = self._index.store
        with self._index.writing():
            store.upsert([StoreRecord(cid, items[n], vectors[n], metas[n]) for n, cid in enumerate(final_ids)])
            self._index.sparse_upsert(final_ids, items, lexical)
        return final_ids

    def check_vectors(self, vectors: Sequence[Sequence[float]] | np.ndarray, n: int) -> np.ndarray:
        """``vectors`` as an (n, dim) float32 array of finite values, or InputError."""
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape != (n, self._encoder.dim):
            raise InputError(
                f"embeddings have shape {arr.shape}, expected ({n}, {self._encoder.dim}): one {self._encoder.dim}-d "
                f"vector per text from this index's model ({self._encoder.model_name!r})."
            )
        if not np.isfinite(arr).all():
            raise InputError("embeddings hold NaN or infinite values; embed those texts again with this model.")
        return arr

    def get(self, ids: Sequence[str]) -> list[RetrievedChunk]:
        """Fetch stored records by id (missing ids are left out), in the order of ``ids``."""
        _check_sequence(ids, "ids")
        found = {r.id: r for r in self._index.store.get(ids=list(ids))}
        return [found[i] for i in ids if i in found]

    def get_page(
        self,
        ids: Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Stored records by ids and/or filters, one page; see :meth:`m3e_rag.RAGPipeline.get_page`."""
        if ids is not None:
            _check_sequence(ids, "ids")
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"{name} must be a non-negative integer or None, got {value!r}.")
        if ids is not None and not list(ids):
            return []
        include = ["documents", "metadatas"] + (["embeddings"] if include_embeddings else [])
        res = self._index.store.page(ids, where, where_document=where_document, limit=limit, offset=offset,
                                     include=include)
        docs = res.get("documents") or [""] * len(res["ids"])
        metas = res.get("metadatas") or [{}] * len(res["ids"])
        embs = res.get("embeddings")
        out = []
        for i, cid in enumerate(res["ids"]):
            meta: dict[str, Any] = dict(metas[i] or {})
            if include_embeddings and embs is not None:
                meta["_embedding"] = np.asarray(embs[i], dtype=np.float32)
            out.append(RetrievedChunk(str(cid), docs[i] or "", 0.0, meta))
        return out

    def delete(self, *, source: str | Path | None = None, ids: Sequence[str] | None = None,
               where: Mapping[str, Any] | None = None, where_document: Mapping[str, Any] | None = None) -> int:
        """Delete chunks by source, ids, a metadata or a document filter; see :meth:`m3e_rag.RAGPipeline.delete`."""
        if source is None and ids is None and not where and not where_document:
            raise InputError(
                "delete() needs source=, ids=, where= or where_document= (an empty filter would match everything; "
                "to drop the whole index, delete its folder)."
            )
        if ids is not None:
            _check_sequence(ids, "ids")
        conditions: list[dict[str, Any]] = []
        if source is not None:
            # Files are stored under their absolute path (links kept); accept it as typed and resolved too.
            path = Path(source).expanduser()
            names = {str(source), display_path(path), path.resolve().as_posix()}
            conditions.append({"source": {"$in": sorted(names)}})
        if where:
            conditions.append(dict(where))
        combined: dict[str, Any] | None = None
        if conditions:
            combined = conditions[0] if len(conditions) == 1 else {"$and": conditions}
        with self._index.writing():
            doomed = [r.id for r in self._index.store.get(ids=ids, where=combined, where_document=where_document,
                                                          include_text=False)]
            removed = self._index.store.delete(ids=doomed) if doomed else 0
            self._index.sparse_delete(doomed)
        return removed

    def reset(self) -> int:
        """Delete every record (and its BM25 entry) but keep the collection and its model guard.

        Returns:
            How many records were deleted.
        """
        store = self._index.store
        with self._index.writing():
            ids = store.all_ids()
            removed = store.delete(ids=ids) if ids else 0
            self._index.sparse_delete(ids)
        return removed
