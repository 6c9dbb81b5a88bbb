r"""Keeping an index in step with folders: what ``ingest(paths, sync=True)`` removes, and what it keeps.

An ingest adds and replaces the chunks of the files it reads; a file deleted from a folder keeps its
chunks (searchable, counted) until something removes them. ``sync=True`` (CLI ``--sync``) does that at
the end of a complete ingest: the chunks of every file that lies under this call's roots and is
**confirmed gone from disk** are deleted, in one step under the ingest's write locks, from Chroma and
the BM25 side alike. It is off by default: an ingest never deletes what it was not asked to.

Rules, each chosen so that nothing is deleted that was not both asked for and proven gone:

* **Scope: this call's roots and patterns.** A stored source is a candidate only when it lies under a
  *folder* given in this call (compared as the loader stores it, absolute with links kept, and resolved
  through symbolic links, so ``./docs``, ``/home/me/docs`` and a link to it are one root) and this call's
  walk would have picked it: no hidden (``.``) name on the way, and passing ``include``/``exclude``. A
  root given as a single file covers that file only. Nothing outside the roots is ever touched.
* **Files only.** Only chunks the file loader stored are removed (their ``file_name`` and ``file_type``
  are the ones the loader derives from the source path); texts and framework Documents keep theirs, even
  when their source reads like a path under a root.
* **Confirmed gone.** A candidate is removed only when ``lstat`` says it does not exist (``ENOENT``,
  ``ENOTDIR``). A file that exists keeps its chunks whatever this run made of it: skipped (unreadable,
  over the size limit, binary, changing while read) is listed in ``sources_kept`` with the reason, as is
  a file whose existence cannot be checked (a folder without search permission). A root folder moved,
  removed or replaced while the ingest ran (another device or inode: an unmounted disk leaves an empty
  mount point behind) removes nothing under it, and is listed too.
* **Complete ingests only.** An ingest that stops early (Ctrl-C, an error) never reaches this step; a
  Ctrl-C during the step itself lets it finish (it is one locked write).

Patterns, a decision: files left out by this call's ``include``/``exclude`` are outside its scope, present
or not. Patterns narrow what one call reads (``--include '*.md'`` refreshes the Markdown files); reading
them as "the index holds only these" would turn a narrowed refresh into a deletion of everything else.
To drop the files of a pattern, sync without it, or delete them (``m3e-rag delete --source``,
``RAGPipeline.delete(where=...)``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.ingest.index_handle import IndexHandle
from m3e_rag.ingest.loaders import FileLoader, SkippedFile
from m3e_rag.ingest.loaders._common import display_path
from m3e_rag.ingest.loaders.walk import match

__all__ = ["RemovedSource", "SyncResult", "SyncScope", "sync_scope", "remove_missing"]

_MOVED = (
    "this folder was moved, removed or replaced while the ingest ran (an unmounted disk?); sync removed nothing "
    "under it: run the ingest again"
)
_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


@dataclass(frozen=True)
class RemovedSource:
    """A file gone from disk whose chunks a sync removed.

    Attributes:
        source: the file, as stored (its absolute POSIX path).
        chunks: how many chunks of it were deleted.
    """

    source: str
    chunks: int


@dataclass
class SyncResult:
    """What one sync step did: the sources removed, the ones kept with the reason, the chunks deleted."""

    removed: list[RemovedSource] = field(default_factory=list)
    kept: list[SkippedFile] = field(default_factory=list)
    chunks: int = 0


@dataclass(frozen=True)
class _Root:
    """One path given to the ingest, in the forms stored sources are compared with."""

    shown: str  # as the loader stores the files under it: absolute, links kept
    real: str  # resolved through symbolic links
    folder: bool
    identity: tuple[int, int] | None  # (device, inode) of a folder when the ingest started

    def relative(self, source: str) -> str | None:
        """``source`` relative to this root ('' for a file root's own file), or None when outside it."""
        if not self.folder:
            return "" if source == self.shown or os.path.realpath(source) == self.real else None
        rel = _under(source, self.shown)
        return rel if rel is not None else _under(os.path.realpath(source), self.real)

    def still_there(self) -> bool:
        """Whether a folder root is still the folder the ingest walked (file roots: always)."""
        return not self.folder or _identity(self.real) == self.identity


def _under(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder``, or None when it does not lie under it."""
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class SyncScope:
    """The roots and patterns of one ingest call: which stored sources its sync may remove.

    Built before the ingest reads anything (the folders' identities are taken then).
    """

    def __init__(self, roots: Sequence[Path], include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
        self._roots = [
            _Root(display_path(p), os.path.realpath(p), os.path.isdir(p), _identity(os.path.realpath(p)))
            for p in roots
        ]
        self._include = list(include) if include is not None else None
        self._exclude = list(exclude or [])

    def live_roots(self) -> tuple[list[_Root], list[str]]:
        """The roots still as the ingest found them, and the folders that were moved or replaced since."""
        live = [r for r in self._roots if r.still_there()]
        return live, [r.shown for r in self._roots if not r.still_there()]

    def covers(self, source: str, roots: Sequence[_Root]) -> bool:
        """Whether ``source`` lies under one of ``roots`` where this call's walk would have picked it."""
        if not os.path.isabs(source):
            return False  # texts' "text:..." names and relative framework sources: never a walked file
        for root in roots:
            rel = root.relative(source)
            if rel is not None and (not root.folder or self._walked(rel)):
                return True
        return False

    def _walked(self, rel: str) -> bool:
        """Whether the walk of a folder would pick the file at ``rel`` (see :mod:`.loaders.walk`)."""
        parts = rel.split("/")
        if any(not part or part.startswith(".") for part in parts):
            return False  # hidden names are left out of a walk
        for depth in range(1, len(parts)):  # an excluded folder is not entered
            folder = "/".join(parts[:depth])
            if any(match(folder, parts[depth - 1], p) or match(folder + "/", parts[depth - 1], p)
                   for p in self._exclude):
                return False
        name = parts[-1]
        if self._include is not None and not any(match(rel, name, p) for p in self._include):
            return False
        return not any(match(rel, name, p) for p in self._exclude)


def sync_scope(loader: FileLoader | None, sync: object) -> SyncScope | None:
    """The scope of an ingest's sync (None without ``sync``), checked before anything is read or written.

    Raises:
        InputError: ``sync`` is not a bool, or it is asked for without paths.
    """
    if not isinstance(sync, bool):
        raise InputError(f"sync must be True or False; got {sync!r}")
    if not sync:
        return None
    if loader is None:
        raise InputError(
            "sync=True needs paths: it removes the chunks of files gone from the folders given; texts and "
            "documents are never removed by it (delete them with delete(source=...))"
        )
    return SyncScope(loader.paths, loader.include, loader.exclude)


def _spellings(source: str) -> list[bytes]:
    r"""The paths a stored source may name: as stored, and with the loader's ``\xNN`` escapes undone."""
    raw = os.fsencode(source)
    if b"\\x" not in raw:
        return [raw]
    return [raw, _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)]


def _check_gone(source: str) -> tuple[bool, str | None]:
    """``(True, None)``: confirmed gone; ``(False, None)``: present; ``(False, why)``: cannot tell."""
    for path in _spellings(source):
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return False, f"could not check whether the file still exists ({reason}); its chunks were kept"
        return False, None
    return True, None


def _from_file(source: str, meta: Mapping[str, Any]) -> bool:
    """Whether a chunk was stored by the file loader: its file name and type are the path's own."""
    name = source.rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""  # as FileLoader derives file_type
    return meta.get("file_name") == name and meta.get("file_type") == suffix


def remove_missing(index: IndexHandle, scope: SyncScope, skipped: Mapping[str, str]) -> SyncResult:
    """Delete the chunks of the files in ``scope`` that are confirmed gone, under the index's write locks.

    ``skipped`` maps the files this run skipped to the reason: those that still exist are listed as kept.
    """
    result = SyncResult()
    store = index.store
    with index.writing():
        roots, moved = scope.live_roots()
        result.kept.extend(SkippedFile(folder, _MOVED) for folder in moved)
        missing: list[str] = []
        for source in store.sources():
            if not scope.covers(source, roots):
                continue
            gone, why = _check_gone(source)
            if gone:
                missing.append(source)
            elif why is not None:
                result.kept.append(SkippedFile(source, why))
            elif source in skipped:
                result.kept.append(SkippedFile(
                    source, f"skipped by this ingest ({skipped[source]}); its chunks from before were kept"
                ))
        doomed: list[str] = []
        for source, chunks in (store.ids_by_source(missing) if missing else {}).items():
            ids = sorted(cid for cid, meta in chunks.items() if _from_file(source, meta))
            if ids:
                result.removed.append(RemovedSource(source, len(ids)))
                doomed.extend(ids)
        if doomed:
            result.chunks = store.delete(ids=doomed)
            index.sparse_delete(doomed)
    return result
