"""The file loader: walk the paths, open each file checked (see :mod:`.opening`), hand it to its format.

:class:`FileLoader` is what ``ingest()`` streams and what :func:`~m3e_rag.ingest.loaders.load_paths`
collects. It also answers the ingest run's questions about the files it loaded (has one changed
since it was opened? read it again), so that a file rewritten during its ingest is noticed before
its chunks are stored (see :mod:`m3e_rag.ingest.run`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from m3e_rag.errors import InputError
from m3e_rag.ingest.loaders._base import FileJob, FormatLoader, LoadOptions, Sink, Yielded
from m3e_rag.ingest.loaders._common import (
    DEFAULT_MAX_FILE_BYTES,
    SkippedFile,
    _Skip,
    display_name,
    display_path,
    over_size_limit,
)
from m3e_rag.ingest.loaders.csvfile import load_csv
from m3e_rag.ingest.loaders.docxfile import load_docx
from m3e_rag.ingest.loaders.htmlfile import load_html
from m3e_rag.ingest.loaders.jsonfile import load_json, load_jsonl
from m3e_rag.ingest.loaders.opening import Confinement, FileStamp, open_checked
from m3e_rag.ingest.loaders.pdffile import load_pdf
from m3e_rag.ingest.loaders.textfile import load_text
from m3e_rag.ingest.loaders.walk import FOLLOW_HINT, _link_error, file_identity, iter_files, real_roots

__all__ = ["FileLoader"]

_LOADERS: dict[str, FormatLoader] = {
    "txt": load_text,
    "md": load_text,
    "markdown": load_text,
    "html": load_html,
    "htm": load_html,
    "xhtml": load_html,
    "json": load_json,
    "jsonl": load_jsonl,
    "ndjson": load_jsonl,
    "csv": load_csv,
    "tsv": load_csv,
    "pdf": load_pdf,
    "docx": load_docx,
}

_CONFINED = (
    "the opened file lies outside the folders this ingest is confined to (confine_to=; the server's "
    "--ingest-root): a link, or one swapped in after the path was checked; it was not read"
)
_WALKED_OUT = (
    "the opened file lies outside the ingested folders: a symbolic link, or one swapped in after the walk saw "
    f"the file; it was not read; {FOLLOW_HINT}"
)


class FileLoader:
    """Iterate the documents of files and folders, one file at a time (what ``ingest()`` streams).

    Iterating yields :class:`~m3e_rag.types.Document` s and, for large text files,
    :class:`~m3e_rag.ingest.loaders.StreamedDocument` s, in file order; :attr:`skipped`,
    :attr:`notes` and :attr:`files_seen` fill up as it goes. Arguments are checked at construction
    (see :func:`~m3e_rag.ingest.loaders.load_paths` for their meaning); iterate once.

    ``confine_to``: folders every file must lie in *once opened* (its real path), whatever the
    paths given or the links on the way; a file outside them is skipped unread, with the reason.

    Raises:
        InputError: a path or a ``confine_to`` folder does not exist, or an argument has the wrong
            type or range.

    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        text_field: str = "text",
        text_column: str = "text",
        *,
        follow_symlinks: bool = False,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        confine_to: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.paths = _as_path_list(paths)
        self.include = _as_patterns(include, "include")
        self.exclude = _as_patterns(exclude, "exclude")
        for name, value in (("text_field", text_field), ("text_column", text_column)):
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a non-empty string naming the field that holds the text")
        if not isinstance(follow_symlinks, bool):
            raise InputError(f"follow_symlinks must be True or False; got {follow_symlinks!r}")
        if max_file_bytes is not None and (
            isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 1
        ):
            raise InputError(
                f"max_file_bytes must be a positive number of bytes or None (no limit); got {max_file_bytes!r}"
            )
        missing = [p for p in self.paths if not os.path.lexists(p)]
        if missing:
            raise InputError(
                f"path does not exist: '{missing[0]}' (working directory: {Path.cwd()}); check the spelling"
            )
        self._confined = _confinement(confine_to)
        self._walked = Confinement(tuple(real_roots(self.paths)), _WALKED_OUT)
        self.options = LoadOptions(text_field=text_field, text_column=text_column)
        self.follow_symlinks = follow_symlinks
        self.max_file_bytes = max_file_bytes
        self.sink = Sink()
        self.files_seen = 0
        self.bytes_done = 0
        self._watched: dict[str, tuple[Path, bool, FileStamp]] = {}

    def estimate_bytes(self) -> int:
        """Total size of the files a load would read (a second, stat-only walk: for progress totals)."""
        total = 0
        for file, _ in iter_files(self.paths, self.include, self.exclude, self.follow_symlinks, []):
            try:
                size = os.stat(file).st_size
            except OSError:
                continue
            if self.max_file_bytes is None or size <= self.max_file_bytes:
                total += size
        return total

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files, records and rows that yielded no document so far, with the reason."""
        return self.sink.skipped

    @property
    def notes(self) -> list[SkippedFile]:
        """Files loaded with a caveat (invalid bytes replaced), so far."""
        return self.sink.notes

    def __iter__(self) -> Iterator[Yielded]:
        """Yield documents file by file (see the class docstring)."""
        seen: set[tuple[int, int] | str] = set()
        for file, walked in iter_files(self.paths, self.include, self.exclude, self.follow_symlinks,
                                       self.sink.skipped):
            key = file_identity(file)
            if key in seen:
                continue
            seen.add(key)
            self.files_seen += 1
            yield from self._load_file(file, walked)
            try:
                self.bytes_done += os.stat(file).st_size
            except OSError:
                pass

    # ------------------------------------------------------------ what the ingest run asks

    def changed(self, source: str) -> bool:
        """Whether the file loaded as ``source`` changed since it was opened (False for other sources)."""
        entry = self._watched.get(source)
        return entry is not None and entry[2].changed()

    def reread(self, source: str) -> Iterator[Yielded]:
        """Load the file of ``source`` again, with the same checks (nothing for an unknown source)."""
        entry = self._watched.pop(source, None)
        if entry is None:
            return iter(())
        return self._load_file(entry[0], entry[1])

    def forget(self, source: str) -> None:
        """Stop watching ``source`` (its chunks are stored)."""
        self._watched.pop(source, None)

    # ------------------------------------------------------------ one file

    def _confinements(self, walked: bool) -> list[Confinement]:
        """The folders a file must lie in once opened: ``confine_to``, and the walk's own when it applies."""
        out = [self._confined] if self._confined is not None else []
        if walked and not self.follow_symlinks:
            out.append(self._walked)
        return out

    def _load_file(self, path: Path, walked: bool) -> Iterator[Yielded]:
        """Yield one file's documents; never raises for a bad file (it is reported as skipped)."""
        source = display_path(path)
        name = display_name(path.name)
        suffix = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
        base = {"source": source, "file_name": name, "file_type": suffix}
        skips_before = len(self.sink.skipped)
        produced = False
        confinements = self._confinements(walked)
        try:
            fh, st = _open(path, confinements)
            with fh:
                if self.max_file_bytes is not None and st.st_size > self.max_file_bytes:
                    raise _Skip(over_size_limit(st.st_size, self.max_file_bytes))
                self._watched[source] = (path, walked, FileStamp.of(path, st))
                job = FileJob(path, source, base, st.st_size, self.options, self.sink, fh,
                              partial(_reopen, path, confinements), self.max_file_bytes)
                for doc in _LOADERS.get(suffix, load_text)(job):
                    produced = True
                    yield doc
        except Exception as exc:  # noqa: BLE001 - a malformed file must not stop a whole ingest
            self.sink.skipped.append(SkippedFile(source, _reason(exc)))
            if not produced:
                self._watched.pop(source, None)
            return
        if not produced and len(self.sink.skipped) == skips_before:
            self.sink.skipped.append(SkippedFile(source, "empty file (no text)"))
            self._watched.pop(source, None)


def _reason(exc: Exception) -> str:
    """Why a file was skipped, from what its loading raised."""
    if isinstance(exc, _Skip):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file: {exc.strerror or exc}"
    if isinstance(exc, (MemoryError, RecursionError)):
        return f"could not parse file ({type(exc).__name__})"
    return f"could not parse file ({type(exc).__name__}: {exc})"


def _open(path: Path, confinements: list[Confinement]) -> tuple[BinaryIO, os.stat_result]:
    """Open a file to load: a plain file (by ``stat``, so no device or FIFO is opened), checked once open."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            raise _Skip(_link_error(exc)) from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise _Skip("not a regular file")
    try:
        return open_checked(path, confinements)
    except OSError as exc:
        if os.path.islink(path):
            raise _Skip(_link_error(exc)) from None
        raise


def _reopen(path: Path, confinements: list[Confinement]) -> BinaryIO:
    """Open the same path again with the same checks (a stream read after the loader moved on)."""
    return open_checked(path, confinements)[0]


def _confinement(folders: Sequence[str | os.PathLike[str]] | None) -> Confinement | None:
    """The ``confine_to`` folders as real paths (they must exist)."""
    if folders is None:
        return None
    items = _as_path_list(folders)
    if not items:
        raise InputError("confine_to must name at least one folder (or be None: no confinement)")
    for folder in items:
        if not os.path.isdir(folder):
            raise InputError(f"confine_to folder {str(folder)!r} is not an existing folder")
    return Confinement(tuple(os.path.realpath(f) for f in items), _CONFINED)


def _as_path_list(paths: Any) -> list[Path]:
    """Normalize ``paths`` (a sequence, or one path) into a list of :class:`Path`."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    if not isinstance(paths, Iterable):
        raise InputError(f"paths must be a list of files or folders; got {type(paths).__name__}")
    out: list[Path] = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise InputError(f"each path must be a str or Path; got {type(p).__name__}")
        out.append(Path(p))
    return out


def _as_patterns(patterns: Sequence[str] | None, name: str) -> list[str] | None:
    """Normalize glob patterns (one pattern string is accepted too)."""
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    for p in items:
        if not isinstance(p, str) or not p:
            raise InputError(f"{name} patterns must be non-empty strings such as '*.md'; got {p!r}")
    return [p.replace("\\", "/").removeprefix("./") for p in items]
