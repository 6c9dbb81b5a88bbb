"""One snapshot of the BM25 folder: its files, how they are written atomically and read back checked.

:mod:`m3e_rag.index.sparse.folder` keeps an index as a snapshot plus an append-only log (the layout
is in its docstring); this module owns the snapshot half: the ``CURRENT`` pointer, ``meta.json`` with
the format and tokenizer versions, the id and term tables and the postings arrays. A snapshot is
written to a temporary folder, fsynced, renamed, and only then named by ``CURRENT``, so a reader
never sees half of one; reading checks versions, checksums and array shapes before trusting it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.errors import StoreError
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.postings import nonempty_strings

__all__ = [
    "CURRENT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOG",
    "REBUILD",
    "current_snapshot",
    "json_bytes",
    "read_snapshot",
    "write_snapshot",
]

FORMAT_NAME = "m3e-rag/sparse-index"
#: Version of the on-disk format written by :func:`write_snapshot` (see :mod:`m3e_rag.index.sparse.folder`).
FORMAT_VERSION = 2
CURRENT = "CURRENT"
LOG = "log.jsonl"
_SNAP = re.compile(r"snap-(\d{6,})")
REBUILD = "rebuild the sparse index from the collection's texts"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII kept as is (an Extension B id stays 4 bytes, not escaped surrogates)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def current_snapshot(folder: Path) -> str:
    """The name of the snapshot ``CURRENT`` names in ``folder``.

    Raises:
        StoreError: if there is no index there, or ``CURRENT`` is unreadable or names no snapshot.

    """
    try:
        current = json.loads((folder / CURRENT).read_bytes())
    except FileNotFoundError as exc:
        raise StoreError(f"there is no sparse index in {folder}; {REBUILD}") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {folder / CURRENT} ({exc}); {REBUILD}") from exc
    if not isinstance(current, dict) or current.get("format") != FORMAT_NAME:
        raise StoreError(f"{folder} is not an m3e-rag sparse index; {REBUILD}")
    snapshot = current.get("snapshot")
    if not isinstance(snapshot, str) or not _SNAP.fullmatch(snapshot):
        raise StoreError(f"{folder / CURRENT} names no snapshot; {REBUILD}")
    return snapshot


def _check_meta(meta: Any, snap: Path, terms_version: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{snap} is not an m3e-rag sparse index; {REBUILD}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{snap} has sparse index format {meta.get('format_version')!r}, this version reads "
            f"{FORMAT_VERSION}; {REBUILD}"
        )
    if meta.get("tokenizer_version") != terms_version:
        raise StoreError(
            f"{snap} was tokenized by {meta.get('tokenizer_version')!r}, this version tokenizes "
            f"with {terms_version!r}; {REBUILD}"
        )


def read_snapshot(snap: Path, index_type: type[SparseIndex] = SparseIndex) -> tuple[SparseIndex, Any]:
    """Load the snapshot folder ``snap`` (postings memory-mapped); return the index and the generation recorded.

    ``index_type`` is the kind of index the folder must hold (BM25, or a learned-sparse index): a snapshot
    whose terms are of another kind (:attr:`SparseIndex.TERMS_VERSION`) is refused.

    Raises:
        StoreError: if it is damaged or of another format or tokenizer version (the message says to rebuild).

    """
    try:
        meta = json.loads((snap / "meta.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the sparse index {snap} ({exc}); {REBUILD}") from exc
    _check_meta(meta, snap, index_type.TERMS_VERSION)
    try:
        ids_raw = (snap / "ids.json").read_bytes()
        terms_raw = (snap / "terms.json").read_bytes()
        if hashlib.sha256(ids_raw).hexdigest() != meta.get("ids_sha256") or \
                hashlib.sha256(terms_raw).hexdigest() != meta.get("terms_sha256"):
            raise ValueError("ids.json or terms.json does not match its checksum")
        ids, terms = json.loads(ids_raw), json.loads(terms_raw)
        for name, value in (("ids", ids), ("terms", terms)):
            if not isinstance(value, list) or not nonempty_strings(value):
                raise ValueError(f"{name} is not a list of non-empty strings")
        arrays = {name: np.load(snap / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in ("doc_len", "ptr", "pos", "tf")}
        index = index_type.from_snapshot({"ids": ids, "terms": terms, **arrays}, meta)
        if len(index) != meta.get("count"):
            raise ValueError("the number of ids differs from the count recorded")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the sparse index {snap} is corrupt ({exc}); {REBUILD}") from exc
    except Exception as exc:  # InputError from bad parameters, numpy format errors
        raise StoreError(f"the sparse index {snap} is unusable ({exc}); {REBUILD}") from exc
    return index, meta.get("generation")


def write_snapshot(folder: Path, index: SparseIndex, generation: int | None) -> str:
    """Write ``index`` as a new snapshot of ``folder``, switch ``CURRENT`` to it; return its name.

    Raises:
        StoreError: if the folder cannot be written.

    """
    import jieba

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        existing = [int(m.group(1)) for p in folder.iterdir() if (m := _SNAP.fullmatch(p.name))]
        name = f"snap-{max(existing, default=0) + 1:06d}"
        tmp = folder / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        block = index.block()
        ids_raw, terms_raw = json_bytes(block["ids"]), json_bytes(block["terms"])
        _write_file(tmp / "ids.json", ids_raw)
        _write_file(tmp / "terms.json", terms_raw)
        for field in ("doc_len", "ptr", "pos", "tf"):
            _save_npy(tmp / f"{field}.npy", block[field])
        _write_file(tmp / LOG, b"")
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tokenizer_version": index.TERMS_VERSION,
            **index.snapshot_params(),
            "count": len(block["ids"]),
            "fingerprint": index.fingerprint,
            "generation": generation,
            "ids_sha256": hashlib.sha256(ids_raw).hexdigest(),
            "terms_sha256": hashlib.sha256(terms_raw).hexdigest(),
            "written_by": {"jieba": jieba.__version__},
        }
        _write_file(tmp / "meta.json", json_bytes(meta))
        _fsync_dir(tmp)
        os.replace(tmp, folder / name)
        _fsync_dir(folder)
        current_tmp = folder / f".{CURRENT}.{os.getpid()}.tmp"
        _write_file(current_tmp, json_bytes({"format": FORMAT_NAME, "snapshot": name}))
        os.replace(current_tmp, folder / CURRENT)
        _fsync_dir(folder)
    except OSError as exc:
        raise StoreError(f"cannot write the sparse index to {folder}: {exc}; check the folder and disk") from exc
    for old in folder.iterdir():  # older snapshots and temp folders of killed writers
        if old.name != name and (_SNAP.fullmatch(old.name) or old.name.startswith(".tmp-snap-")):
            shutil.rmtree(old, ignore_errors=True)
    return name
