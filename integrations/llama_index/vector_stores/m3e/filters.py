"""LlamaIndex ``MetadataFilters`` -> Chroma ``where`` / ``where_document``, exactly or not at all.

What Chroma can express is translated; what it cannot raises :class:`~m3e_rag.errors.InputError`
naming the operator (a filter dropped or approximated would return wrong results silently).

=============================  ==========================================================
LlamaIndex                     Chroma
=============================  ==========================================================
EQ, NE, GT, GTE, LT, LTE       ``{key: {"$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte": v}}``
IN, NIN                        ``{key: {"$in" | "$nin": [..]}}``
TEXT_MATCH (key ``text``)      ``where_document={"$contains": v}`` (the node's text)
TEXT_MATCH_INSENSITIVE         ``where_document={"$regex": "(?i)<escaped v>"}``
CONTAINS (list metadata)       ``{key: {"$contains": v}}``
ANY / ALL (list metadata)      ``$or`` / ``$and`` of ``{key: {"$contains": v}}``
condition AND / OR             ``{"$and": [..]}`` / ``{"$or": [..]}``, nested MetadataFilters too
condition NOT                  De Morgan: EQ<->NE, IN<->NIN, contains<->not_contains, AND<->OR
IS_EMPTY                       refused: Chroma cannot test for a missing key
NOT over GT/GTE/LT/LTE         refused: Chroma's negated range skips records lacking the key,
                               which LlamaIndex's NOT would keep
=============================  ==========================================================

A text match cannot be OR-ed with a metadata condition (Chroma ANDs ``where`` and ``where_document``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from m3e_rag.errors import InputError

__all__ = ["to_chroma_filters", "combine_where", "TEXT_KEYS"]

#: Keys that name the node's text (not a metadata field) in a TEXT_MATCH filter.
TEXT_KEYS = frozenset({"text", "document", "content"})

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
_NEGATED = {"$eq": "$ne", "$ne": "$eq", "$in": "$nin", "$nin": "$in"}
_REFUSED = {
    FilterOperator.IS_EMPTY: "Chroma cannot test whether a key is missing or empty; store an explicit value "
    "(e.g. '') and filter with EQ",
}

Clause = dict[str, Any]
_Pair = tuple[Clause | None, Clause | None]


def to_chroma_filters(filters: MetadataFilters | None) -> _Pair:
    """Translate LlamaIndex filters into Chroma's ``(where, where_document)`` (each None when empty).

    Raises:
        InputError: an operator or combination Chroma cannot express, named.
    """
    if filters is None:
        return None, None
    if not isinstance(filters, MetadataFilters):
        raise InputError(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}; build them with "
            "MetadataFilters(filters=[MetadataFilter(key=..., value=..., operator=...)])."
        )
    return _node(filters, negate=False)


def combine_where(*clauses: Mapping[str, Any] | None) -> Clause | None:
    """AND together the non-empty clauses (None when there are none)."""
    parts = [dict(c) for c in clauses if c]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _node(filters: MetadataFilters, negate: bool) -> _Pair:
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:  # NOT(a, b) = AND(not a, not b)
        child_negate, combine = not negate, ("$or" if negate else "$and")
    elif condition == FilterCondition.AND:
        child_negate, combine = negate, ("$or" if negate else "$and")
    elif condition == FilterCondition.OR:
        child_negate, combine = negate, ("$and" if negate else "$or")
    else:  # pragma: no cover - a future condition
        raise InputError(f"Filter condition {condition!r} cannot be expressed in Chroma; use and, or, not.")
    pairs = [
        _node(f, child_negate) if isinstance(f, MetadataFilters) else _leaf(f, child_negate) for f in filters.filters
    ]
    wheres = [w for w, _ in pairs if w]
    docs = [d for _, d in pairs if d]
    if combine == "$or" and wheres and docs:
        raise InputError(
            "Chroma cannot OR a text match (TEXT_MATCH) with a metadata condition: it ANDs where and "
            "where_document. Run two queries, or AND them."
        )
    if combine == "$or" and any(w and d for w, d in pairs):
        raise InputError("Chroma cannot OR a group that mixes a text match with metadata conditions.")
    return _join(combine, wheres), _join(combine, docs)


def _join(op: str, clauses: list[Clause]) -> Clause | None:
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {op: clauses}


def _contains(f: MetadataFilter, negate: bool) -> Clause:
    """CONTAINS / ANY / ALL on list metadata (Chroma's ``$contains`` looks inside a stored list)."""
    op = f.operator
    values = f.value if isinstance(f.value, list) else [f.value]
    if op == FilterOperator.CONTAINS and isinstance(f.value, list):
        raise InputError(f"CONTAINS on {f.key!r} takes one value, got the list {f.value!r}; use ANY or ALL.")
    if not values or any(v is None for v in values):
        raise InputError(f"{op.name} on {f.key!r} needs a value (or a non-empty list for ANY / ALL), got {f.value!r}.")
    clauses: list[Clause] = [{f.key: {"$not_contains" if negate else "$contains": v}} for v in values]
    # ANY = OR of contains, ALL = AND of contains; NOT swaps both the operator and the combinator.
    combine = "$or" if (op == FilterOperator.ANY) != negate else "$and"
    return clauses[0] if len(clauses) == 1 else {combine: clauses}


def _leaf(f: MetadataFilter, negate: bool) -> _Pair:
    op = f.operator
    if op in _REFUSED:
        raise InputError(
            f"MetadataFilter operator {op.name} ({f.key!r}) cannot be expressed in Chroma: {_REFUSED[op]}."
        )
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if f.key not in TEXT_KEYS:
            raise InputError(
                f"MetadataFilter {op.name} on metadata key {f.key!r} cannot be expressed in Chroma, which matches "
                f"substrings of the node text only; use key='text' for that, or EQ/IN on {f.key!r}."
            )
        if not isinstance(f.value, str) or not f.value:
            raise InputError(f"{op.name} needs a non-empty string value, got {f.value!r}.")
        if op == FilterOperator.TEXT_MATCH:
            return None, {"$not_contains" if negate else "$contains": f.value}
        return None, {"$not_regex" if negate else "$regex": "(?i)" + re.escape(f.value)}
    if op in (FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.ALL):
        return _contains(f, negate), None
    if op not in _OPS:  # pragma: no cover - a future operator
        raise InputError(f"MetadataFilter operator {op!r} cannot be expressed in Chroma.")
    value = f.value
    if value is None:
        raise InputError(
            f"MetadataFilter on {f.key!r} has value None; Chroma stores no None values (keys set to None are "
            "not stored), so nothing could match. Filter on a real value."
        )
    chroma_op = _OPS[op]
    if chroma_op in ("$in", "$nin"):
        if not isinstance(value, list) or not value:
            raise InputError(f"{op.name} on {f.key!r} needs a non-empty list value, got {value!r}.")
    elif isinstance(value, list):
        raise InputError(f"{op.name} on {f.key!r} takes one value, got the list {value!r}; use IN or NIN.")
    if negate:
        if chroma_op not in _NEGATED:
            raise InputError(
                f"NOT over {op.name} ({f.key!r}) cannot be expressed exactly in Chroma: its negated range would skip "
                "records without the key, which NOT keeps. Use the opposite operator under and/or instead."
            )
        chroma_op = _NEGATED[chroma_op]
    return {f.key: {chroma_op: value}}, None
