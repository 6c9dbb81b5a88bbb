"""The BM25 side of a pipeline, kept in step with the Chroma store across processes and crashes.

:class:`SparseSide` owns a :class:`~m3e_rag.index.sparse.folder.SparseFolder` (embedded Chroma: beside the
index, ``<index>/sparse_bm25``; a Chroma server: a local cache folder keyed by the server address, the
collection's name and id, see :func:`server_cache_folder`) or, for a caller-supplied Chroma client, an
in-memory index. The rule it keeps: the BM25 side is used only when it matches the store's write
generation (:meth:`ChromaStore.generation`); otherwise it catches up first:

1. records another process of this machine appended to the folder's log (cheap, incremental);
2. if still behind (a writer killed between Chroma and the log, a writer on another machine, an old
   index), the id sets are compared and only the missing chunks' texts are fetched from the store.

A write records the generation it created, so the next process to open the folder trusts it
without reading a single id from the store (open is O(snapshot), not O(store)). Limitation: the
catch-up compares id sets, so a text overwritten in place under the same id by a writer that died
before logging it (or by another machine) is not seen; content-derived ids (ingest) never do that.

**A read-only index** (:attr:`ChromaStore.read_only`) takes no lock (no lock file can be made) and
writes nothing: its folder is used as it is when it matches the store; when it is missing, stale or
written by another tokenizer version, the BM25 index is built in memory from the stored texts instead
(every open pays that, logged at INFO), so searching never needs a write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from m3e_rag.errors import StoreError
from m3e_rag.index.chroma import ChromaStore
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.folder import SparseFolder

__all__ = ["SparseSide", "server_cache_folder", "sparse_folder", "SPARSE_CACHE_ENV", "SPARSE_DIR", "OLD_SPARSE_FILE"]

logger = logging.getLogger(__name__)

#: Folder of the BM25 side inside an embedded index folder.
SPARSE_DIR = "sparse_bm25"


def sparse_folder(index: Path, collection: str, default_collection: str = "m3e_rag") -> Path:
    """The BM25 folder of ``collection`` beside an embedded index: one per collection, the default keeps the plain name.

    The one place the name is made: the pipeline writes there and ``m3e-rag doctor`` checks and repairs there.
    """
    return index / (SPARSE_DIR if collection == default_collection else f"{SPARSE_DIR}-{collection}")
#: The single JSON file of m3e-rag <= 0.1 (replaced by :data:`SPARSE_DIR` on first open).
OLD_SPARSE_FILE = "sparse_bm25.json"
#: Environment variable naming the root of the BM25 caches of Chroma-server collections
#: (default ``$XDG_CACHE_HOME/m3e-rag/sparse`` or ``~/.cache/m3e-rag/sparse``).
SPARSE_CACHE_ENV = "M3E_RAG_SPARSE_CACHE"
_FETCH_PAGE = 2000


def server_cache_folder(url: str, collection: str, collection_id: str) -> Path:
    """The local folder of the BM25 side of a Chroma-server collection.

    Keyed by the server address, the collection's name and its id, so a collection dropped and
    created again under the same name never meets the old index.
    """
    root = os.environ.get(SPARSE_CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "m3e-rag" / "sparse"
    key = hashlib.sha256(json.dumps([url.rstrip("/"), collection, collection_id]).encode()).hexdigest()[:24]
    return base / key


class SparseSide:
    """The BM25 index of one store, persisted in ``folder`` (None: in memory only).

    Call :meth:`open`, :meth:`sync` and the writes while holding :meth:`locked`.
    """

    #: The folder kind kept (its ``index_type`` is the in-memory index): a learned-sparse side swaps both.
    folder_type: type[SparseFolder] = SparseFolder
    #: What the log lines call this side (a learned-sparse side says so).
    label = "BM25 index"
    #: The single-file index of older versions that this side's folder replaces (None: none to replace).
    old_file: str | None = OLD_SPARSE_FILE

    def __init__(self, store: ChromaStore, folder: Path | None) -> None:
        self.store = store
        self.folder = folder
        self._disk: SparseFolder | None = None
        self._memory: SparseIndex | None = None
        self._memory_generation: int | None = None
        self._flock: Any = None

    @property
    def index(self) -> SparseIndex:
        """The in-memory index (open first)."""
        if self._disk is not None:
            return self._disk.index
        assert self._memory is not None, "SparseSide.open() first"
        return self._memory

    @property
    def generation(self) -> int | None:
        """The store generation the BM25 side matches (None: unknown)."""
        return self._disk.generation if self._disk is not None else self._memory_generation

    @property
    def read_only(self) -> bool:
        """The index cannot be written: nothing is locked or written, a stale BM25 side is rebuilt in memory."""
        return self.store.read_only

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's write lock and the folder's lock (for a server: the folder's only; read-only: none)."""
        with ExitStack() as stack:
            stack.enter_context(self.store.open_lock())
            if self.folder is not None and not self.read_only:
                self.folder.mkdir(parents=True, exist_ok=True)
                if self._flock is None:
                    from filelock import FileLock

                    self._flock = FileLock(str(self.folder / ".lock"))  # one object: re-entrant
                stack.enter_context(self._flock)
            yield

    # -------------------------------------------------------------- opening and catching up
    def open(self, progress: Callable[[int, int], None] | None = None) -> SparseIndex:
        """Load the folder (or start one), then catch up with the store (call under :meth:`locked`).

        ``progress(done, total)`` is called after each page of texts fetched from the store while catching up
        (a first build from the stored texts: ``m3e-rag adopt``).
        """
        if self.folder is None:
            self._memory = self.folder_type.index_type()
            self._memory_generation = None
        else:
            try:
                self._disk = self.folder_type.open(self.folder, writable=not self.read_only)
            except StoreError as exc:
                if self.read_only:
                    logger.info("%s at %s is unusable (%s) and cannot be rewritten (read-only): "
                                "building it in memory from the stored texts", self.label, self.folder, exc)
                    self._memory, self._memory_generation = self.folder_type.index_type(), None
                else:
                    if (self.folder / "CURRENT").exists():
                        logger.warning("%s at %s is unusable (%s); rebuilding it from the store",
                                       self.label, self.folder, exc)
                    self._disk = self.folder_type.create(self.folder)
        self.sync(verify_count=True, progress=progress)
        old = (None if self.folder is None or self.store.path is None or self.old_file is None
               else self.folder.parent / self.old_file)
        if old is not None and old.exists() and not self.read_only:
            logger.info("replaced the old single-file BM25 index %s by the folder %s", old, self.folder)
            old.unlink(missing_ok=True)
        return self.index

    def sync(self, *, verify_count: bool = False, progress: Callable[[int, int], None] | None = None) -> bool:
        """Catch up with the store's current generation (call under :meth:`locked`); True if it changed.

        ``verify_count`` also compares the number of chunks with the store's (on open: a cheap guard
        against a generation file lost or copied without its index).
        """
        target = self.store.seen_generation
        changed = False
        if self._disk is not None and self._disk.generation != target:
            changed = self._disk.refresh()
        if self.generation == target and (not verify_count or len(self.index) == self.store.count()):
            return changed
        if self.read_only and self._disk is not None:  # a stale folder that cannot be caught up: rebuild in memory
            logger.info("%s at %s is behind the read-only store: building it in memory", self.label, self.folder)
            self._disk, self._memory, self._memory_generation = None, self.folder_type.index_type(), None
        self._catch_up_from_store(target, progress)
        return True

    def _catch_up_from_store(self, target: int, progress: Callable[[int, int], None] | None = None) -> None:
        """Compare id sets with the store; fetch only missing chunks' texts; drop extra ids."""
        stored = set(self.store.all_ids())
        held = self.index.ids()
        extra = sorted(held - stored)
        missing = sorted(stored - held)
        if extra or missing:
            logger.info("%s is behind the store (generation %s, store %s): %d to add, %d to drop",
                        self.label, self.generation, target, len(missing), len(extra))
        if extra:
            self._delete(extra, None)
        for start in range(0, len(missing), _FETCH_PAGE):
            page = missing[start : start + _FETCH_PAGE]
            records = self.store.get(ids=page)
            self._upsert([r.id for r in records], [r.text for r in records], None)
            if progress is not None:
                progress(start + len(page), len(missing))
        if self._disk is not None:
            self._disk.mark(target)
            self._disk.maybe_compact()
        else:
            self._memory_generation = target

    # -------------------------------------------------------------- writes
    def upsert(self, ids: Sequence[str], texts: Sequence[str], generation: int) -> None:
        """Add chunks, recording the store generation the write created."""
        self._upsert(list(ids), list(texts), generation)

    def delete(self, ids: Sequence[str], generation: int) -> None:
        """Remove chunks, recording the store generation the write created."""
        self._delete(list(ids), generation)

    def mark(self, generation: int) -> None:
        """Record that a write which touched no BM25 entry created ``generation``."""
        if self._disk is not None:
            self._disk.mark(generation)
        else:
            self._memory_generation = generation

    def _upsert(self, ids: list[str], texts: list[str], generation: int | None) -> None:
        if self._disk is not None:
            self._disk.upsert(ids, texts, generation)
        else:
            self.index.upsert(ids, texts)
            self._memory_generation = generation

    def _delete(self, ids: list[str], generation: int | None) -> None:
        if self._disk is not None:
            self._disk.delete(ids, generation)
        else:
            self.index.delete(ids)
            self._memory_generation = generation

    def maybe_compact(self) -> None:
        """Fold the log into a new snapshot when it has grown past its share (O(index), amortised)."""
        if self._disk is not None:
            self._disk.maybe_compact()

    def remove(self) -> None:
        """Delete the folder (the collection was dropped)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self._disk = None

