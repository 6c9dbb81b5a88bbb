"""JSON (an object, or a list of objects or strings) and JSON Lines: one document per record.

``record`` in the metadata is the 0-based index in the list (JSON) or the 0-based line number
(JSONL). A record without usable text, or a JSONL line that is not valid JSON, is reported as
``"{path}#{index}"`` with the reason; the other records still load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from m3e_rag.ingest.loaders._base import FileJob, Yielded, read_text
from m3e_rag.ingest.loaders._common import SkippedFile, _Skip
from m3e_rag.ingest.loaders.records import record_text
from m3e_rag.types import Document

__all__ = ["load_json", "load_jsonl"]


def load_json(job: FileJob) -> Iterator[Yielded]:
    """JSON: one object, or a list of objects (or strings); each record's ``text_field``."""
    raw, _, meta = read_text(job)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _Skip(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _Skip("invalid JSON: nested too deeply to parse") from None
    del raw
    field = job.options.text_field
    if isinstance(data, list):
        for index, record in enumerate(data):
            try:
                text = record_text(record, field)
            except _Skip as exc:
                job.sink.skipped.append(SkippedFile(f"{job.source}#{index}", str(exc)))
                continue
            yield Document(text=text, source=job.source, metadata={**meta, "record": index})
        return
    if isinstance(data, Mapping):
        try:
            text = record_text(data, field)
        except _Skip as exc:
            raise _Skip(f"the JSON object has {exc}") from None
        yield Document(text=text, source=job.source, metadata={**meta, "record": 0})
        return
    raise _Skip(f"JSON top level is a {type(data).__name__}; expected an object or a list of objects")


def load_jsonl(job: FileJob) -> Iterator[Yielded]:
    """JSON Lines: one record per non-blank line; ``record`` is the 0-based line number."""
    raw, _, meta = read_text(job)
    field = job.options.text_field
    for index, line in enumerate(raw.splitlines()):
        if not line.strip():
            continue
        where = f"{job.source}#{index}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            job.sink.skipped.append(SkippedFile(where, f"invalid JSON on line {index + 1}: {exc.msg}"))
            continue
        except RecursionError:
            job.sink.skipped.append(SkippedFile(where, f"invalid JSON on line {index + 1}: nested too deeply"))
            continue
        try:
            text = record_text(record, field)
        except _Skip as exc:
            job.sink.skipped.append(SkippedFile(where, str(exc)))
            continue
        yield Document(text=text, source=job.source, metadata={**meta, "record": index})
