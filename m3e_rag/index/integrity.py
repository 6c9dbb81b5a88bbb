"""Cheap checks that an embedded Chroma folder is whole, run every time an index is opened.

Chroma 1.5's persistent layout (read from the files, never through Chroma itself, so a damaged
folder is never "repaired" into an empty one by opening it):

- ``chroma.sqlite3``: collections, their metadata, every record's id, text and metadata, and a
  write-ahead queue (``embeddings_queue``) of vectors not yet compacted into the HNSW index.
  Compacted vectors are purged from the queue: after that, the HNSW files are their only copy.
- ``<vector segment id>/``: the HNSW index of one collection. ``header.bin`` starts with an int32
  format version (1), then size_t fields: offsetLevel0, max_elements, cur_element_count,
  size_data_per_element, ...; ``data_level0.bin`` holds ``cur_element_count`` elements of
  ``size_data_per_element`` bytes. Deleted elements stay counted until their slot is reused.

m3e-rag adds ``m3e-rag.json`` (the manifest), written when it creates a collection: it records
which collections m3e-rag made here, so an emptied or replaced ``chroma.sqlite3`` is recognised as
damage instead of being opened as a fresh, empty index.

The two checks:

- :func:`check_before_open`: the folder holds m3e-rag's marks (the manifest or a BM25 file) but
  ``chroma.sqlite3`` is missing, empty or unreadable, or lacks a collection the manifest records; or
  ``chroma.sqlite3`` fails sqlite's ``PRAGMA quick_check`` (:func:`check_sqlite`).
- :func:`check_after_open`: a collection with records has no HNSW folder, or the HNSW header and
  the write-ahead queue together hold fewer vectors than the collection has records (a deleted or
  stale segment folder: dense search would silently reach only part of the index).

**Why opening runs sqlite's integrity check.** With a few pages of ``chroma.sqlite3`` overwritten or
zeroed, searches and ``info`` that happen not to read those pages answered as if nothing were wrong
while ``m3e-rag doctor`` (which runs ``PRAGMA quick_check``) said damaged. Doctor is right: sqlite itself
says the file is malformed, the records on those pages are gone from every answer without a word, and
writing into a damaged b-tree can spread the damage. So opening runs the same check and refuses with
:class:`~m3e_rag.errors.IndexDamagedError`. It reads the whole file (about 2-3 ms per MB from the page
cache), so it runs only when the file changed since the last open that passed it: the file's size,
mtime, inode and sqlite's change counter are recorded in ``.m3e-rag-checked`` after each open (Chroma
itself writes to the file when it opens it, so the state is taken after that). A folder that cannot be
written is checked on every open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from m3e_rag.errors import IndexDamagedError
from m3e_rag.index.boundary import doctor_hint
from m3e_rag.index.chroma_version import check_chroma_version
from m3e_rag.index.guard import META_PREFIX

__all__ = [
    "WRITE_LOCK_FILE",
    "CHECKED_STAMP",
    "MANIFEST",
    "SQLITE_FILE",
    "SegmentState",
    "check_after_open",
    "check_before_open",
    "check_sqlite",
    "collection_id",
    "forget_collection",
    "model_in_sqlite",
    "open_for_read",
    "read_manifest",
    "record_checked",
    "record_collection",
    "segment_state",
    "sqlite_verdict",
]

MANIFEST = "m3e-rag.json"
SQLITE_FILE = "chroma.sqlite3"
#: The lock file one writer of an index folder holds (the store, doctor's repairs, adopt).
WRITE_LOCK_FILE = ".m3e-rag-write.lock"
#: The state of ``chroma.sqlite3`` after the last open that passed :func:`check_sqlite` (JSON).
CHECKED_STAMP = ".m3e-rag-checked"
logger = logging.getLogger(__name__)

_MANIFEST_FORMAT = "m3e-rag/index-manifest"
_HEADER_VERSION = 1
_HEADER = struct.Struct("<iQQQQ")  # version, offsetLevel0, max_elements, cur_element_count, size_data_per_element
_BM25_MARKERS = ("sparse_bm25*",)  # the old single file, or the folder(s) of m3e_rag.index.sparse.folder


# ----------------------------------------------------------------------------------- manifest
def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest as a dict, or None if there is none (or it is unreadable: then it is rewritten)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return None
    if not isinstance(data.get("collections"), dict):
        data["collections"] = {}
    return data


def _write_manifest(folder: Path, data: Mapping[str, Any]) -> None:
    payload = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_collection(folder: Path, name: str, collection_uuid: str, model: str, dim: int) -> None:
    """Record (or update) a collection m3e-rag manages in this folder. Call under the write lock."""
    data = read_manifest(folder) or {"format": _MANIFEST_FORMAT, "version": 1, "collections": {}}
    entry = {"id": collection_uuid, "model": model, "dim": dim}
    if data["collections"].get(name) == entry:
        return
    data["collections"][name] = entry
    _write_manifest(folder, data)


def forget_collection(folder: Path, name: str) -> None:
    """Remove a collection from the manifest (it was dropped on purpose). Call under the write lock."""
    data = read_manifest(folder)
    if data is not None and name in data["collections"]:
        del data["collections"][name]
        _write_manifest(folder, data)


# ------------------------------------------------------------------------------------- sqlite
def open_for_read(db: Path) -> sqlite3.Connection:
    """Open ``chroma.sqlite3`` for reading without creating or changing it.

    Read-only, except in one case: a writer killed mid-transaction leaves a hot rollback journal
    (``chroma.sqlite3-journal``), which sqlite must roll back before anyone may read, and rolling back
    needs write access. That is sqlite's own crash recovery (Chroma does the same on open), so the
    file is then opened read-write for this read.
    """
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "readonly" not in str(exc).lower() or not Path(f"{db}-journal").exists():
            raise
    conn = sqlite3.connect(str(db), timeout=30)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def _read_only(db: Path) -> Iterator[sqlite3.Connection]:
    with closing(open_for_read(db)) as conn:
        yield conn


def collection_id(folder: Path, name: str) -> str | None:
    """The id of collection ``name`` in ``chroma.sqlite3``, or None; raises sqlite3.Error if unreadable."""
    with _read_only(folder / SQLITE_FILE) as conn:
        row = conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _is_damage(exc: sqlite3.Error) -> bool:
    """Whether sqlite's error means the file is damaged (not merely busy or locked)."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return True  # "file is not a database", "database disk image is malformed"
    text = str(exc).lower()
    return any(s in text for s in ("malformed", "not a database", "no such table", "no such column", "encrypted"))


def model_in_sqlite(folder: Path, coll_id: str) -> tuple[str | None, int | None]:
    """The (model, dim) recorded in a collection's metadata, read from sqlite itself (read-only).

    Neither opens the index through Chroma (which writes to the folder) nor needs it to be healthy.
    """
    with _read_only(folder / SQLITE_FILE) as conn:
        rows = conn.execute(
            "SELECT key, str_value, int_value FROM collection_metadata WHERE collection_id = ? AND key IN (?, ?)",
            (coll_id, f"{META_PREFIX}model", f"{META_PREFIX}dim"),
        ).fetchall()
    values = {key: (s if s is not None else i) for key, s, i in rows}
    model = values.get(f"{META_PREFIX}model")
    dim = values.get(f"{META_PREFIX}dim")
    return (model if isinstance(model, str) else None, dim if isinstance(dim, int) else None)


def sqlite_verdict(db: Path) -> list[str]:
    """What ``PRAGMA quick_check`` says of ``db`` (``["ok"]`` when whole; at most 5 findings, or why unreadable)."""
    try:
        with _read_only(db) as conn:
            return [" ".join(str(r[0]).split()) for r in conn.execute("PRAGMA quick_check").fetchmany(5)]
    except sqlite3.Error as exc:
        if not _is_damage(exc):
            raise
        return [f"unreadable: {exc}"]


def _db_state(db: Path) -> dict[str, int]:
    """Size, mtime, inode and sqlite's file change counter (header bytes 24-27): what a change moves."""
    st = db.stat()
    with open(db, "rb") as handle:
        header = handle.read(28)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "counter": int.from_bytes(header[24:28], "big") if len(header) == 28 else -1}


def check_sqlite(folder: Path) -> None:
    """Refuse a ``chroma.sqlite3`` that fails sqlite's ``PRAGMA quick_check``; skipped when unchanged since it passed.

    Raises:
        IndexDamagedError: naming what sqlite found and ``m3e-rag doctor``.
    """
    db = folder / SQLITE_FILE
    try:
        state = _db_state(db)
    except OSError as exc:  # unreadable: the checks that follow (and Chroma) say what is wrong
        logger.debug("integrity check of %s skipped: %s", db, exc)
        return
    try:
        if json.loads((folder / CHECKED_STAMP).read_text(encoding="utf-8")) == state:
            return
    except (OSError, ValueError):
        pass
    try:
        verdict = sqlite_verdict(db)
    except sqlite3.Error as exc:  # busy or locked: not damage; Chroma opens it (or says why not)
        logger.debug("integrity check of %s skipped: %s", db, exc)
        return
    if verdict != ["ok"]:
        raise IndexDamagedError(
            f"The Chroma database {db} fails sqlite's integrity check ({'; '.join(verdict)[:300]}): records on the "
            f"damaged pages are missing from every answer; {doctor_hint(str(folder))}."
        )
    _write_stamp(folder, state)  # the state seen before the check: any change since makes the next open check


def record_checked(folder: Path) -> None:
    """Record the state of ``chroma.sqlite3`` after an open that passed :func:`check_sqlite` (best effort)."""
    try:
        state = _db_state(folder / SQLITE_FILE)
    except OSError as exc:
        logger.debug("could not read the state of %s: %s", folder, exc)
        return
    _write_stamp(folder, state)


def _write_stamp(folder: Path, state: dict[str, int]) -> None:
    try:
        payload = json.dumps(state)
        tmp = folder / f"{CHECKED_STAMP}.{os.getpid()}.tmp"
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, folder / CHECKED_STAMP)
    except OSError as exc:  # a read-only folder: checked again on the next open
        logger.debug("could not record the integrity check in %s: %s", folder, exc)


def _has_marks(folder: Path) -> list[str]:
    marks = [MANIFEST] if (folder / MANIFEST).exists() else []
    for pattern in _BM25_MARKERS:
        marks.extend(sorted(p.name for p in folder.glob(pattern)))
    return marks


def check_before_open(folder: Path, name: str) -> None:
    """Refuse a folder m3e-rag wrote to whose ``chroma.sqlite3`` is missing, empty, unreadable or lacks ``name``.

    Raises:
        IndexDamagedError: naming what is wrong and ``m3e-rag doctor``.
    """
    marks = _has_marks(folder)
    db = folder / SQLITE_FILE
    where = str(folder)
    try:
        size = db.stat().st_size
    except FileNotFoundError:
        size = -1
    if not marks:
        if size > 0:  # a database m3e-rag did not mark (older versions, other tools): still checked
            check_sqlite(folder)
        return  # a fresh folder: nothing to compare against
    check_chroma_version()  # what follows reads Chroma's sqlite schema directly
    if size <= 0:
        state = "missing" if size < 0 else "empty (0 bytes)"
        raise IndexDamagedError(
            f"The index at {where} has m3e-rag's files ({', '.join(marks)}) but its Chroma database "
            f"{SQLITE_FILE} is {state}, so every record is gone; opening it would start an empty index. "
            f"Restore the folder from a backup or re-ingest your sources into a new folder; {doctor_hint(where)}."
        )
    try:
        found = collection_id(folder, name)
    except sqlite3.Error as exc:
        if not _is_damage(exc):  # busy, locked, ...: not damage; Chroma opens it (or says why not)
            logger.debug("pre-open check of %s skipped: %s", db, exc)
            return
        raise IndexDamagedError(
            f"The Chroma database {db} cannot be read ({exc}); {doctor_hint(where)}."
        ) from exc
    manifest = read_manifest(folder)
    recorded = (manifest or {}).get("collections", {}).get(name)
    if found is None and recorded is not None:
        raise IndexDamagedError(
            f"Collection {name!r} (id {recorded.get('id')}) that m3e-rag created at {where} is missing from "
            f"{SQLITE_FILE} (the database was replaced, or the collection was deleted outside m3e-rag); "
            f"{doctor_hint(where)}."
        )
    check_sqlite(folder)


# --------------------------------------------------------------------------------------- HNSW
@dataclass(frozen=True)
class SegmentState:
    """What the files say about one collection's vectors.

    Attributes:
        segment_id: the vector segment's id (its folder's name), or None if sqlite records none.
        folder_exists: whether that folder exists.
        header_version: the HNSW header's format version (None: unreadable or absent).
        elements: vectors in the HNSW files (deleted ones included), 0 when absent.
        data_complete: ``data_level0.bin`` is as long as the header says (None when not checked).
        persisted_seq: the last write-ahead sequence number the HNSW files include (0: none yet).
        pending: vectors still in the write-ahead queue after ``persisted_seq`` (replayed on open).
    """

    segment_id: str | None
    folder_exists: bool
    header_version: int | None
    elements: int
    data_complete: bool | None
    persisted_seq: int
    pending: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)

    def problem(self, count: int) -> str | None:
        """Why these files cannot serve ``count`` records, or None when they can."""
        if count <= 0 or self.segment_id is None:
            return None
        if not self.folder_exists and self.persisted_seq > 0:
            return (f"its HNSW segment folder {self.segment_id}/ is missing, so dense search reaches at most "
                    f"{self.pending} of {count} records")
        if self.header_version is not None and self.header_version != _HEADER_VERSION:
            return None  # a layout this check does not know: do not guess
        if self.data_complete is False:
            return f"its HNSW data file in {self.segment_id}/ is shorter than its header says (truncated)"
        if self.elements + self.pending < count:
            return (f"its HNSW index holds {self.elements} vectors and {self.pending} more are queued, fewer than "
                    f"the {count} records, so dense search would miss at least {count - self.elements - self.pending}")
        return None


def segment_state(folder: Path, coll_id: str) -> SegmentState:
    """Read the vector segment of collection ``coll_id`` from sqlite and its HNSW header (read-only, cheap)."""
    with _read_only(folder / SQLITE_FILE) as conn:
        row = conn.execute(
            "SELECT id FROM segments WHERE collection = ? AND scope = 'VECTOR'", (coll_id,)
        ).fetchone()
        if row is None:
            return SegmentState(None, False, None, 0, None, 0, 0)
        seg = str(row[0])
        seq_row = conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (seg,)).fetchone()
        persisted = _as_int(seq_row[0]) if seq_row else 0
        pending = int(conn.execute(
            "SELECT COUNT(*) FROM embeddings_queue WHERE seq_id > ? AND topic LIKE ?", (persisted, f"%/{coll_id}")
        ).fetchone()[0])
    seg_dir = folder / seg
    exists = seg_dir.is_dir()
    version: int | None = None
    elements = 0
    complete: bool | None = None
    if exists:
        try:
            head = (seg_dir / "header.bin").read_bytes()[: _HEADER.size]
            version, _, _, elements, per_element = _HEADER.unpack(head)
            if version == _HEADER_VERSION:
                complete = (seg_dir / "data_level0.bin").stat().st_size >= elements * per_element
        except (OSError, struct.error):
            version, elements, complete = None, 0, None
    return SegmentState(seg, exists, version, int(elements), complete, persisted, pending)


def _as_int(value: object) -> int:
    if isinstance(value, bytes):  # older Chroma stored sequence ids as big-endian blobs
        return int.from_bytes(value, "big")
    return int(value)  # type: ignore[call-overload]


def check_after_open(folder: Path, coll_id: str, count: int, name: str) -> None:
    """Refuse a collection whose HNSW files cannot serve its records (see :class:`SegmentState`)."""
    if count <= 0:
        return
    check_chroma_version()  # the HNSW header and sqlite segment rows are read directly
    try:
        state = segment_state(folder, coll_id)
    except sqlite3.Error as exc:
        if not _is_damage(exc):
            logger.debug("HNSW check of %s skipped: %s", folder, exc)
            return
        raise IndexDamagedError(
            f"The Chroma database in {folder} cannot be read ({exc}); {doctor_hint(str(folder))}."
        ) from exc
    problem = state.problem(count)
    if problem is not None:
        raise IndexDamagedError(
            f"The index at {folder} (collection {name!r}, {count} records) is damaged: {problem}; "
            f"{doctor_hint(str(folder))}."
        )
