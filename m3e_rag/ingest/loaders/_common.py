"""Shared pieces of the loaders: result types, the internal skip signal, paths and metadata helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.types import Document, Metadata

#: Default per-file size limit of :func:`~m3e_rag.ingest.loaders.load_paths` and ``ingest()`` (512 MiB).
#: Plain text streams (memory stays bounded whatever the size), but JSON, HTML, PDF and DOCX are
#: parsed whole and take several times their size in RAM; a file over this is almost always a dump,
#: an archive or a log nobody meant to index. Raise it with ``max_file_bytes=`` / ``--max-file-size``.
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class SkippedFile:
    r"""A file (or one record of a file, ``"{path}#{index}"``) that produced no document.

    Attributes:
        path: absolute POSIX path of the file, with ``#index`` for a JSON/JSONL record or CSV row.
            Bytes of the name that are not UTF-8 are shown escaped (``x\\xff.txt``).
        reason: why it was skipped, and what to do about it where something can be done.

    """

    path: str
    reason: str


@dataclass(frozen=True)
class LoadResult:
    """What :func:`~m3e_rag.ingest.loaders.load_paths` found.

    Attributes:
        documents: the loaded documents, in file order (folders walked in sorted order).
        skipped: files, records and rows that yielded no document, with the reason.
        files_seen: files that passed the include/exclude filters and were opened or tried.
        notes: files loaded with a caveat worth knowing (invalid bytes replaced by U+FFFD), as
            ``(path, message)`` pairs in the shape of :class:`SkippedFile`.

    """

    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files_seen: int = 0
    notes: list[SkippedFile] = field(default_factory=list)


@dataclass(frozen=True)
class StreamedDocument:
    """A text file too large to hold whole: its text arrives as a stream of segments.

    The pipeline chunks it segment by segment (chunk offsets stay exact offsets into the whole
    text); :meth:`read_text` joins it for callers that want a :class:`~m3e_rag.types.Document`.

    Attributes:
        source: the file, as for a :class:`~m3e_rag.types.Document`.
        metadata: the file's metadata (``source``, ``file_name``, ``file_type``, ``encoding``).
        segments: a callable returning a fresh iterator over the decoded text, in order.
        size_bytes: the file's size.

    """

    source: str
    metadata: Metadata
    segments: Callable[[], Iterator[str]]
    size_bytes: int = 0

    def read_text(self) -> str:
        """Return the whole text (memory grows with the file: prefer iterating :attr:`segments`)."""
        return "".join(self.segments())

    def to_document(self) -> Document:
        """The same file as an ordinary :class:`~m3e_rag.types.Document` (reads it whole)."""
        return Document(text=self.read_text(), source=self.source, metadata=dict(self.metadata))


class _Skip(Exception):
    """Internal: the current file (or record) cannot be loaded; the message is the reason."""


def over_size_limit(size: int, limit: int, grew: bool = False) -> str:
    """The reason given for a file over ``max_file_bytes`` (``grew``: it passed the check, then grew)."""
    what = "file grew past the limit while being read" if grew else f"file is {size:,} bytes"
    return f"{what}, over the limit of {limit:,} bytes; raise max_file_bytes= (CLI: --max-file-size) to load it"


def display_path(path: str | os.PathLike[str]) -> str:
    r"""Absolute POSIX form of a path (symlinks kept as given), undecodable bytes escaped.

    A name with bytes that are not UTF-8 (``x\\xff.txt``) is shown as ``x\\xff.txt``, with a
    literal backslash: a printable, storable string derived from the raw bytes (``os.fsencode``)
    that chunk ids are computed from.
    """
    raw = os.fsencode(os.path.abspath(path))
    text = raw.decode("utf-8", "backslashreplace")
    return Path(text).as_posix()


def display_name(name: str) -> str:
    """A file name with undecodable bytes escaped (see :func:`display_path`)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def text_source(text: str) -> str:
    """Stable default source for an in-memory text."""
    return "text:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def clean_metadata(meta: Mapping[str, Any] | None, where: str) -> Metadata:
    """Copy metadata, dropping ``None`` values and refusing values Chroma cannot store."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InputError(f"{where} must be a dict; got {type(meta).__name__}")
    out: Metadata = {}
    for key, value in meta.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise InputError(f"{where} has a non-string key {key!r}; metadata keys must be strings")
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(
                f"{where}[{key!r}] is a {type(value).__name__}; metadata values must be str, int, float "
                "or bool (convert it, e.g. to a JSON string)"
            )
        out[key] = value
    return out
