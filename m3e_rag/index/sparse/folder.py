r"""The BM25 index on disk: a snapshot folder plus an append-only log, crash-safe under kill -9.

A write costs O(size of the write), independent of the index size: it appends one record (the
chunk ids and their terms, already tokenized, never a pickle) to the log and fsyncs it. When the
log outgrows a share of the snapshot (:data:`LOG_MIN_RECORDS`, :data:`LOG_SHARE`), the next write
folds everything into a new snapshot: amortised O(1) per chunk. Layout::

    sparse_bm25/
      CURRENT              {"format": ..., "snapshot": "snap-000003"}   (replaced atomically)
      snap-000003/
        meta.json          versions, BM25 parameters, count, id-set fingerprint, store generation,
                           SHA-256 of ids.json and terms.json
        ids.json terms.json               chunk ids by position; the term table
        doc_len.npy ptr.npy pos.npy tf.npy  lengths and the term-major postings (memory-mapped)
        log.jsonl          one record a line: "<crc32 hex> <json>\n", ops u(psert) d(elete) g(eneration)
      .lock                inter-process lock of the folder's writers

Crash safety: a snapshot is written to a temporary folder, fsynced, renamed, and only then named
by ``CURRENT`` (``os.replace``); a record is valid only whole, with its checksum, so a writer
killed mid-append leaves a torn last line that readers skip and the next writer truncates.
Appends are not fsynced (a kill -9 loses nothing the kernel holds; an fsync per write cost more than
Chroma's own upsert of one record, figures: benchmarks/README.md, 'Design figures'); after a power loss
the folder may lack the last records, which the caller sees as a count or generation mismatch and
catches up from the store.
Every record carries the store's *generation* (a counter in the Chroma collection's metadata,
bumped before every write): a folder whose last generation differs from the store's is stale
(a writer died between Chroma and the log, or another machine wrote to a Chroma server), and the
caller catches it up from the store instead of trusting it.

The snapshot half (its files, atomic writing, checked reading) is :mod:`m3e_rag.index.sparse.snapshot`;
:func:`save_index` and :func:`load_index` write and read a plain :class:`SparseIndex` this way.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.errors import StoreError
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.snapshot import (
    LOG,
    REBUILD,
    current_snapshot,
    json_bytes,
    read_snapshot,
    write_snapshot,
)
from m3e_rag.index.sparse.tokenize import tokenize_for_bm25

__all__ = ["SparseFolder", "LOG_MIN_RECORDS", "LOG_SHARE", "load_index", "save_index"]

logger = logging.getLogger(__name__)

#: Fold the log into a new snapshot once it holds more chunk operations than this and more than
#: :data:`LOG_SHARE` of the snapshot's chunks (so replaying it on open stays a fraction of loading).
LOG_MIN_RECORDS = 5_000
LOG_SHARE = 0.05


def _record_line(record: dict[str, Any]) -> bytes:
    body = json_bytes(record)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


class SparseFolder:
    """A :class:`~m3e_rag.index.sparse.bm25.SparseIndex` kept in a folder: snapshot + log, shared by processes.

    Open with :meth:`open` (or :meth:`create` for a fresh one). Writers hold :meth:`lock` around
    a write and the store write it mirrors; :meth:`refresh` reads what other processes appended.

    Attributes:
        folder: the folder.
        index: the in-memory index (the snapshot with the log replayed).
        generation: the store generation the folder's content matches, or None if unknown
            (written by :func:`save_index`, or caught up while the store was moving).

    """

    #: The kind of index the folder holds (a subclass keeps a learned-sparse index the same way).
    index_type: type[SparseIndex] = SparseIndex

    def __init__(self, folder: Path, index: SparseIndex, snapshot: str, generation: int | None,
                 offset: int, log_records: int, writable: bool) -> None:
        self.folder = folder
        self.index = index
        self.generation = generation
        self._snapshot = snapshot
        self._offset = offset  # bytes of the log applied
        self._log_records = log_records  # chunk operations in the log (for the compaction trigger)
        self._writable = writable
        self._lock: Any = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: Path, *, writable: bool = True) -> SparseFolder:
        """Open a folder written before: load its snapshot (memory-mapped) and replay its log.

        Raises:
            StoreError: if there is no index there, or it is damaged or of another format or
                tokenizer version (the message says to rebuild).

        """
        folder = Path(folder)
        snapshot = current_snapshot(folder)
        index, generation = read_snapshot(folder / snapshot, cls.index_type)
        self = cls(folder, index, snapshot, generation, 0, 0, writable)
        self._replay()
        return self

    @classmethod
    def create(cls, folder: Path, index: SparseIndex | None = None, generation: int | None = None) -> SparseFolder:
        """Write ``index`` (or an empty one) as the folder's snapshot and open it for writing."""
        index = index if index is not None else cls.index_type()
        cls.write_snapshot(Path(folder), index, generation=generation)
        return cls.open(Path(folder))

    # ------------------------------------------------------------------ the log
    def _records(self, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (end offset, record) for each whole, intact record in ``data`` (a log tail)."""
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                return  # a torn last record (or nothing): stop before it
            line = data[start:end]
            try:
                crc, body = line.split(b" ", 1)
                if int(crc, 16) != zlib.crc32(body):
                    raise ValueError("checksum mismatch")
                record = json.loads(body)
                if not isinstance(record, dict) or record.get("op") not in ("u", "d", "g"):
                    raise ValueError("not a log record")
            except ValueError as exc:
                if data.find(b"\n", end + 1) < 0:
                    return  # the last line: a torn write, treated like a partial one
                raise StoreError(
                    f"the sparse index log {self._log_path()} is damaged at byte {self._offset + start} ({exc}); "
                    f"{REBUILD}"
                ) from exc
            yield end + 1, record
            start = end + 1

    def _log_path(self, snapshot: str | None = None) -> Path:
        return self.folder / (snapshot or self._snapshot) / LOG

    def _replay(self) -> bool:
        """Apply the records appended since the last replay; True if any were applied."""
        path = self._log_path()
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        applied = False
        good = 0
        try:
            for end, record in self._records(data):
                self._apply(record)
                good = end
                applied = True
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"the sparse index log {path} holds a bad record ({exc}); {REBUILD}") from exc
        self._offset += good
        if self._writable and good < len(data):  # drop a torn tail so the next append starts clean
            with open(path, "r+b") as handle:
                handle.truncate(self._offset)
                os.fsync(handle.fileno())
        return applied

    def _apply(self, record: dict[str, Any]) -> None:
        op, ids = record["op"], record.get("ids", [])
        if op == "u":
            self._apply_upsert(ids, record)
        elif op == "d":
            self.index.delete(ids)
        self._log_records += len(ids)
        generation = record.get("gen")
        if generation is not None and not isinstance(generation, int):
            raise ValueError(f"generation {generation!r} is not an int")
        self.generation = generation

    def _apply_upsert(self, ids: list[str], record: dict[str, Any]) -> None:
        """Apply one upsert record to the index (a learned folder's records carry weights as well)."""
        self.index.upsert_terms(ids, record["terms"])

    def _append(self, record: dict[str, Any]) -> None:
        if not self._writable:
            raise StoreError(f"the sparse index {self.folder} was opened read-only")
        self._replay()  # apply what another writer appended first, so the log stays ordered
        line = _record_line(record)
        path = self._log_path()
        try:
            with open(path, "ab") as handle:  # no fsync: like Chroma's own commits (see the module doc)
                handle.write(line)
        except OSError as exc:
            raise StoreError(f"cannot append to the sparse index log {path}: {exc}; check the disk") from exc
        self._offset += len(line)
        self._apply(record)

    # ------------------------------------------------------------------ writing
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's inter-process writer lock."""
        from filelock import FileLock

        if self._lock is None:
            self._lock = FileLock(str(self.folder / ".lock"))
        with self._lock:
            yield

    def upsert(self, ids: Sequence[str], texts: Sequence[str], generation: int | None) -> None:
        """Tokenize, add to the index and append to the log, recording the store generation."""
        ids = list(ids)
        terms = [tokenize_for_bm25(text) for text in texts]
        self._append({"op": "u", "ids": ids, "terms": terms, "gen": generation})

    def delete(self, ids: Sequence[str], generation: int | None) -> None:
        """Remove ids from the index and append the deletion to the log."""
        self._append({"op": "d", "ids": list(ids), "gen": generation})

    def mark(self, generation: int | None) -> None:
        """Record that the folder now matches store generation ``generation`` (after a catch-up)."""
        if generation != self.generation:
            self._append({"op": "g", "gen": generation})

    def refresh(self) -> bool:
        """Catch up with what other processes wrote: new log records, or a new snapshot.

        Returns:
            True if anything changed.

        """
        try:
            snapshot = current_snapshot(self.folder)
        except StoreError:
            snapshot = self._snapshot
        if snapshot != self._snapshot or not self._log_path().parent.is_dir():
            fresh = type(self).open(self.folder, writable=self._writable)
            self.index, self.generation, self._snapshot = fresh.index, fresh.generation, fresh._snapshot
            self._offset, self._log_records = fresh._offset, fresh._log_records
            return True
        return self._replay()

    def maybe_compact(self) -> bool:
        """Write a new snapshot if the log has grown past its share; True if it did."""
        if self._log_records <= max(LOG_MIN_RECORDS, LOG_SHARE * len(self.index)):
            return False
        self.compact()
        return True

    def compact(self) -> None:
        """Fold the log into a new snapshot now (O(index)); older snapshots are removed."""
        self._replay()
        name = self.write_snapshot(self.folder, self.index, self.generation)
        self._snapshot, self._offset, self._log_records = name, 0, 0
        snap = self.folder / name
        # Serve the postings from the files just written (page cache) instead of private memory.
        index = self.index
        with index._lock:
            if len(index._ids) == index._base_end:  # nothing was added since the fold
                for field in ("ptr", "pos", "tf"):
                    setattr(index, f"_{field}", np.load(snap / f"{field}.npy", mmap_mode="r", allow_pickle=False))

    @staticmethod
    def write_snapshot(folder: Path, index: SparseIndex, generation: int | None) -> str:
        """Write ``index`` as a new snapshot of ``folder``, switch ``CURRENT`` to it; return its name.

        Raises:
            StoreError: if the folder cannot be written.

        """
        return write_snapshot(folder, index, generation)


def save_index(index: SparseIndex, path: Path) -> None:
    """Write an index as a snapshot folder, atomically (see the module docstring).

    The folder holds the format and tokenizer versions, the BM25 parameters, the
    :attr:`~m3e_rag.index.sparse.bm25.SparseIndex.fingerprint`, the term table, the ids and the
    postings as ``.npy`` arrays, and an (empty) append-only log. Writing again replaces the snapshot;
    readers never see a half one.

    Args:
        index: the index to write.
        path: the folder to write (created if missing).

    Raises:
        StoreError: if the folder cannot be written.

    """
    SparseFolder.write_snapshot(Path(path), index, generation=None)


def load_index(path: Path) -> SparseIndex:
    """Read an index written by :func:`save_index` (or kept by :class:`SparseFolder`).

    Args:
        path: the folder to read.

    Returns:
        The index, with the BM25 parameters it was saved with and the log replayed.

    Raises:
        StoreError: if the folder is missing, unreadable, corrupt, or written by another format
            or tokenizer version; in every case rebuild the index from the collection's texts.

    """
    return SparseFolder.open(Path(path), writable=False).index
