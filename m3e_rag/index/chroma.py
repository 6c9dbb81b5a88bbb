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
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from m3e_rag.errors import InputError, ModelMismatchError, StoreError
from m3e_rag.index.boundary import check_filters, store_boundary, translate_store_error
from m3e_rag.index.integrity import (
    SQLITE_FILE,
    check_after_open,
    check_before_open,
    forget_collection,
    record_collection,
)
from m3e_rag.types import Metadata, RetrievedChunk

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["ChromaStore", "StoreRecord", "chunk_id", "DEFAULT_COLLECTION"]

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "m3e_rag"
_META_PREFIX = "m3e_rag:"
_FORMAT_VERSION = 1
_GENERATION_KEY = f"{_META_PREFIX}generation"
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
    """Drop None values (Chroma rejects them) and refuse values Chroma cannot store or filter on.

    Chroma stores str, int, float and bool (and, in 1.x, non-empty lists of one such type). A dict
    (nested metadata) or any other object is refused with the key named, as Chroma itself does;
    it used to be turned into a JSON string silently, which no filter could then match.
    """
    out: Metadata = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, (str, int, float, bool)):
            out[str(key)] = value
        elif isinstance(value, list) and value and len({_scalar_kind(v) for v in value} - {None}) == 1 and all(
            _scalar_kind(v) for v in value
        ):
            out[str(key)] = list(value)
        else:
            raise InputError(
                f"Metadata value for key {key!r} is {type(value).__name__} ({value!r:.60}); Chroma stores only str, "
                "int, float, bool or a non-empty list of one of those. Flatten it (e.g. "
                f"{{'{key}.field': ...}}) or store it as a JSON string yourself."
            )
    return out or None


def _scalar_kind(value: object) -> str | None:
    """'bool', 'number' or 'str' for a value Chroma can store in a metadata list, else None."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else None


def _user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Collection metadata given by the caller (LangChain's ``collection_metadata``), checked.

    Keys under ``m3e_rag:`` are the model guard's and are refused; ``hnsw:space`` may only be
    ``cosine`` (the index always uses cosine space; other ``hnsw:*`` tuning keys are passed on).
    """
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or key.startswith(_META_PREFIX):
            raise InputError(f"collection_metadata key {key!r} is reserved for m3e-rag's model guard; rename it.")
        if key == "hnsw:space":
            if value != "cosine":
                raise InputError(
                    f"collection_metadata {{'hnsw:space': {value!r}}} is refused: m3e-rag indexes are always cosine "
                    "space (normalized M3E vectors); drop the key."
                )
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(f"collection_metadata[{key!r}] must be a str, int, float or bool, got {value!r}.")
        out[key] = value
    return out


def _same_model(recorded: str, current: str) -> bool:
    """Whether two model names are one model: equal, or two spellings of one local folder."""
    if recorded == current:
        return True
    try:
        a, b = Path(recorded).expanduser(), Path(current).expanduser()
        return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


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
        client: ClientAPI | None = None,
        settings: Any = None,
        headers: Mapping[str, str] | None = None,
        collection_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        # client / settings / headers / collection_metadata: see _connect() and _user_metadata() (LangChain's
        # Chroma names: a ready chromadb client, chromadb Settings, HTTP headers for a server with auth).
        self._given_client = client
        self._settings = settings
        self._headers = dict(headers) if headers else None
        self._user_meta = _user_metadata(collection_metadata)
        if client is not None:
            path, url = None, None
        elif path is None and url is None:
            raise InputError("ChromaStore needs a folder (path=...) or a Chroma server address (url=...).")
        self.path = None if url is not None or path is None else Path(path).expanduser().resolve()
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
            with store_boundary("create the index folder", str(self.path)):
                self.path.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.path / ".m3e-rag-write.lock"), timeout=LOCK_TIMEOUT_S)
        # Two processes creating one fresh database at once race on its schema: open under the lock.
        with self.write_lock(), store_boundary("open the index", self._where()):
            if self.path is not None:  # before Chroma touches it: an emptied sqlite must not open as a new index
                check_before_open(self.path, self.collection_name)
            self._client = self._connect()
            self._collection = self._open_collection()
            self._check_opened()
            self._seen_generation = self.generation()

    def _check_opened(self) -> None:
        """For a folder: the HNSW files must serve every record; then record the collection in the manifest."""
        if self.path is None:
            return
        coll_id = str(self._collection.id)
        check_after_open(self.path, coll_id, int(self._collection.count()), self.collection_name)
        try:
            record_collection(self.path, self.collection_name, coll_id, self.model_id, self.dim)
        except OSError as exc:  # a read-only folder can still be searched
            logger.debug("could not record the collection in %s: %s", self.path, exc)

    # ------------------------------------------------------------- connecting
    def _connect(self) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings

        if self._given_client is not None:
            return self._given_client
        settings = self._settings if self._settings is not None else Settings(anonymized_telemetry=False)
        if self.url is not None:
            parsed = urlparse(self.url if "://" in self.url else f"http://{self.url}")
            if not parsed.hostname:
                raise InputError(f"chroma_url {self.url!r} is not an address; use e.g. http://127.0.0.1:8000")
            port = parsed.port or (443 if parsed.scheme == "https" else 8000)
            try:
                client = chromadb.HttpClient(
                    host=parsed.hostname, port=port, ssl=parsed.scheme == "https", headers=self._headers,
                    settings=settings,
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
            **self._user_meta,
            f"{_META_PREFIX}model": self.model_id,
            f"{_META_PREFIX}dim": self.dim,
            f"{_META_PREFIX}normalize": self.normalize,
            f"{_META_PREFIX}chunker": json.dumps(self.chunker, sort_keys=True),
            f"{_META_PREFIX}format": _FORMAT_VERSION,
        }

    def _where(self) -> str:
        if self._given_client is not None and self.path is None and self.url is None:
            return "the given Chroma client"
        return self.url or str(self.path)

    def drop(self) -> None:
        """Delete the whole collection (records, vectors and the model guard) from the database."""
        with self.write_lock(), store_boundary("delete the collection", self._where()):
            self._client.delete_collection(self.collection_name)
            if self.path is not None:
                forget_collection(self.path, self.collection_name)  # dropped on purpose: not damage

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
        with store_boundary("read records", self._where(), filters=bool(where or where_document)):
            res = self._collection.get(
                ids=list(ids) if ids is not None else None,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                limit=limit,
                offset=offset,
                include=list(include),  # type: ignore[arg-type]
            )
        return dict(res)

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
        if built_dim != self.dim or not _same_model(str(built_model), self.model_id):
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

    # ------------------------------------------------- generation (other processes' writes)
    # A counter bumped by every write BEFORE it touches the records: a reader compares it with the
    # value it last saw (one cheap read) and, when another process moved it, reconnects (an embedded
    # client keeps its HNSW index in memory and would serve stale vectors) and lets its BM25 side
    # catch up. A writer killed after the bump leaves the counter ahead of the BM25 log, which is how
    # that crash is detected. For a folder the counter is a small file beside chroma.sqlite3 (a
    # read costs microseconds; a Chroma metadata update cost 28 ms, more than the write it guards);
    # for a server it is a key of the collection's metadata, shared by every client of the server.
    def _generation_file(self) -> Path | None:
        if self.path is None:
            return None
        return self.path / f".m3e-rag-generation-{self.collection_name}"

    def generation(self) -> int:
        """The collection's write generation as stored now (not cached)."""
        path = self._generation_file()
        if path is not None:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return 0
            except OSError as exc:
                raise translate_store_error(exc, "read the generation file", self._where()) or StoreError(
                    str(exc)) from exc
            try:
                return int(raw.strip() or b"0")
            except ValueError:
                return 0  # damaged: anything not equal to a BM25 log's generation makes it catch up
        with store_boundary("read the collection", self._where()):
            fresh = self._client.get_collection(self.collection_name, embedding_function=None)
        return _generation_of(fresh.metadata)

    @property
    def seen_generation(self) -> int:
        """The generation this store last saw, read or wrote."""
        return self._seen_generation

    def bump_generation(self) -> int:
        """Advance the generation before a write (call under :meth:`write_lock`); returns the new value."""
        path = self._generation_file()
        if path is not None:
            new = max(self.generation(), self._seen_generation) + 1
            with store_boundary("write the generation file", self._where()):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:  # 20 bytes rewritten in place: whole in the page cache even if the process dies
                    os.pwrite(fd, f"{new:<19d}\n".encode(), 0)
                finally:
                    os.close(fd)
            self._seen_generation = new
            return new
        with store_boundary("update the collection", self._where()):
            fresh = self._client.get_collection(self.collection_name, embedding_function=None)
            meta = dict(fresh.metadata or {})
            new = _generation_of(meta) + 1
            meta[_GENERATION_KEY] = new
            fresh.modify(metadata=meta)
        self._seen_generation = new
        return new

    def refresh_if_moved(self) -> int | None:
        """Re-read the generation; if another process moved it, reconnect and return it (else None)."""
        current = self.generation()
        if current == self._seen_generation:
            return None
        self.reconnect()
        self._seen_generation = current
        return current

    def reconnect(self) -> None:
        """Drop this folder's cached Chroma client and open it again, so other processes' vectors show.

        chromadb shares one client system per folder within a process and keeps the HNSW index in
        memory; only a new system reads what another process wrote. Other stores of this process
        on the same folder keep the old system until they reconnect themselves (each does when the
        generation moves). A server client reads through the server and needs nothing.
        """
        if self.path is None or self._given_client is not None:
            return
        from chromadb.api.shared_system_client import SharedSystemClient

        identifier = getattr(self._client, "_identifier", None)
        if identifier is not None:
            SharedSystemClient._identifier_to_system.pop(identifier, None)
            SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        with store_boundary("reopen the index", self._where()):
            self._client = self._connect()
            self._collection = self._client.get_collection(self.collection_name, embedding_function=None)

    # --------------------------------------------------------------- writing
    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the inter-process write lock (a no-op for a server, which serializes writes itself)."""
        if self._lock is None:
            yield
            return
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout as exc:
            raise StoreError(
                f"Another process has held the write lock on {self.path} for {LOCK_TIMEOUT_S:.0f} s; "
                "wait for its ingest to end, or remove the stale lock file if no process is writing."
            ) from exc
        except OSError as exc:  # a read-only folder cannot hold the lock file
            raise translate_store_error(exc, "take the write lock", self._where()) or StoreError(str(exc)) from exc
        try:
            yield
        finally:
            self._lock.release()

    @property
    def collection_id(self) -> str:
        """The Chroma collection's id (a UUID string): it names the server-mode BM25 cache folder."""
        return str(self._collection.id)

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
            vectors = np.stack([r.embedding for r in batch]).astype(np.float32)
            if not np.isfinite(vectors).all():
                raise InputError("Some embeddings hold NaN or infinite values; embed those texts again (nothing was "
                                 "written from this batch).")
            metadatas = [_clean_metadata(r.metadata) for r in batch]
            with store_boundary("write records", self._where()):
                self._collection.upsert(
                    ids=[r.id for r in batch],
                    embeddings=vectors,
                    documents=[r.text for r in batch],
                    metadatas=metadatas,  # type: ignore[arg-type]
                )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Replace the metadata of existing records without touching their vectors."""
        step = self.max_batch_size
        for start in range(0, len(ids), step):
            cleaned = [_clean_metadata(m) for m in metadatas[start : start + step]]
            with store_boundary("update metadata", self._where()):
                self._collection.update(ids=list(ids[start : start + step]), metadatas=cleaned)  # type: ignore[arg-type]

    def delete(
        self,
        ids: Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        where_document: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete records by id, metadata filter and/or document filter (all must match); returns how many."""
        if ids is None and not where and not where_document:
            raise InputError(
                "delete() needs ids, a where filter or a where_document filter; to drop everything, delete the "
                "index folder."
            )
        found = self.get(ids=ids, where=where, where_document=where_document, include_text=False)
        doomed = [r.id for r in found]
        step = self.max_batch_size
        with store_boundary("delete records", self._where()):
            for start in range(0, len(doomed), step):
                self._collection.delete(ids=doomed[start : start + step])
        return len(doomed)

    # --------------------------------------------------------------- reading
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
        with store_boundary("read records", self._where(), filters=bool(where or where_document)):
            res = self._collection.get(
                ids=id_list,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
                include=include,  # type: ignore[arg-type]
            )
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
        include: list[str] = ["documents", "metadatas", "distances"]
        if include_embeddings:
            include.append("embeddings")
        with store_boundary("search", self._where(), filters=bool(where or where_document)):
            res = self._collection.query(
                query_embeddings=[vec.tolist()],
                n_results=min(k, total),
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
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


def _generation_of(metadata: Mapping[str, Any] | None) -> int:
    value = (metadata or {}).get(_GENERATION_KEY, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_index_model(path: str | Path | None = None, url: str | None = None,
                     collection: str = DEFAULT_COLLECTION) -> tuple[str, int] | None:
    """The (model id, dim) an existing index was built with, or None if there is no such index.

    Lets the CLI open an index with the model that built it when the user names none.
    """
    import chromadb
    from chromadb.config import Settings
    from chromadb.errors import NotFoundError

    settings = Settings(anonymized_telemetry=False)
    location = url or str(path)
    with store_boundary("open the index", location):
        if url is None:
            if path is None or not Path(path).expanduser().is_dir():
                return None
            folder = Path(path).expanduser().resolve()
            check_before_open(folder, collection)  # never let Chroma turn an emptied database into a new one
            if not (folder / SQLITE_FILE).exists():
                return None
            client: ClientAPI = chromadb.PersistentClient(path=str(folder), settings=settings)
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
