"""``m3e-rag doctor``: say what is wrong with an index folder and rebuild what can be rebuilt.

Opening an index refuses damage (:class:`~m3e_rag.errors.IndexDamagedError`); the doctor is where
that error points. It reads the folder's files directly (sqlite read-only, the HNSW header), never
through Chroma, so diagnosing changes nothing. Checks, in order (a failed check stops the ones that
depend on it):

=============  =======================================================================  ==========
check          what it verifies                                                         repair
=============  =======================================================================  ==========
folder         the index folder exists                                                  no
sqlite         ``chroma.sqlite3`` is present, non-empty and passes ``PRAGMA quick_check``  no
collection     the collection exists in the database                                    forget [1]
model          the collection records the model and dimension that built it             no
hnsw           the HNSW files hold a vector for every record (count vs HNSW elements)   re-embed
bm25           the BM25 file matches the store's ids (warning only: rebuilt on demand)   rebuild
learned        the learned-sparse folder (a model with a sparse head) matches the ids   remove [2]
manifest       ``m3e-rag.json`` records this collection (warning only)                  rewrite
=============  =======================================================================  ==========

[1] only when the database is healthy and the collection was deleted outside m3e-rag.
[2] checked only where it exists (warning only); the next open rebuilds it with the model.

**Re-embedding.** Chroma keeps vectors in the HNSW files only (its write-ahead queue is purged once
they are compacted), so vectors lost with the HNSW folder cannot be read back from sqlite. The
texts and metadata survive in sqlite: ``--repair`` embeds the stored texts again with the model
recorded in the collection, into a new collection, checks that every record is there, then
swaps it in under the old name (the damaged collection is deleted only after that). Records added
with vectors computed from other text than the stored one (LlamaIndex embeds metadata with the
text) get vectors of their stored text. Nothing is deleted before its replacement is complete.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from m3e_rag.errors import IndexDamagedError, InputError, M3ERagError
from m3e_rag.index.chroma_version import check_chroma_version
from m3e_rag.index.guard import META_PREFIX, adopt_command
from m3e_rag.index.integrity import (
    MANIFEST,
    SQLITE_FILE,
    WRITE_LOCK_FILE,
    collection_id,
    forget_collection,
    model_in_sqlite,
    open_for_read,
    read_manifest,
    record_collection,
    segment_state,
    sqlite_verdict,
)

__all__ = ["Check", "DoctorReport", "diagnose", "repair", "EXIT_HEALTHY", "EXIT_DAMAGED"]

logger = logging.getLogger(__name__)

EXIT_HEALTHY = 0
EXIT_DAMAGED = 3
_REPAIR_BATCH = 256

Level = Literal["error", "warning"]


@dataclass
class Check:
    """One check's outcome.

    Attributes:
        name: ``folder``, ``sqlite``, ``collection``, ``model``, ``hnsw``, ``bm25``, ``learned`` or ``manifest``.
        ok: whether it passed.
        level: ``error`` (the index is damaged) or ``warning`` (it works; something is stale).
        detail: one sentence: what was found.
        repairable: whether ``--repair`` can fix it.
    """

    name: str
    ok: bool
    detail: str
    level: Level = "error"
    repairable: bool = False


@dataclass
class DoctorReport:
    """What the doctor found (and, with ``--repair``, did).

    Attributes:
        index: the index folder.
        collection: the collection checked.
        healthy: no ``error``-level check failed (warnings allowed).
        checks: every check run, in order.
        counts: ``records`` (sqlite), ``hnsw_elements``, ``queued`` (write-ahead), ``bm25`` (ids in the
            BM25 file), each None when unknown.
        model: the model recorded in the collection (None when unreadable).
        repaired: what ``--repair`` fixed, one sentence each.
        advice: what to do about what could not be fixed.
    """

    index: str
    collection: str
    healthy: bool
    checks: list[Check]
    counts: dict[str, int | None] = field(default_factory=dict)
    model: str | None = None
    repaired: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when healthy, 3 when damage remains."""
        return EXIT_HEALTHY if self.healthy else EXIT_DAMAGED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the attributes above plus ``exit_code``."""
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data

    def format_text(self) -> str:
        """Human-readable lines: one per check, then repairs and advice."""
        lines = [f"index {self.index} (collection {self.collection!r}): {'healthy' if self.healthy else 'DAMAGED'}"]
        for check in self.checks:
            mark = "ok" if check.ok else ("WARN" if check.level == "warning" else "FAIL")
            lines.append(f"  [{mark:>4}] {check.name}: {check.detail}")
        lines.extend(f"  repaired: {line}" for line in self.repaired)
        lines.extend(f"  advice: {line}" for line in self.advice)
        return "\n".join(lines)


def _sparse_file(folder: Path, collection: str) -> Path:
    from m3e_rag.index.chroma import DEFAULT_COLLECTION
    from m3e_rag.index.sparse.sync import sparse_folder

    return sparse_folder(folder, collection, DEFAULT_COLLECTION)


def _ro(db: Path) -> sqlite3.Connection:
    return open_for_read(db)


def _record_ids(folder: Path, coll_id: str) -> list[str]:
    """Ids of the collection's records, from its metadata segment in sqlite."""
    conn = _ro(folder / SQLITE_FILE)
    try:
        row = conn.execute("SELECT id FROM segments WHERE collection = ? AND scope = 'METADATA'", (coll_id,)).fetchone()
        if row is None:
            return []
        return [str(r[0]) for r in conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?", (row[0],))]
    finally:
        conn.close()


def _add(report: DoctorReport, check: Check) -> Check:
    """Record a check's outcome; a failed ``error``-level check makes the report unhealthy."""
    report.checks.append(check)
    if not check.ok and check.level == "error":
        report.healthy = False
    return check


def diagnose(index: str | Path, collection: str = "m3e_rag") -> DoctorReport:
    """Check an index folder without changing anything; see the module docstring for the checks.

    Raises:
        StoreError: when the installed chromadb's on-disk format is not the one these checks read.
    """
    check_chroma_version()
    folder = Path(index).expanduser().resolve()
    report = DoctorReport(str(folder), collection, True, [])
    counts: dict[str, int | None] = {"records": None, "hnsw_elements": None, "queued": None, "bm25": None}
    report.counts = counts

    if not folder.is_dir():
        _add(report, Check("folder", False, f"{folder} is not a folder"))
        report.advice.append("pass the folder given to `m3e-rag ingest --index`.")
        return report
    _add(report, Check("folder", True, str(folder)))

    if not _check_sqlite(folder, report):
        return report

    coll_id = collection_id(folder, collection)
    manifest = read_manifest(folder)
    recorded = (manifest or {}).get("collections", {}).get(collection)
    if coll_id is None:
        _check_missing_collection(folder, collection, recorded, report)
        return report
    _add(report, Check("collection", True, f"{collection!r} (id {coll_id})"))

    model, dim = model_in_sqlite(folder, coll_id)
    report.model = model
    if model is None or dim is None:
        adopt = adopt_command(str(folder), collection, "MODEL")
        _add(report, Check("model", False, "the collection records no m3e-rag model/dimension (not created by "
                           f"m3e-rag; if langchain_chroma or ChromaVectorStore wrote it: {adopt})"))
        return report
    _add(report, Check("model", True, f"{model} ({dim}-d)"))

    ids = _check_hnsw(folder, coll_id, report)
    _check_bm25(folder, collection, ids, report)
    _check_learned(folder, collection, ids, report)

    if recorded is not None and recorded.get("id") == coll_id:
        _add(report, Check("manifest", True, f"{MANIFEST} records {collection!r}", level="warning"))
    else:
        _add(report, Check("manifest", False, f"{MANIFEST} does not record {collection!r} with id {coll_id} "
                           "(written by older versions on next open; --repair writes it now)", level="warning",
                           repairable=True))
    if not report.healthy:
        report.advice.append(f"run `m3e-rag doctor --index {folder} --repair` (needs model {model!r} to re-embed).")
    return report


def _check_sqlite(folder: Path, report: DoctorReport) -> bool:
    """The ``sqlite`` check: present, non-empty, passes ``PRAGMA quick_check``; False stops the diagnosis."""
    db = folder / SQLITE_FILE
    size = db.stat().st_size if db.exists() else -1
    if size <= 0:
        _add(report, Check("sqlite", False, f"{SQLITE_FILE} is {'missing' if size < 0 else 'empty (0 bytes)'}: every "
                           "record (texts, metadata, vectors not yet in HNSW) is gone"))
        report.advice.append("restore the folder from a backup, or re-ingest your sources into a new folder "
                             "(`m3e-rag ingest PATH --index NEW`).")
        return False
    try:
        verdict = sqlite_verdict(db)  # the check every open runs (m3e_rag.index.integrity.check_sqlite)
    except sqlite3.Error as exc:
        verdict = [f"unreadable: {exc}"]
    if verdict != ["ok"]:
        _add(report, Check("sqlite", False,
                           f"{SQLITE_FILE} fails sqlite's integrity check ({'; '.join(verdict)[:300]})"))
        report.advice.append("restore the folder from a backup, or re-ingest your sources into a new folder; "
                             f"`sqlite3 {db} .recover` may salvage texts from a copy.")
        return False
    _add(report, Check("sqlite", True, f"{SQLITE_FILE} readable, {size:,} bytes, integrity ok"))
    return True


def _check_missing_collection(folder: Path, collection: str, recorded: Any, report: DoctorReport) -> None:
    """The failed ``collection`` check: say whether a repair copy, the manifest or nothing knows of it."""
    conn = _ro(folder / SQLITE_FILE)
    try:
        names = [str(r[0]) for r in conn.execute("SELECT name FROM collections ORDER BY name")]
    finally:
        conn.close()
    leftovers = [n for n in names if n.startswith(f"{collection}-repair-")]
    if leftovers:
        _add(report, Check("collection", False, f"collection {collection!r} is missing but {leftovers[0]!r} holds its "
                           "repaired copy (a repair was interrupted before the swap)", repairable=True))
        report.advice.append(f"run `m3e-rag doctor --index {folder} --repair` to finish the swap.")
    elif recorded is not None:
        _add(report, Check("collection", False, f"collection {collection!r} (id {recorded.get('id')}) recorded in "
                           f"{MANIFEST} is missing from the database (present: {names})", repairable=True))
        report.advice.append(f"if it was deleted on purpose, `--repair` forgets it; otherwise restore a backup. "
                             f"Other collections here: {names}.")
    else:
        _add(report, Check("collection", False, f"no collection {collection!r} here (present: {names})"))
        report.advice.append("pass --collection with one of the names present.")


def _check_hnsw(folder: Path, coll_id: str, report: DoctorReport) -> list[str]:
    """The ``hnsw`` check: a vector for every record; returns the records' ids."""
    ids = _record_ids(folder, coll_id)
    report.counts["records"] = len(ids)
    state = segment_state(folder, coll_id)
    report.counts["hnsw_elements"] = state.elements if state.folder_exists else None
    report.counts["queued"] = state.pending
    problem = state.problem(len(ids))
    if problem is None:
        _add(report, Check("hnsw", True, f"{len(ids)} records; HNSW holds {state.elements} vectors, "
                           f"{state.pending} queued"))
    else:
        _add(report, Check("hnsw", False, problem, repairable=True))
    return ids


def _check_bm25(folder: Path, collection: str, ids: list[str], report: DoctorReport) -> None:
    """The ``bm25`` check (a warning): the BM25 folder's ids are the store's."""
    sparse_path = _sparse_file(folder, collection)
    if not sparse_path.exists():
        _add(report, Check("bm25", True, f"no {sparse_path.name} (built on the first sparse or hybrid search)",
                           level="warning"))
        return
    from m3e_rag.index.sparse.folder import SparseFolder

    _check_sparse_folder("bm25", sparse_path, SparseFolder, ids, report)


def _check_learned(folder: Path, collection: str, ids: list[str], report: DoctorReport) -> None:
    """The ``learned`` check (a warning), only where a model with a sparse head wrote a learned-sparse folder."""
    from m3e_rag.index.sparse.learned_side import LearnedFolder, learned_folder

    path = learned_folder(_sparse_file(folder, collection))
    if path.exists():
        _check_sparse_folder("learned", path, LearnedFolder, ids, report)


def _check_sparse_folder(name: str, path: Path, folder_type: Any, ids: list[str], report: DoctorReport) -> None:
    """A sparse folder's check: it opens, and its ids are the store's (else a repairable warning)."""
    from m3e_rag.index.sparse.bm25 import fingerprint

    try:
        sparse = folder_type.open(path, writable=False).index
    except M3ERagError as exc:
        _add(report, Check(name, False, f"{path.name} is unusable ({exc})", level="warning", repairable=True))
    else:
        report.counts[name] = len(sparse)
        if sparse.fingerprint == fingerprint(ids):
            _add(report, Check(name, True, f"{path.name} matches the {len(ids)} stored ids", level="warning"))
        else:
            _add(report, Check(name, False, f"{path.name} holds {len(sparse)} ids that differ from the "
                               f"{len(ids)} stored (stale: searches catch it up, --repair rebuilds it now)",
                               level="warning", repairable=True))


EncoderFactory = Callable[[str], Any]


def repair(
    index: str | Path,
    collection: str = "m3e_rag",
    *,
    model_name: str | None = None,
    encoder_factory: EncoderFactory | None = None,
) -> DoctorReport:
    """Diagnose, fix what can be fixed, and diagnose again; the returned report says what was done.

    Args:
        index: the index folder.
        collection: the collection to repair.
        model_name: model to re-embed with (default: the one recorded in the collection). Its name
            must match the recorded one: the index stays guarded for that model.
        encoder_factory: builds an encoder from a model name (default :class:`~m3e_rag.M3EEncoder`).
    """
    folder = Path(index).expanduser().resolve()
    before = diagnose(folder, collection)
    failed = {c.name: c for c in before.checks if not c.ok}
    repaired: list[str] = []
    if "collection" in failed and failed["collection"].repairable:
        repaired.append(_fix_missing_collection(folder, collection))
    if "hnsw" in failed:
        if model_name is not None and model_name != before.model:
            raise InputError(
                f"The collection was built with model {before.model!r}; re-embedding with {model_name!r} would mix "
                f"models. Pass --model {before.model} (or leave --model out)."
            )
        count = _reembed(folder, collection, str(before.model), encoder_factory)
        repaired.append(f"re-embedded {count} records from their stored texts with {before.model} into a fresh "
                        "HNSW index (the damaged one was replaced only after every record was in)")
    after = diagnose(folder, collection)
    remaining = {c.name for c in after.checks if not c.ok}
    if remaining & {"bm25"} and after.model is not None:
        _rebuild_bm25(folder, collection)
        repaired.append("rebuilt the BM25 file from the stored texts")
    if "learned" in remaining and after.model is not None:
        import shutil

        from m3e_rag.index.sparse.learned_side import learned_folder

        shutil.rmtree(learned_folder(_sparse_file(folder, collection)), ignore_errors=True)
        repaired.append("removed the learned-sparse folder: the next open rebuilds it with the model from the stored "
                        "texts")
    if "manifest" in remaining and after.model is not None:
        from filelock import FileLock

        coll_id = collection_id(folder, collection)
        _, dim = model_in_sqlite(folder, str(coll_id))
        with FileLock(str(folder / WRITE_LOCK_FILE)):
            record_collection(folder, collection, str(coll_id), after.model, int(dim or 0))
        repaired.append(f"recorded {collection!r} in {MANIFEST}")
    final = diagnose(folder, collection) if repaired else after
    final.repaired = repaired
    if not final.healthy and not repaired:
        final.advice.insert(0, "nothing here could be repaired automatically.")
    return final


def _fix_missing_collection(folder: Path, collection: str) -> str:
    """Finish an interrupted repair (rename its copy back), else forget a collection deleted on purpose."""
    from filelock import FileLock

    with FileLock(str(folder / WRITE_LOCK_FILE)):
        client = _open_raw(folder)
        copies = sorted(c.name for c in client.list_collections() if c.name.startswith(f"{collection}-repair-"))
        if copies:
            copy = client.get_collection(copies[0], embedding_function=None)
            copy.modify(name=collection)
            meta = copy.metadata or {}
            record_collection(folder, collection, str(copy.id), str(meta.get(f"{META_PREFIX}model")),
                              int(meta.get(f"{META_PREFIX}dim", 0)))
            return f"finished an interrupted repair: {copies[0]!r} ({copy.count()} records) is {collection!r} again"
        forget_collection(folder, collection)
        return f"forgot collection {collection!r}, deleted outside m3e-rag (nothing left to lose)"


def _open_raw(folder: Path) -> Any:
    import chromadb
    from chromadb.api.client import SharedSystemClient
    from chromadb.config import Settings

    SharedSystemClient.clear_system_cache()  # a cached client may hold the damaged segment open
    return chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))


def _reembed(folder: Path, collection: str, model: str, encoder_factory: EncoderFactory | None) -> int:
    """Copy every record into a new collection with fresh vectors, verify, then swap it in."""
    from filelock import FileLock

    from m3e_rag.index.boundary import store_boundary

    if encoder_factory is None:
        from m3e_rag.encode.encoder import M3EEncoder

        def encoder_factory(name: str) -> Any:
            return M3EEncoder(name, on_overflow="truncate")

    encoder = encoder_factory(model)
    with FileLock(str(folder / WRITE_LOCK_FILE)), store_boundary("repair the index", str(folder)):
        client = _open_raw(folder)
        old = client.get_collection(collection, embedding_function=None)
        total = int(old.count())
        temp_name = f"{collection}-repair-{uuid.uuid4().hex[:8]}"
        new = client.create_collection(temp_name, configuration={"hnsw": {"space": "cosine"}},
                                       metadata=dict(old.metadata or {}), embedding_function=None)
        try:
            for offset in range(0, total, _REPAIR_BATCH):
                page = old.get(include=["documents", "metadatas"], limit=_REPAIR_BATCH, offset=offset)
                texts = [d or "" for d in (page.get("documents") or [])]
                vectors = encoder.encode_documents([t if t.strip() else "(empty)" for t in texts])
                new.upsert(ids=page["ids"], embeddings=vectors, documents=texts,
                           metadatas=[m or None for m in (page.get("metadatas") or [])])
            if int(new.count()) != total:
                raise IndexDamagedError(
                    f"Repair copied {new.count()} of {total} records; the damaged collection is left as it was."
                )
        except BaseException:
            client.delete_collection(temp_name)
            raise
        client.delete_collection(collection)
        new.modify(name=collection)
        dim = int((old.metadata or {}).get(f"{META_PREFIX}dim", 0))
        record_collection(folder, collection, str(new.id), model, dim)
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    return total


def _rebuild_bm25(folder: Path, collection: str) -> None:
    from filelock import FileLock

    from m3e_rag.index.sparse.bm25 import SparseIndex
    from m3e_rag.index.sparse.folder import SparseFolder

    index = SparseIndex()
    with FileLock(str(folder / WRITE_LOCK_FILE)):
        client = _open_raw(folder)
        col = client.get_collection(collection, embedding_function=None)
        total = int(col.count())
        for offset in range(0, total, 5000):
            page = col.get(include=["documents"], limit=5000, offset=offset)
            index.upsert([str(i) for i in page["ids"]], [d or "" for d in (page.get("documents") or [])])
        # Generation unknown: the pipeline compares id sets once on its next open, then trusts it.
        SparseFolder.create(_sparse_file(folder, collection), index, generation=None)
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def run(index: str | Path, collection: str = "m3e_rag", *, do_repair: bool = False,
        model_name: str | None = None) -> DoctorReport:
    """Diagnose (and with ``do_repair`` repair) an index; the CLI's entry point."""
    if do_repair:
        return repair(index, collection, model_name=model_name)
    return diagnose(index, collection)


def to_json(report: DoctorReport) -> str:
    """The report as indented JSON (what ``m3e-rag doctor --json`` prints)."""
    return json.dumps(report.to_dict(), ensure_ascii=False, indent=2)
