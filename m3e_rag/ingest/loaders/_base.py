"""What every per-format loader receives and yields (internal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from m3e_rag.ingest.loaders._common import SkippedFile, StreamedDocument, _Skip, over_size_limit
from m3e_rag.ingest.loaders.detect import decode_detail, html_charset
from m3e_rag.types import Document, Metadata


@dataclass(frozen=True)
class LoadOptions:
    """Options that reach the per-format loaders."""

    text_field: str = "text"
    text_column: str = "text"


@dataclass
class Sink:
    """Where a loader reports skipped records and notes while it yields documents."""

    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[SkippedFile] = field(default_factory=list)


@dataclass(frozen=True)
class FileJob:
    """One file to load: the file open for reading, its display source and the base metadata.

    ``fh`` was opened and checked by the file loader (see :mod:`.opening`) and stays open while
    the format loader runs: read it (:meth:`read_bytes`), never ``path``, which may name another
    file by now. ``reopen`` opens the same path again with the same checks, for a stream read after
    the loader has moved on (:class:`~m3e_rag.ingest.loaders.StreamedDocument`).
    """

    path: Path
    source: str
    base: Metadata
    size: int
    options: LoadOptions
    sink: Sink
    fh: BinaryIO
    reopen: Callable[[], BinaryIO]
    limit: int | None = None

    def read_bytes(self) -> bytes:
        """The whole file, read from the checked open file; ``_Skip`` if it grew past the size limit."""
        self.fh.seek(0)
        if self.limit is None:
            return self.fh.read()
        data = self.fh.read(self.limit + 1)
        if len(data) > self.limit:
            raise _Skip(over_size_limit(len(data), self.limit, grew=True))
        return data


Yielded = Document | StreamedDocument
FormatLoader = Callable[[FileJob], Iterator[Yielded]]


def read_text(job: FileJob, declared_from_html: bool = False) -> tuple[str, str, Metadata]:
    """Read and decode a whole text file; returns ``(text, encoding, metadata)``; raises ``_Skip``."""
    data = job.read_bytes()
    if not data.strip():
        raise _Skip("empty file")
    declared = html_charset(data) if declared_from_html else None
    text, encoding, n_bad = decode_detail(data, declared)
    del data
    if not text.strip():
        raise _Skip("empty file (whitespace only)")
    meta: Metadata = {**job.base, "encoding": encoding}
    if n_bad:
        meta["decode_errors"] = n_bad
        job.sink.notes.append(
            SkippedFile(job.source, f"decoded as {encoding} with {n_bad} invalid byte(s) replaced by U+FFFD")
        )
    return text, encoding, meta
