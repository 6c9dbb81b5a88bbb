r"""Load files and in-memory texts into :class:`~m3e_rag.types.Document` s.

Formats: ``.txt``/``.md`` (text as is; large files stream), ``.html``/``.htm`` (visible text;
script and style dropped), ``.pdf`` (pypdf, one document per page), ``.docx`` (python-docx),
``.json`` (an object or a list of objects), ``.jsonl``, ``.csv``/``.tsv``. Any other extension is
read as text when it decodes as text. One module per format; :mod:`.detect` picks encodings,
:mod:`.walk` walks folders (symlink policy, loops, filters), :mod:`.opening` checks each file where it
is opened (confinement, links swapped in late) and :mod:`.archive` bounds what a .docx expands to;
:mod:`.files` holds :class:`FileLoader`, which ties them together.

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

Limits: files over ``max_file_bytes`` (default :data:`DEFAULT_MAX_FILE_BYTES`, 512 MiB), and
.docx files that expand to more than that or more than 100 times a member's compressed size, are
skipped with the reason; text files over 8 MiB stream (bounded memory, see
:class:`StreamedDocument`); CSV fields over :data:`~m3e_rag.ingest.loaders.csvfile.MAX_FIELD_CHARS`
skip their row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.ingest.loaders._common import (
    DEFAULT_MAX_FILE_BYTES,
    LoadResult,
    SkippedFile,
    StreamedDocument,
    clean_metadata,
    text_source,
)
from m3e_rag.ingest.loaders.detect import decode_bytes
from m3e_rag.ingest.loaders.files import FileLoader
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
    confine_to: Sequence[str | os.PathLike[str]] | None = None,
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
        max_file_bytes: skip (and report) files larger than this, and archives (.docx) that expand
            to more than this once unzipped; ``None`` for no limit (the expansion ratio of an archive
            stays bounded, see :mod:`m3e_rag.ingest.loaders.archive`).
        confine_to: folders every file must lie in once opened (checked on the open file, so a
            path swapped for a link after it was checked is still refused); ``None``: no confinement.

    Returns:
        The documents, the skipped files with reasons, the number of files tried, and notes.

    Raises:
        InputError: a path does not exist, or an argument has the wrong type.

    """
    loader = FileLoader(
        paths, include, exclude, text_field, text_column, follow_symlinks=follow_symlinks,
        max_file_bytes=max_file_bytes, confine_to=confine_to,
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
