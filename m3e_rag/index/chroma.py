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
- **Read-only folders are searchable.** A folder this process cannot write (a read-only mount, a
  container image) opens without the write lock, through a private copy of its Chroma files
  (:func:`~m3e_rag.index.connect.read_only_copy`); searching and reading work, and a write is refused
  with :class:`~m3e_rag.errors.StoreError` saying the folder is read-only.
- **Metadata checked before writing.** Every record's metadata of a call is checked
  (:mod:`m3e_rag.index.metadata`) before the first batch is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from m3e_rag.errors import InputError, ModelMismatchError, StoreError
from m3e_rag.index.boundary import store_boundary, translate_store_error
from m3e_rag.index.chroma_version import check_chroma_version
from m3e_rag.index.connect import connect, folder_is_read_only, forget_shared_system, read_only_copy
from m3e_rag.index.generation import (
    bump_server_generation,
    generation_file,
    read_generation_file,
    read_server_generation,
    write_generation_file,
)
from m3e_rag.index.guard import (
    META_PREFIX,
    check_built_model,
    expected_metadata,
    recorded_model,
    user_metadata,
)
from m3e_rag.index.integrity import (
    SQLITE_FILE,
    WRITE_LOCK_FILE,
    check_after_open,
    check_before_open,
    collection_id,
    forget_collection,
    model_in_sqlite,
    record_checked,
    record_collection,
)
from m3e_rag.index.metadata import clean_metadata
from m3e_rag.index.reads import StoreReads
from m3e_rag.types import Metadata

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["ChromaStore", "StoreRecord", "chunk_id", "chroma_objects", "DEFAULT_COLLECTION"]

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "m3e_rag"
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


class ChromaStore(StoreReads):
    """A Chroma collection guarded for one embedding model.

    Reading (``get``, ``page``, ``query``, id lookups, ``describe``) is inherited from
    :class:`~m3e_rag.index.reads.StoreReads`.

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
        self._user_meta = user_metadata(collection_metadata)
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
        self._copy: Any = None  # the private copy a read-only folder is searched through
        #: The folder cannot be written by this process: it is searched through a private copy, writes are refused.
        self.read_only = self.path is not None and folder_is_read_only(self.path)
        if self.path is not None and not self.read_only:
            from filelock import FileLock

            if self.path.exists() and not self.path.is_dir():
                raise InputError(f"Index path {str(self.path)!r} is a file; pass a folder (it is created if missing).")
            with store_boundary("create the index folder", str(self.path)):
                self.path.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.path / WRITE_LOCK_FILE), timeout=LOCK_TIMEOUT_S)
        # Two processes creating one fresh database at once race on its schema: open under the lock.
        with self.open_lock(), store_boundary("open the index", self._where()):
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
        if self.read_only:
            return
        record_checked(self.path)  # after Chroma's own open wrote to the file: see m3e_rag.index.integrity
        try:
            record_collection(self.path, self.collection_name, coll_id, self.model_id, self.dim)
        except OSError as exc:
            logger.debug("could not record the collection in %s: %s", self.path, exc)

    # ------------------------------------------------------------- connecting
    def _connect(self) -> ClientAPI:
        if not (self.read_only and self.path is not None):
            return connect(self._given_client, self._settings, self.url, self.path, self._headers)
        old, self._copy = self._copy, read_only_copy(self.path)
        if old is not None:
            old.cleanup()
        client = connect(None, self._settings, None, Path(self._copy.name), None)
        weakref.finalize(self, forget_shared_system, client)  # chromadb caches a system per (copy) folder
        return client

    def _expected_metadata(self) -> dict[str, Any]:
        return expected_metadata(self._user_meta, self.model_id, self.dim, self.normalize, self.chunker)

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

    def _open_collection(self) -> Collection:
        from chromadb.errors import NotFoundError

        try:
            existing = self._client.get_collection(self.collection_name, embedding_function=None)
        except (NotFoundError, ValueError):
            existing = None
        if existing is None:
            if self.read_only:
                raise StoreError(
                    f"The read-only index at {self._where()} has no collection {self.collection_name!r}, and it "
                    "cannot be created there; pass --collection with an existing one, or a writable folder."
                )
            return self._client.create_collection(
                self.collection_name,
                configuration={"hnsw": {"space": "cosine"}},
                metadata=self._expected_metadata(),
                embedding_function=None,
            )
        meta = existing.metadata or {}
        check_built_model(meta, self.collection_name, self._where(), self.model_id, self.dim)
        built_chunker = meta.get(f"{META_PREFIX}chunker")
        if self.chunker and built_chunker not in (None, json.dumps(self.chunker, sort_keys=True)):
            logger.info(
                "Index was chunked with %s; now chunking with %s. Re-ingested files get the new chunks.",
                built_chunker, self.chunker,
            )
        return existing

    # ------------------------------------------------- generation (other processes' writes)
    # A counter bumped by every write BEFORE it touches the records (see m3e_rag.index.generation).
    def _generation_file(self) -> Path | None:
        return generation_file(self.path, self.collection_name)

    def generation(self) -> int:
        """The collection's write generation as stored now (not cached)."""
        path = self._generation_file()
        if path is not None:
            return read_generation_file(path, self._where())
        return read_server_generation(self._client, self.collection_name, self._where())

    @property
    def seen_generation(self) -> int:
        """The generation this store last saw, read or wrote."""
        return self._seen_generation

    def bump_generation(self) -> int:
        """Advance the generation before a write (call under :meth:`write_lock`); returns the new value."""
        path = self._generation_file()
        if path is not None:
            new = max(self.generation(), self._seen_generation) + 1
            write_generation_file(path, new, self._where())
        else:
            new = bump_server_generation(self._client, self.collection_name, self._where())
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
        forget_shared_system(self._client)
        with store_boundary("reopen the index", self._where()):
            self._client = self._connect()
            self._collection = self._client.get_collection(self.collection_name, embedding_function=None)

    # --------------------------------------------------------------- writing
    def require_writable(self, action: str = "write to it") -> None:
        """Raise :class:`StoreError` if this index is read-only (searching it works; writing needs a writable copy)."""
        if self.read_only:
            raise StoreError(
                f"The index at {self._where()} is read-only (a read-only mount or folder): it can be searched, but "
                f"not written; to {action}, copy the folder somewhere writable and use the copy."
            )

    @contextmanager
    def open_lock(self) -> Iterator[None]:
        """The write lock, for opening and catching up; nothing for a read-only folder (no lock file can be made)."""
        if self.read_only:
            yield
            return
        with self.write_lock():
            yield

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the inter-process write lock (a no-op for a server, which serializes writes itself).

        Raises:
            StoreError: for a read-only folder (see :meth:`require_writable`).
        """
        self.require_writable()
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
        # Every record's metadata first: a bad key in the last batch must not leave the first ones written.
        cleaned = [clean_metadata(r.metadata, f"the metadata of record {r.id!r}") for r in records]
        step = self.max_batch_size
        for start in range(0, len(records), step):
            batch = records[start : start + step]
            vectors = np.stack([r.embedding for r in batch]).astype(np.float32)
            if not np.isfinite(vectors).all():
                raise InputError("Some embeddings hold NaN or infinite values; embed those texts again (nothing was "
                                 "written from this batch).")
            metadatas = cleaned[start : start + step]
            with store_boundary("write records", self._where()):
                self._collection.upsert(
                    ids=[r.id for r in batch],
                    embeddings=vectors,
                    documents=[r.text for r in batch],
                    metadatas=metadatas,  # type: ignore[arg-type]
                )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Replace the metadata of existing records without touching their vectors."""
        every = [clean_metadata(m, f"the metadata of record {i!r}") for i, m in zip(ids, metadatas, strict=True)]
        step = self.max_batch_size
        for start in range(0, len(ids), step):
            with store_boundary("update metadata", self._where()):
                self._collection.update(ids=list(ids[start : start + step]),
                                        metadatas=every[start : start + step])  # type: ignore[arg-type]

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
        if url is None:  # read from sqlite itself: opening through Chroma writes (and a read-only folder refuses)
            if path is None or not Path(path).expanduser().is_dir():
                return None
            folder = Path(path).expanduser().resolve()
            check_before_open(folder, collection)  # never let Chroma turn an emptied database into a new one
            if not (folder / SQLITE_FILE).exists():
                return None
            check_chroma_version()  # Chroma's schema is read directly
            coll_id = collection_id(folder, collection)
            if coll_id is None:
                return None
            model, dim = model_in_sqlite(folder, coll_id)
            return None if model is None or dim is None else (model, dim)
        parsed = urlparse(url if "://" in url else f"http://{url}")
        client = chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                     ssl=parsed.scheme == "https", settings=settings)
        try:
            col = client.get_collection(collection, embedding_function=None)
        except (NotFoundError, ValueError):
            return None
        meta = col.metadata or {}
    return recorded_model(meta)


def chroma_objects(store: ChromaStore) -> tuple[ClientAPI, Collection]:
    """Chroma's own client and collection under ``store`` (opened), for callers that need Chroma's API itself.

    LangChain users reach ``vectorstore._client`` / ``._collection`` (``db._collection.count()`` is a
    tutorial idiom); the adapter answers them from here. Reading through them is safe; writing
    through them bypasses the model guard and the BM25 side (``m3e-rag doctor --repair`` rebuilds it).
    """
    return store._client, store._collection
