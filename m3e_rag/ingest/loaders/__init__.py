r"""Load files and in-memory texts into :class:`~m3e_rag.types.Document` s.

Formats: ``.txt``/``.md`` (text as is; large files stream), ``.html``/``.htm`` (visible text;
script and style dropped), ``.pdf`` (pypdf, one document per page), ``.docx`` (python-docx),
``.json`` (an object or a list of objects), ``.jsonl``, ``.csv``/``.tsv``. Any other extension is
read as text when it decodes as text. One module per format; :mod:`.detect` picks encodings and
:mod:`.walk` walks folders (symlink policy, loops, filters).

**A bad file never stops a load**: it lands in :attr:`LoadResult.skipped` with the reason (binary,
empty, unreadable, over the size limit, a symlink loop or a link out of the ingested folders,
missing extra, bad JSON...); a bad record or row of a JSON/JSONL/CSV file is reported as
``"{path}#{index}"`` and the rest of the file still loads.

Design: **``source`` is always the file** (its absolute POSIX path, bytes that are not UTF-8
shown escaped as ``\\xff``), for every document a file yields, so that replacing or deleting a file
in an index (``delete(source=path)``) catches all of it. A PDF gives one document per page with
``page`` (1-based) in the metadata; JSON/JSONL give one document per record with ``record``
(0-based index in the list, or 0-based line number in JSONL); CSV gives one per row with ``row``
(0-based data row).

Every document's metadata holds ``source``, ``file_name``, ``file_type`` (extension, lower case,
no dot) and, for decoded text formats, ``encoding`` (plus ``decode_errors`` when invalid bytes were
replaced by U+FFFD); all values are str/int/float/bool, never None.

Limits: files over ``max_file_bytes`` (default :data:`DEFAULT_MAX_FILE_BYTES`, 512 MiB) are
skipped with the reason; text files over 8 MiB stream (bounded memory, see
:class:`StreamedDocument`); CSV fields over :data:`~m3e_rag.ingest.loaders.csvfile.MAX_FIELD_CHARS`
skip their row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.ingest.loaders._base import FileJob, FormatLoader, LoadOptions, Sink, Yielded
from m3e_rag.ingest.loaders._common import (
    DEFAULT_MAX_FILE_BYTES,
    LoadResult,
    SkippedFile,
    StreamedDocument,
    _Skip,
    clean_metadata,
    display_name,
    display_path,
    text_source,
)
from m3e_rag.ingest.loaders.csvfile import load_csv
from m3e_rag.ingest.loaders.detect import decode_bytes
from m3e_rag.ingest.loaders.docxfile import load_docx
from m3e_rag.ingest.loaders.htmlfile import load_html
from m3e_rag.ingest.loaders.jsonfile import load_json, load_jsonl
from m3e_rag.ingest.loaders.pdffile import load_pdf
from m3e_rag.ingest.loaders.textfile import load_text
from m3e_rag.ingest.loaders.walk import _link_error, file_identity, iter_files
from m3e_rag.types import Document

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FileLoader",
    "LoadResult",
    "SkippedFile",
    "StreamedDocument",
    "decode_bytes",
    "load_paths",
    "load_texts",
]

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


class FileLoader:
    """Iterate the documents of files and folders, one file at a time (what ``ingest()`` streams).

    Iterating yields :class:`~m3e_rag.types.Document` s and, for large text files,
    :class:`StreamedDocument` s, in file order; :attr:`skipped`, :attr:`notes` and
    :attr:`files_seen` fill up as it goes. Arguments are checked at construction (see
    :func:`load_paths` for their meaning); iterate once.

    Raises:
        InputError: a path does not exist, or an argument has the wrong type or range.

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
        self.options = LoadOptions(text_field=text_field, text_column=text_column)
        self.follow_symlinks = follow_symlinks
        self.max_file_bytes = max_file_bytes
        self.sink = Sink()
        self.files_seen = 0
        self.bytes_done = 0

    def estimate_bytes(self) -> int:
        """Total size of the files a load would read (a second, stat-only walk: for progress totals)."""
        total = 0
        for file in iter_files(self.paths, self.include, self.exclude, self.follow_symlinks, []):
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
        for file in iter_files(self.paths, self.include, self.exclude, self.follow_symlinks, self.sink.skipped):
            key = file_identity(file)
            if key in seen:
                continue
            seen.add(key)
            self.files_seen += 1
            yield from self._load_file(file)
            try:
                self.bytes_done += os.stat(file).st_size
            except OSError:
                pass

    def _load_file(self, path: Path) -> Iterator[Yielded]:
        """Yield one file's documents; never raises for a bad file (it is reported as skipped)."""
        source = display_path(path)
        name = display_name(path.name)
        suffix = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
        base = {"source": source, "file_name": name, "file_type": suffix}
        skips_before = len(self.sink.skipped)
        produced = False
        try:
            try:
                st = os.stat(path)
            except OSError as exc:
                if os.path.islink(path):
                    raise _Skip(_link_error(exc)) from None
                raise
            if not path.is_file():
                raise _Skip("not a regular file")
            if self.max_file_bytes is not None and st.st_size > self.max_file_bytes:
                raise _Skip(
                    f"file is {st.st_size:,} bytes, over the limit of {self.max_file_bytes:,} bytes; "
                    "raise max_file_bytes= (CLI: --max-file-size) to load it"
                )
            job = FileJob(path, source, base, st.st_size, self.options, self.sink)
            loader = _LOADERS.get(suffix, load_text)
            for doc in loader(job):
                produced = True
                yield doc
        except _Skip as exc:
            self.sink.skipped.append(SkippedFile(source, str(exc)))
            return
        except OSError as exc:
            self.sink.skipped.append(SkippedFile(source, f"cannot read file: {exc.strerror or exc}"))
            return
        except (MemoryError, RecursionError) as exc:
            self.sink.skipped.append(SkippedFile(source, f"could not parse file ({type(exc).__name__})"))
            return
        except Exception as exc:  # noqa: BLE001 - a malformed file must not stop a whole ingest
            self.sink.skipped.append(SkippedFile(source, f"could not parse file ({type(exc).__name__}: {exc})"))
            return
        if not produced and len(self.sink.skipped) == skips_before:
            self.sink.skipped.append(SkippedFile(source, "empty file (no text)"))


# ---------------------------------------------------------------------- public entry points


def load_paths(
    paths: Sequence[str | os.PathLike[str]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    text_field: str = "text",
    text_column: str = "text",
    *,
    follow_symlinks: bool = False,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> LoadResult:
    """Load files and folders (walked recursively) into documents.

    Folders are walked in sorted order; files and folders whose name starts with ``.`` are left
    out. ``include``/``exclude`` are glob patterns (``fnmatch``, case-sensitive) matched against
    each file's path relative to the folder given (``*.md``, ``**/*.md``, ``docs/**``); a pattern
    without ``/`` also matches the bare file name, and an excluded folder is not entered. Files
    named directly in ``paths`` are always loaded, whatever the patterns say.

    This reads every document whole into memory (large text files included); ``ingest()`` uses
    :class:`FileLoader` instead, which streams them.

    Args:
        paths: files and folders to load (a single path is accepted too).
        include: load only files matching one of these patterns (``None``: all files).
        exclude: leave out files (and folders) matching one of these patterns.
        text_field: the key holding the text in JSON and JSONL records.
        text_column: the column holding the text in CSV/TSV files.
        follow_symlinks: follow symbolic links whose target lies outside the given paths
            (by default they are reported as skipped; see :mod:`m3e_rag.ingest.loaders.walk`).
        max_file_bytes: skip (and report) files larger than this; ``None`` for no limit.

    Returns:
        The documents, the skipped files with reasons, the number of files tried, and notes.

    Raises:
        InputError: a path does not exist, or an argument has the wrong type.

    """
    loader = FileLoader(
        paths, include, exclude, text_field, text_column, follow_symlinks=follow_symlinks,
        max_file_bytes=max_file_bytes,
    )
    documents: list[Document] = []
    for doc in loader:
        if isinstance(doc, StreamedDocument):
            try:
                documents.append(doc.to_document())
            except OSError as exc:
                loader.skipped.append(SkippedFile(doc.source, f"cannot read file: {exc.strerror or exc}"))
        else:
            documents.append(doc)
    return LoadResult(documents=documents, skipped=loader.skipped, files_seen=loader.files_seen, notes=loader.notes)


def load_texts(
    texts: Sequence[str],
    sources: Sequence[str] | None = None,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[Document]:
    """Wrap in-memory texts as documents.

    Args:
        texts: the texts, one document each (empty texts are kept; they yield no chunk).
        sources: a source name per text; by default ``"text:<first 16 hex of sha1(text)>"``,
            stable across runs so re-ingesting the same text replaces it.
        metadatas: metadata per text (``None`` entries allowed). Values must be str, int, float or
            bool; keys whose value is ``None`` are dropped. ``source`` is set to the source.

    Returns:
        One :class:`~m3e_rag.types.Document` per text, in order.

    Raises:
        InputError: ``texts`` is a bare string or holds a non-string, a length does not match,
            or a metadata value is not a scalar.

    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError("texts must be a list of strings (wrap a single text in a list)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is a {type(text).__name__}, not a str; pass decoded text")
    if sources is not None:
        if isinstance(sources, str) or len(sources) != len(texts):
            raise InputError(
                f"sources must be a list with one name per text ({len(texts)}); "
                f"got {'a str' if isinstance(sources, str) else len(sources)}"
            )
        for i, src in enumerate(sources):
            if not isinstance(src, str) or not src:
                raise InputError(f"sources[{i}] must be a non-empty string; got {src!r}")
    if metadatas is not None and len(metadatas) != len(texts):
        raise InputError(f"metadatas must have one entry per text ({len(texts)}); got {len(metadatas)}")
    documents: list[Document] = []
    for i, text in enumerate(texts):
        source = sources[i] if sources is not None else text_source(text)
        meta = clean_metadata(metadatas[i] if metadatas is not None else None, f"metadatas[{i}]")
        meta["source"] = source
        documents.append(Document(text=text, source=source, metadata=meta))
    return documents


# ---------------------------------------------------------------------- argument helpers


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
