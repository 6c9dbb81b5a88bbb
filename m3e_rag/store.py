"""ChromaStore: a Chroma collection that only ever holds M3E vectors computed by m3e-rag.

What it guarantees, and why:

- **Embedded or server.** A ``PersistentClient`` at a folder by default; ``chromadb.HttpClient`` when
  given ``url`` (users outgrow one machine by running ``chroma run``).
- **Cosine space, and the model recorded.** The collection's metadata records model id, dimension,
  normalization and chunker settings. Opening it with another model is refused before anything
  is written, with a message that names the model that built it.
- **Chroma never embeds.** The collection is opened with ``embedding_function=None`` and every call
  passes vectors, so Chroma's default ONNX model can neither download nor run.
- **Content ids.** Ids derive from (source, chunk text, occurrence), so re-ingesting an unchanged
  file embeds nothing, and a changed file replaces exactly the chunks that changed.
- **Safe writers.** Writes go in batches under the client's max batch size and, for a folder,
  under an inter-process file lock: two unlocked writers corrupt Chroma silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from .errors import InputError, ModelMismatchError, StoreError
from .types import Metadata, RetrievedChunk

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["ChromaStore", "StoreRecord", "chunk_id", "DEFAULT_COLLECTION"]

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "m3e_rag"
_META_PREFIX = "m3e_rag:"
_FORMAT_VERSION = 1
#: Seconds a writer waits for another process's lock before giving up with a clear error.
LOCK_TIMEOUT_S = 3600.0


def chunk_id(source: str, text: str, occurrence: int = 0) -> str:
    """Content-derived id: the same chunk of the same source always gets the same id.

    ``occurrence`` tells apart identical chunks within one source (repeated boilerplate).
    """
    digest = hashlib.sha256(f"{source}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True)
class StoreRecord:
    """One chunk as stored: id, text, vector and metadata."""

    id: str
    text: str
    embedding: np.ndarray
    metadata: Metadata


def _clean_metadata(metadata: Mapping[str, Any]) -> Metadata | None:
    """Chroma rejects None values, nested values and empty dicts: drop or stringify them."""
    out: Metadata = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            out[str(key)] = value
        else:
            out[str(key)] = json.dumps(value, ensure_ascii=False, default=str)
    return out or None


class ChromaStore:
    """A Chroma collection guarded for one embedding model.

    Args:
        path: folder of an embedded (persistent) Chroma database. Ignored when ``url`` is given.
        url: address of a Chroma server (``http://127.0.0.1:8000``); use instead of ``path``.
        collection: collection name.
        model_id: the embedding model's name, recorded at creation and checked on every open.
        dim: embedding dimension, recorded and checked.
        normalize: whether vectors are L2-normalized (recorded).
        chunker: chunker settings (recorded, informational).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        url: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        model_id: str,
        dim: int,
        normalize: bool = True,
        chunker: Mapping[str, Any] | None = None,
    ) -> None:
        if path is None and url is None:
            raise InputError("ChromaStore needs a folder (path=...) or a Chroma server address (url=...).")
        self.path = None if url is not None else Path(path).expanduser().resolve()  # type: ignore[arg-type]
        self.url = url
        self.collection_name = collection
        self.model_id = model_id
        self.dim = int(dim)
        self.normalize = normalize
        self.chunker = dict(chunker or {})
        self._lock = None
        if self.path is not None:
            from filelock import FileLock

            if self.path.exists() and not self.path.is_dir():
                raise InputError(f"Index path {str(self.path)!r} is a file; pass a folder (it is created if missing).")
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.path / ".m3e-rag-write.lock"), timeout=LOCK_TIMEOUT_S)
        # Two processes creating one fresh database at once race on its schema: open under the lock.
        with self.write_lock():
            self._client = self._connect()
            self._collection = self._open_collection()

    # ------------------------------------------------------------- connecting
    def _connect(self) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self.url is not None:
            parsed = urlparse(self.url if "://" in self.url else f"http://{self.url}")
            if not parsed.hostname:
                raise InputError(f"chroma_url {self.url!r} is not an address; use e.g. http://127.0.0.1:8000")
            port = parsed.port or (443 if parsed.scheme == "https" else 8000)
            try:
                client = chromadb.HttpClient(
                    host=parsed.hostname, port=port, ssl=parsed.scheme == "https", settings=settings
                )
                client.heartbeat()
            except Exception as exc:
                raise StoreError(
                    f"Cannot reach the Chroma server at {self.url} ({exc}); start one with "
                    "`chroma run --path DIR --host 127.0.0.1 --port 8000`, or drop chroma_url to use a local folder."
                ) from exc
            return client
        assert self.path is not None
        return chromadb.PersistentClient(path=str(self.path), settings=settings)

    def _expected_metadata(self) -> dict[str, Any]:
        return {
            f"{_META_PREFIX}model": self.model_id,
            f"{_META_PREFIX}dim": self.dim,
            f"{_META_PREFIX}normalize": self.normalize,
            f"{_META_PREFIX}chunker": json.dumps(self.chunker, sort_keys=True),
            f"{_META_PREFIX}format": _FORMAT_VERSION,
        }

    def _where(self) -> str:
        return self.url or str(self.path)

    def _open_collection(self) -> Collection:
        from chromadb.errors import NotFoundError

        try:
            existing = self._client.get_collection(self.collection_name, embedding_function=None)
        except (NotFoundError, ValueError):
            existing = None
        if existing is None:
            return self._client.create_collection(
                self.collection_name,
                configuration={"hnsw": {"space": "cosine"}},
                metadata=self._expected_metadata(),
                embedding_function=None,
            )
        meta = existing.metadata or {}
        built_model = meta.get(f"{_META_PREFIX}model")
        built_dim = meta.get(f"{_META_PREFIX}dim")
        if built_model is None:
            raise ModelMismatchError(
                f"Collection {self.collection_name!r} at {self._where()} was not created by m3e-rag (no model "
                "recorded); use another collection name or index folder."
            )
        if built_dim != self.dim or built_model != self.model_id:
            raise ModelMismatchError(
                f"The index at {self._where()} (collection {self.collection_name!r}) was built with model "
                f"{built_model!r} ({built_dim}-d), but you opened it with {self.model_id!r} ({self.dim}-d). "
                f"Open it with model {built_model!r}, or rebuild: ingest into a new index folder or collection "
                "(the existing one is untouched)."
            )
        built_chunker = meta.get(f"{_META_PREFIX}chunker")
        if self.chunker and built_chunker not in (None, json.dumps(self.chunker, sort_keys=True)):
            logger.info(
                "Index was chunked with %s; now chunking with %s. Re-ingested files get the new chunks.",
                built_chunker, self.chunker,
            )
        return existing

    # --------------------------------------------------------------- writing
    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the inter-process write lock (a no-op for a server, which serializes writes itself)."""
        if self._lock is None:
            yield
            return
        from filelock import Timeout

        try:
            with self._lock:
                yield
        except Timeout as exc:
            raise StoreError(
                f"Another process has held the write lock on {self.path} for {LOCK_TIMEOUT_S:.0f} s; "
                "wait for its ingest to end, or remove the stale lock file if no process is writing."
            ) from exc

    @property
    def max_batch_size(self) -> int:
        """Largest number of records Chroma accepts in one add/upsert."""
        try:
            return max(1, int(self._client.get_max_batch_size()))
        except Exception:  # older servers lack the endpoint
            return 1000

    def upsert(self, records: Sequence[StoreRecord]) -> None:
        """Insert or overwrite records, in batches under the client's limit. Call under write_lock()."""
        if not records:
            return
        dims = {int(r.embedding.shape[-1]) for r in records}
        if dims != {self.dim}:
            raise ModelMismatchError(
                f"Embeddings of dimension {sorted(dims)} cannot go into an index of {self.dim}-d vectors."
            )
        step = self.max_batch_size
        for start in range(0, len(records), step):
            batch = records[start : start + step]
            self._collection.upsert(
                ids=[r.id for r in batch],
                embeddings=np.stack([r.embedding for r in batch]).astype(np.float32),
                documents=[r.text for r in batch],
                metadatas=[_clean_metadata(r.metadata) for r in batch],  # type: ignore[misc]
            )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Replace the metadata of existing records without touching their vectors."""
        step = self.max_batch_size
        for start in range(0, len(ids), step):
            self._collection.update(
                ids=list(ids[start : start + step]),
                metadatas=[_clean_metadata(m) for m in metadatas[start : start + step]],  # type: ignore[misc]
            )

    def delete(self, ids: Sequence[str] | None = None, where: Mapping[str, Any] | None = None) -> int:
        """Delete records by id and/or metadata filter; returns how many were deleted."""
        if ids is None and where is None:
            raise InputError("delete() needs ids or a where filter; to drop everything, delete the index folder.")
        found = self.get(ids=ids, where=where, include_text=False)
        doomed = [r.id for r in found]
        step = self.max_batch_size
        for start in range(0, len(doomed), step):
            self._collection.delete(ids=doomed[start : start + step])
        return len(doomed)

    # --------------------------------------------------------------- reading
    def count(self) -> int:
        """Number of chunks stored."""
        return int(self._collection.count())

    def get(
        self,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        include_text: bool = True,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Fetch stored chunks by id and/or filter (score 0.0), in the order Chroma returns them."""
        include: list[str] = ["metadatas"]
        if include_text:
            include.append("documents")
        if include_embeddings:
            include.append("embeddings")
        out: list[RetrievedChunk] = []
        id_list = list(ids) if ids is not None else None
        if id_list is not None and not id_list:
            return out
        res = self._collection.get(ids=id_list, where=dict(where) if where else None, include=include)  # type: ignore[arg-type]
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
            res = self._collection.get(where=where, include=["metadatas"])
            for cid, meta in zip(res["ids"], res.get("metadatas") or [], strict=False):
                src = str((meta or {}).get("source", ""))
                result.setdefault(src, {})[cid] = dict(meta or {})
        return result

    def all_ids(self) -> list[str]:
        """Every chunk id in the collection."""
        return [str(i) for i in self._collection.get(include=[])["ids"]]

    def iter_texts(self, batch: int = 5000) -> Iterator[tuple[list[str], list[str]]]:
        """Yield (ids, texts) pages of the whole collection (used to rebuild the sparse index)."""
        total = self.count()
        for offset in range(0, total, batch):
            res = self._collection.get(include=["documents"], limit=batch, offset=offset)
            yield [str(i) for i in res["ids"]], [d or "" for d in (res.get("documents") or [])]

    def sources(self) -> list[str]:
        """Distinct sources in the collection, sorted."""
        seen: set[str] = set()
        total = self.count()
        for offset in range(0, total, 5000):
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
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Top-``k`` chunks by cosine similarity (score = 1 - cosine distance), best first."""
        total = self.count()
        if total == 0 or k <= 0:
            return []
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.shape[-1] != self.dim:
            raise ModelMismatchError(f"Query vector has dimension {vec.shape[-1]}, the index holds {self.dim}-d.")
        include: list[str] = ["documents", "metadatas", "distances"]
        if include_embeddings:
            include.append("embeddings")
        res = self._collection.query(
            query_embeddings=[vec.tolist()],
            n_results=min(k, total),
            where=dict(where) if where else None,
            include=include,  # type: ignore[arg-type]
        )
        ids = res["ids"][0]
        docs = (res.get("documents") or [[]])[0]
        metas = (res.get("metadatas") or [[]])[0]
        dists = (res.get("distances") or [[]])[0]
        embs = res.get("embeddings")
        out = []
        for i, cid in enumerate(ids):
            meta: dict[str, Any] = dict(metas[i] or {})
            if include_embeddings and embs is not None:
                meta["_embedding"] = np.asarray(embs[0][i], dtype=np.float32)
            out.append(RetrievedChunk(cid, docs[i] or "", 1.0 - float(dists[i]), meta))
        return out

    def describe(self) -> dict[str, Any]:
        """What built this index: model, dim, normalization, chunker settings, and its location."""
        meta = self._collection.metadata or {}
        chunker = meta.get(f"{_META_PREFIX}chunker")
        return {
            "model": meta.get(f"{_META_PREFIX}model"),
            "dim": meta.get(f"{_META_PREFIX}dim"),
            "normalize": meta.get(f"{_META_PREFIX}normalize"),
            "chunker": json.loads(chunker) if isinstance(chunker, str) else None,
            "collection": self.collection_name,
            "location": self._where(),
        }


def read_index_model(path: str | Path | None = None, url: str | None = None,
                     collection: str = DEFAULT_COLLECTION) -> tuple[str, int] | None:
    """The (model id, dim) an existing index was built with, or None if there is no such index.

    Lets the CLI open an index with the model that built it when the user names none.
    """
    import chromadb
    from chromadb.config import Settings
    from chromadb.errors import NotFoundError

    settings = Settings(anonymized_telemetry=False)
    if url is None:
        if path is None or not Path(path).expanduser().is_dir():
            return None
        client: ClientAPI = chromadb.PersistentClient(path=str(Path(path).expanduser().resolve()), settings=settings)
    else:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        client = chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                     ssl=parsed.scheme == "https", settings=settings)
    try:
        col = client.get_collection(collection, embedding_function=None)
    except (NotFoundError, ValueError):
        return None
    meta = col.metadata or {}
    model = meta.get(f"{_META_PREFIX}model")
    dim = meta.get(f"{_META_PREFIX}dim")
    if not isinstance(model, str) or not isinstance(dim, int):
        return None
    return model, dim
