"""CSV/TSV with a header row: one document per row's ``text_column``; ``row`` is the 0-based data row.

Per-row errors skip the row, never the file: the file is cut into records by quote parity (a
record ends at a line break outside quotes), each record is parsed on its own, and a record that
is malformed or holds a field over :data:`MAX_FIELD_CHARS` is reported as ``"{path}#{row}"`` with
the reason while the rows around it load. Blank lines are not rows (as with ``csv.DictReader``).
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator

from m3e_rag.ingest.loaders._base import FileJob, Yielded, read_text
from m3e_rag.ingest.loaders._common import SkippedFile, _Skip
from m3e_rag.ingest.loaders.records import record_text
from m3e_rag.types import Document

__all__ = ["load_csv", "MAX_FIELD_CHARS"]

#: Largest CSV field read, in characters (the csv module's own default is 131,072). A row with a
#: larger field is skipped with this reason; put such a text in a file of its own.
MAX_FIELD_CHARS = 16 * 1024 * 1024

_FIELD_LIMIT_LOCK = threading.Lock()


def _records(raw: str) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of each record: lines joined until the quotes are balanced."""
    parts: list[str] = []
    quotes = 0
    first = 0
    for number, line in enumerate(io.StringIO(raw, newline="")):
        if not parts:
            first = number
        parts.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            yield first, "".join(parts)
            parts, quotes = [], 0
    if parts:
        yield first, "".join(parts)


def _parse(record: str, delimiter: str) -> list[list[str]]:
    """Parse one record with the field limit raised to :data:`MAX_FIELD_CHARS` (restored after)."""
    with _FIELD_LIMIT_LOCK:
        previous = csv.field_size_limit(MAX_FIELD_CHARS)
        try:
            return list(csv.reader(io.StringIO(record, newline=""), delimiter=delimiter))
        finally:
            csv.field_size_limit(previous)


def load_csv(job: FileJob) -> Iterator[Yielded]:
    """Yield one document per data row with text in ``text_column``."""
    raw, _, meta = read_text(job)
    delimiter = "\t" if job.path.suffix.lower() == ".tsv" else ","
    column = job.options.text_column
    records = _records(raw)
    header: list[str] | None = None
    position = 0
    row_index = 0
    for line, record in records:
        if len(record) > MAX_FIELD_CHARS and header is not None:
            job.sink.skipped.append(SkippedFile(
                f"{job.source}#{row_index}",
                f"row at line {line + 1} is {len(record):,} characters, over the CSV field limit of "
                f"{MAX_FIELD_CHARS:,}; put that text in a file of its own",
            ))
            row_index += 1
            continue
        try:
            rows = _parse(record, delimiter)
        except csv.Error as exc:
            if header is None:
                raise _Skip(f"invalid CSV header: {exc}") from None
            job.sink.skipped.append(SkippedFile(f"{job.source}#{row_index}", f"invalid CSV at line {line + 1}: {exc}"))
            row_index += 1
            continue
        for row in rows:
            if not row:
                continue
            if header is None:
                header = row
                if column not in header:
                    shown = ", ".join(str(c) for c in header[:8])
                    raise _Skip(f"no '{column}' column (columns: {shown}); "
                                "pass text_column= (CLI: --text-column) to pick one")
                position = header.index(column)
                continue
            value = row[position] if position < len(row) else ""
            try:
                text = record_text({column: value}, column)
            except _Skip as exc:
                job.sink.skipped.append(SkippedFile(f"{job.source}#{row_index}", str(exc)))
            else:
                yield Document(text=text, source=job.source, metadata={**meta, "row": row_index})
            row_index += 1
    if header is None:
        raise _Skip("empty CSV (no header row)")
