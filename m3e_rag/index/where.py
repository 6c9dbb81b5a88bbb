"""Chroma's metadata filter (``where``) evaluated on records already fetched, where the answer is certain.

Why: filtered BM25 walks the head of its own ranking and keeps the chunks the filter allows
(``Searcher._sparse_search`` in :mod:`m3e_rag.retrieve.searcher`). Asking Chroma (``get(ids=head, where=...)``)
is slow even for a short head, because Chroma resolves the whole filter first; fetching the head by id and
evaluating the filter here is far cheaper (figures: benchmarks/README.md, 'Design figures').

Exactness over coverage: :func:`match_where` answers ``True`` or ``False`` only where Chroma's answer is
certain, and ``None`` otherwise (a key the record lacks under ``$ne``/``$nin``, an int compared with a
float, a bool with a number, list-valued metadata, ``$contains``, an operator it does not know); the
caller then takes Chroma's own path. ``tests/index/test_where.py`` checks every certain answer against Chroma
itself on generated records and filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["match_where"]

_ORDER = {"$gt", "$gte", "$lt", "$lte"}


def _kind(value: Any) -> type | None:
    """The scalar kind Chroma stores a value as (bool before int: True is an int in Python)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    return None


def _field(op: str, operand: Any, present: bool, value: Any) -> bool | None:
    """One ``{key: {op: operand}}`` on a record whose value is ``value`` (``present`` False: key missing)."""
    if op in ("$eq", "$in") or op in _ORDER:
        if not present:
            return False
    elif op in ("$ne", "$nin"):
        if not present:
            return None  # whether Chroma matches records without the key: not relied on
    else:
        return None
    kind = _kind(value)
    if kind is None:
        return None  # list-valued or other metadata
    if op in ("$eq", "$ne"):
        if _kind(operand) is not kind:
            return None
        return (value == operand) is (op == "$eq")
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand or any(_kind(x) is not kind for x in operand):
            return None
        return (value in operand) is (op == "$in")
    if kind not in (int, float) or _kind(operand) is not kind:
        return None
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    return bool(value <= operand)


def match_where(where: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool | None:
    """Whether a record with ``metadata`` matches the (validated) Chroma filter ``where``; None if unsure."""
    if len(where) != 1:
        return None
    ((key, value),) = where.items()
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            return None
        answers = [match_where(part, metadata) if isinstance(part, Mapping) else None for part in value]
        if key == "$and":
            return False if False in answers else (None if None in answers else True)
        return True if True in answers else (None if None in answers else False)
    if key.startswith("$"):
        return None
    if isinstance(value, Mapping):
        if len(value) != 1:
            return None
        ((op, operand),) = value.items()
    else:
        op, operand = "$eq", value
    return _field(op, operand, key in metadata, metadata.get(key))
