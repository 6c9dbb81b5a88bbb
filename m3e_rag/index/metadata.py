"""Record metadata: what a chunk may carry into Chroma, checked before anything is written.

One owner for the rules (the store, the ingest run and the framework adapters all call
:func:`check_metadata` / :func:`clean_metadata`), so every door refuses the same things:

- **Keys** are non-empty strings that do not start with ``$`` or ``#`` (Chroma reserves them for
  filter operators and its own fields: ``{"$and": 1}`` would make ``where`` ambiguous, and Chroma refuses
  such a record with an error that names no key) and are not ``chroma:document``.
- **Values** are str, int, float or bool, or a non-empty list of one of those kinds; ``None`` values are
  dropped (Chroma refuses them). A float must be finite: Chroma stores NaN and infinities as ``None``
  without a word, so the value would be lost and no filter could ever match it.

Each refusal is an :class:`~m3e_rag.errors.InputError` naming the record, the key and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.types import Metadata

__all__ = ["RESERVED_KEY_PREFIXES", "check_metadata", "clean_metadata"]

#: First characters of a metadata key Chroma reserves ($ for filter operators, # for its own fields).
RESERVED_KEY_PREFIXES = ("$", "#")
_RESERVED_KEYS = frozenset({"chroma:document"})


def _scalar_kind(value: object) -> str | None:
    """'bool', 'number' or 'str' for a value Chroma can store in a metadata list, else None."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else None


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise InputError(f"{where} has the key {key!r} ({type(key).__name__}); metadata keys must be strings.")
    if not key:
        raise InputError(f"{where} has an empty key ''; metadata keys must be non-empty strings.")
    if key.startswith(RESERVED_KEY_PREFIXES) or key in _RESERVED_KEYS:
        raise InputError(
            f"{where} has the key {key!r}; metadata keys may not start with '$' or '#' (reserved for filter "
            "operators and Chroma's own fields) nor be 'chroma:document': rename it, e.g. "
            f"{key.lstrip('$#') or 'name'!r}."
        )
    return key


def _check_value(key: str, value: object, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(
            f"{where}[{key!r}] is {value!r}; metadata numbers must be finite (Chroma would store it as nothing): "
            "drop the key or store a finite number or a string."
        )
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and value and len({_scalar_kind(v) for v in value} - {None}) == 1 and all(
        _scalar_kind(v) for v in value
    ):
        for item in value:
            _check_value(key, item, where)
        return list(value)
    raise InputError(
        f"{where}[{key!r}] is {type(value).__name__} ({value!r:.60}); Chroma stores only str, int, float, bool or a "
        f"non-empty list of one of those. Flatten it (e.g. {{'{key}.field': ...}}) or store it as a JSON string "
        "yourself."
    )


def clean_metadata(metadata: Mapping[str, Any] | None, where: str = "metadata") -> Metadata | None:
    """``metadata`` as Chroma stores it: ``None`` values dropped, everything else checked (see the module doc).

    Args:
        metadata: one record's metadata (None: no metadata).
        where: how to name the record in a refusal (``"metadatas[3]"``).

    Returns:
        The cleaned copy, or None when nothing is left (Chroma refuses an empty dict).

    Raises:
        InputError: naming the record, the key and the rule it breaks.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InputError(f"{where} must be a dict of metadata, got {type(metadata).__name__}.")
    out: Metadata = {}
    for key, value in metadata.items():
        name = _check_key(key, where)
        if value is None:
            continue
        out[name] = _check_value(name, value, where)
    return out or None


def check_metadata(metadata: Mapping[str, Any] | None, where: str = "metadata") -> None:
    """Raise :class:`~m3e_rag.errors.InputError` if Chroma cannot store ``metadata`` as given (see the module doc)."""
    clean_metadata(metadata, where)
