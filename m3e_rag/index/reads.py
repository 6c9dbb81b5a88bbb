"""The read side of :class:`~m3e_rag.index.chroma.ChromaStore`: fetching, filtering, paging and vector search.

:class:`StoreReads` is a base class of the store holding every method that only reads the
collection (``get``, ``page``, ``query``, id lookups, whole-collection paging); writes, the model
guard, the write generation and connecting stay in :mod:`m3e_rag.index.chroma`. Each read goes
through :func:`~m3e_rag.index.boundary.store_boundary`, so Chroma's errors surface as m3e-rag's,
and filters are checked (:func:`~m3e_rag.index.boundary.check_filters`) before Chroma sees them.

**Large requests are batched.** Chroma binds every id of a ``get`` (and every result of a ``query`` whose
documents and metadata it fetches) as one sqlite variable, and sqlite allows 32,766 in a statement: 40,000
ids used to fail with "too many SQL variables" on a healthy index. Ids go to Chroma in batches of
:data:`ID_BATCH`; a query deeper than that asks Chroma for ids and distances only (no sqlite variables)
and fetches the documents and metadata of the hits in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3e_rag.errors import InputError, ModelMismatchError
from m3e_rag.index.boundary import check_filters, store_boundary
from m3e_rag.index.guard import describe_metadata
from m3e_rag.types import Metadata, RetrievedChunk

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

__all__ = ["ID_BATCH", "StoreReads"]

#: Most ids one Chroma call is given: with a filter's values (at most
#: :data:`~m3e_rag.index.boundary.MAX_FILTER_VALUES`, two variables each) well under sqlite's 32,766 variables.
ID_BATCH = 5_000
#: Ids with a filter beyond which the filter is resolved alone and intersected here: Chroma's cost for ids AND a
#: filter grows with their product (1,000 ids with a filter: 1.9 s on 5,000 records; 5,000 on 40,000: 80 s).
FILTERED_IDS_DIRECT = 100


def _merge(parts: list[dict[str, Any]], include: Sequence[str]) -> dict[str, Any]:
    """Chroma ``get`` results of several id batches as one result."""
    out: dict[str, Any] = {"ids": [i for part in parts for i in part["ids"]]}
    for key in include:
        values: list[Any] = []
        for part in parts:
            chunk = part.get(key)
            if chunk is not None:
                values.extend(chunk)
        out[key] = values
    return out


class StoreReads:
    """Reading a Chroma collection: base class of :class:`~m3e_rag.index.chroma.ChromaStore`.

    The store provides the opened collection (``_collection``), its name (``collection_name``), the vector
    dimension (``dim``) and where it lives (``_where()``, for error messages).
    """

    dim: int
    collection_name: str
    _collection: Collection

    def _where(self) -> str:
        raise NotImplementedError

    @property
    def collection_id(self) -> str:
        """The Chroma collection's id (a UUID string): it names the server-mode BM25 cache folder."""
        return str(self._collection.id)

    def describe(self) -> dict[str, Any]:
        """What built this index: model, dim, normalization, chunker settings, and its location."""
        meta = self._collection.metadata or {}
        return {**describe_metadata(meta), "collection": self.collection_name, "location": self._where()}

    def page(
        self,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        where_document: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
    ) -> dict[str, Any]:
        """Chroma's own ``get`` result (ids, documents, metadatas, embeddings), one page of it.

        For callers that need Chroma's dict shape and paging (LangChain's ``Chroma.get``).
        """
        check_filters(where, where_document)
        id_list = list(ids) if ids is not None else None
        many = id_list is not None and len(id_list) > (FILTERED_IDS_DIRECT if where or where_document else ID_BATCH)
        if many and id_list is not None:  # fetched whole (see _get_batched), then paged here
            whole = self._get_batched(id_list, where, where_document, list(include))
            first = offset or 0
            last = None if limit is None else first + limit
            return {key: value[first:last] if isinstance(value, list) else value for key, value in whole.items()}
        with store_boundary("read records", self._where(), filters=bool(where or where_document)):
            res = self._collection.get(
                ids=id_list,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                limit=limit,
                offset=offset,
                include=list(include),  # type: ignore[arg-type]
            )
        return dict(res)

    def _get_batched(
        self,
        ids: list[str] | None,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None,
        include: list[str],
    ) -> dict[str, Any]:
        """Chroma's ``get`` for any number of ids (in batches of :data:`ID_BATCH`), as one result.

        With more than :data:`FILTERED_IDS_DIRECT` ids and a filter, the filter is resolved alone (one call)
        and the ids it allows are fetched without it: the same records, without Chroma's ids-times-filter cost.
        """
        if ids is not None and len(ids) > FILTERED_IDS_DIRECT and (where or where_document):
            allowed = set(self.allowed_ids(where, where_document) or ())
            ids, where, where_document = [i for i in ids if i in allowed], None, None
            if not ids:
                return _merge([], include)
        parts: list[dict[str, Any]] = []
        batches = [None] if ids is None else [ids[i : i + ID_BATCH] for i in range(0, len(ids), ID_BATCH)]
        for batch in batches:
            with store_boundary("read records", self._where(), filters=bool(where or where_document)):
                parts.append(dict(self._collection.get(
                    ids=batch,
                    where=dict(where) if where else None,
                    where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                    include=include,  # type: ignore[arg-type]
                )))
        return _merge(parts, include)

    def count(self) -> int:
        """Number of chunks stored."""
        with store_boundary("count records", self._where()):
            return int(self._collection.count())

    def allowed_ids(
        self, where: Mapping[str, Any] | None = None, where_document: Mapping[str, Any] | None = None
    ) -> list[str] | None:
        """Ids of the records matching both filters, or None when there is no filter (everything allowed).

        Sparse and hybrid search restrict BM25 to these ids BEFORE ranking, so a filter that matches
        one record among thousands still finds it (filtering BM25's top hits afterwards would not).
        """
        if not where and not where_document:
            return None
        check_filters(where, where_document)
        with store_boundary("apply the filter", self._where(), filters=True):
            res = self._collection.get(
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                include=[],
            )
        return [str(i) for i in res["ids"]]

    def get(
        self,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        where_document: Mapping[str, Any] | None = None,
        include_text: bool = True,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Fetch stored chunks by id, metadata filter and/or document filter (score 0.0), in Chroma's order.

        ``where_document`` is Chroma's document filter: ``{"$contains": "熊猫"}``, ``$not_contains``,
        ``$regex``, ``$not_regex``, combined with ``$and`` / ``$or``.
        """
        if isinstance(ids, str):
            raise InputError(f"ids must be a list of ids, got the single string {ids!r}; wrap it: ids=[{ids!r}].")
        check_filters(where, where_document)
        include: list[str] = ["metadatas"]
        if include_text:
            include.append("documents")
        if include_embeddings:
            include.append("embeddings")
        out: list[RetrievedChunk] = []
        id_list = list(ids) if ids is not None else None
        if id_list is not None and not id_list:
            return out
        res = self._get_batched(id_list, where, where_document, include)
        docs = res.get("documents") or [""] * len(res["ids"])
        metas = res.get("metadatas") or [{}] * len(res["ids"])
        embs = res.get("embeddings")
        for i, cid in enumerate(res["ids"]):
            meta: dict[str, Any] = dict(metas[i] or {})
            if include_embeddings and embs is not None:
                meta["_embedding"] = np.asarray(embs[i], dtype=np.float32)
            out.append(RetrievedChunk(cid, docs[i] or "", 0.0, meta))
        return out

    def ids_by_source(self, sources: Sequence[str]) -> dict[str, dict[str, Metadata]]:
        """Map each source to {chunk id: stored metadata} for the chunks it has in the store."""
        result: dict[str, dict[str, Metadata]] = {s: {} for s in sources}
        step = 500
        for start in range(0, len(sources), step):
            part = list(sources[start : start + step])
            where: dict[str, Any] = {"source": part[0]} if len(part) == 1 else {"source": {"$in": part}}
            with store_boundary("read records", self._where()):
                res = self._collection.get(where=where, include=["metadatas"])
            for cid, meta in zip(res["ids"], res.get("metadatas") or [], strict=False):
                src = str((meta or {}).get("source", ""))
                result.setdefault(src, {})[cid] = dict(meta or {})
        return result

    def ids_of_source(self, source: str) -> list[str]:
        """Ids of the chunks stored for one source (ids only: cheap even for a source of many chunks)."""
        with store_boundary("read record ids", self._where()):
            return [str(i) for i in self._collection.get(where={"source": source}, include=[])["ids"]]

    def all_ids(self) -> list[str]:
        """Every chunk id in the collection."""
        with store_boundary("read record ids", self._where()):
            return [str(i) for i in self._collection.get(include=[])["ids"]]

    def iter_texts(self, batch: int = 5000) -> Iterator[tuple[list[str], list[str]]]:
        """Yield (ids, texts) pages of the whole collection (used to rebuild the sparse index)."""
        total = self.count()
        for offset in range(0, total, batch):
            with store_boundary("read records", self._where()):
                res = self._collection.get(include=["documents"], limit=batch, offset=offset)
            yield [str(i) for i in res["ids"]], [d or "" for d in (res.get("documents") or [])]

    def sources(self) -> list[str]:
        """Distinct sources in the collection, sorted."""
        seen: set[str] = set()
        total = self.count()
        for offset in range(0, total, 5000):
            with store_boundary("read records", self._where()):
                res = self._collection.get(include=["metadatas"], limit=5000, offset=offset)
            for meta in res.get("metadatas") or []:
                if meta and "source" in meta:
                    seen.add(str(meta["source"]))
        return sorted(seen)

    def query(
        self,
        embedding: np.ndarray,
        k: int,
        where: Mapping[str, Any] | None = None,
        *,
        where_document: Mapping[str, Any] | None = None,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Top-``k`` chunks by cosine similarity (score = 1 - cosine distance), best first.

        ``where`` (metadata) and ``where_document`` (text) restrict the candidates before ranking.
        """
        check_filters(where, where_document)
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.ndim != 1 or vec.shape[-1] != self.dim:
            raise ModelMismatchError(f"Query vector has shape {vec.shape}, the index holds {self.dim}-d vectors.")
        if not np.isfinite(vec).all():
            raise InputError("The query vector holds NaN or infinite values; embed the query again with this model.")
        total = self.count()
        if total == 0 or k <= 0:
            return []
        n_results = min(k, total)
        deep = n_results > ID_BATCH  # Chroma would bind every hit as a sqlite variable: fetch the records in batches
        include: list[str] = ["distances"] if deep else ["documents", "metadatas", "distances"]
        if include_embeddings:
            include.append("embeddings")
        with store_boundary("search", self._where(), filters=bool(where or where_document)):
            res = self._collection.query(
                query_embeddings=[vec.tolist()],
                n_results=n_results,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                include=include,  # type: ignore[arg-type]
            )
        ids = [str(i) for i in res["ids"][0]]
        if deep:
            found = self._get_batched(ids, None, None, ["documents", "metadatas"])
            by_id = dict(zip(found["ids"], zip(found["documents"], found["metadatas"], strict=True), strict=True))
            docs = [by_id.get(cid, ("", None))[0] for cid in ids]
            metas = [by_id.get(cid, ("", None))[1] for cid in ids]
        else:
            docs = (res.get("documents") or [[]])[0]
            metas = (res.get("metadatas") or [[]])[0]
        dists = (res.get("distances") or [[]])[0]
        embs = res.get("embeddings")
        out = []
        for i, cid in enumerate(ids):
            meta: dict[str, Any] = dict(metas[i] or {})
            if include_embeddings and embs is not None:
                meta["_embedding"] = np.asarray(embs[0][i], dtype=np.float32)
            # a cosine in [-1, 1]: float noise can put Chroma's distance of a vector to itself at -1e-7
            cosine = min(1.0, max(-1.0, 1.0 - float(dists[i])))
            out.append(RetrievedChunk(cid, docs[i] or "", cosine, meta))
        return out
