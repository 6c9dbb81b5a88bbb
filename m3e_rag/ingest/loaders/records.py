"""Records of a JSON or CSV file: each record's text, or the reason it has none (internal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from m3e_rag.ingest.loaders._common import _Skip


def record_text(record: Any, text_field: str) -> str:
    """Return the text of one record, or raise :class:`_Skip` saying why there is none."""
    if isinstance(record, str):
        value: Any = record
    elif isinstance(record, Mapping):
        if text_field not in record:
            keys = ", ".join(sorted(map(str, record))[:8])
            raise _Skip(f"no '{text_field}' field (fields: {keys}); pass text_field= (CLI: --text-field) to pick one")
        value = record[text_field]
    else:
        raise _Skip(f"record is a {type(record).__name__}, not an object with a '{text_field}' field")
    if not isinstance(value, str):
        raise _Skip(f"'{text_field}' is a {type(value).__name__}, not a string")
    if not value.strip():
        raise _Skip(f"'{text_field}' is empty")
    return value
