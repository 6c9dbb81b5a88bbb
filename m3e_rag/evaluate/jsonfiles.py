"""The JSON files of evaluation, read and written in one place.

Two kinds, with two ways of failing:

- labelled sets a user hands over (SQuAD files, JSONL queries and corpora): :func:`read_json` and
  :func:`read_jsonl` raise :class:`~m3e_rag.errors.InputError` naming the file (and line) and what to fix;
- the comparison cache this package writes itself (results, index records): :func:`write_json` replaces
  a file atomically, and :func:`read_json_or_none` reads one back, treating a missing or unreadable
  file as absent (it is then measured again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError

__all__ = ["read_json", "read_jsonl", "read_json_or_none", "write_json"]


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file a user named; ``what`` (``queries``, ``corpus``) starts every error message."""
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist; pass an existing file.")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 ({exc.reason}); convert it to UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} file {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); "
            "pass a SQuAD-format file or a JSONL file."
        ) from exc


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file a user named (at least one)."""
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist; pass an existing file.")
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for n, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{what} file {str(path)!r}, line {n}, is not JSON ({exc.msg}); "
                        "write one JSON object per line."
                    ) from exc
                if not isinstance(row, dict):
                    raise InputError(f"{what} file {str(path)!r}, line {n}, is not a JSON object.")
                rows.append((n, row))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 ({exc.reason}); convert it to UTF-8.") from exc
    if not rows:
        raise InputError(f"{what} file {str(path)!r} is empty; write one JSON object per line.")
    return rows


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json_or_none(path: Path) -> Any:
    """A JSON file this package wrote, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
