"""A learned-sparse index: a model's own lexical weights (BGE-M3's sparse head) in the BM25 postings store.

BGE-M3 (and any model folder shipping its ``sparse_linear.pt`` head) gives each text a bag of
*lexical weights*: token id -> weight (ReLU of the sparse head, the max per token id, special tokens
dropped). FlagEmbedding scores a query against a passage by its *lexical matching score*, the sum over
the token ids they share of ``q_weight * d_weight``. :class:`LearnedSparseIndex` answers that score
for every chunk at once from postings, exactly as :class:`~m3e_rag.index.sparse.bm25.SparseIndex`
answers BM25: it IS that index (the same positions, tombstones, CSC block, delta, compaction, filters
and snapshot folder), with float32 weights in the place of term counts (``VALUE_DTYPE``) and the
product sum in the place of the BM25 formula. Terms are token ids as strings (FlagEmbedding's keys).

Why postings and not Chroma: Chroma has no sparse vectors; the postings store is already persistent,
crash-safe and filter-exact, and its write cost is O(size of the write). Persisting it is
:mod:`m3e_rag.index.sparse.learned_side`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from m3e_rag.errors import InputError
from m3e_rag.index.sparse.bm25 import SparseIndex, _check_pairs
from m3e_rag.index.sparse.postings import check_search
from m3e_rag.index.sparse.scoring import top_k

__all__ = ["LearnedSparseIndex", "LEARNED_TERMS_VERSION", "check_weights"]

#: What the terms of a learned index are (recorded in its snapshot; a BM25 folder is refused, and back).
LEARNED_TERMS_VERSION = "learned-token-ids/1"


def check_weights(weights: object, what: str) -> dict[str, float]:
    """One text's lexical weights as ``{token id: weight > 0}``, or InputError naming the bad entry.

    Zero weights are dropped (they can add nothing to a product sum; FlagEmbedding drops them too);
    negative, NaN or infinite weights and non-string keys are refused.
    """
    if not isinstance(weights, Mapping):
        raise InputError(
            f"the lexical weights of {what} must be a mapping of token id -> weight, got {type(weights).__name__}; "
            "pass encoder.encode_outputs(texts, sparse=True).lexical"
        )
    kept: dict[str, float] = {}
    for token, weight in weights.items():
        if not isinstance(token, str) or not token:
            raise InputError(f"the lexical weights of {what} have a key {token!r}; keys are token ids as strings")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)):
            raise InputError(f"the lexical weight of token {token!r} in {what} is {weight!r}, not a number")
        value = float(weight)
        if not math.isfinite(value) or value < 0:
            raise InputError(
                f"the lexical weight of token {token!r} in {what} is {value!r}; weights are finite and >= 0"
            )
        if value > 0:
            kept[token] = value
    return kept


class LearnedSparseIndex(SparseIndex):
    """Chunks' lexical weights by chunk id, scored by FlagEmbedding's lexical matching score.

    Write with :meth:`upsert_weights` (texts cannot be added: the weights come from the model's forward
    pass, which ingest runs once for dense and sparse together), search with :meth:`search` given the
    query's weights. Thread-safe like the BM25 index it extends.
    """

    VALUE_DTYPE = np.float32
    TERMS_VERSION = LEARNED_TERMS_VERSION

    def __init__(self) -> None:
        super().__init__()

    def __repr__(self) -> str:
        """Return a short description: the size."""
        return f"LearnedSparseIndex(n={len(self)})"

    # ----------------------------------------------------------------- snapshot
    def snapshot_params(self) -> dict[str, Any]:
        """What a snapshot records besides the postings: the score it answers."""
        return {"learned": {"score": "sum over shared token ids of q_weight * d_weight"}}

    @classmethod
    def from_snapshot(cls, block: Mapping[str, Any], meta: Mapping[str, Any]) -> LearnedSparseIndex:
        """Build the index from a snapshot's arrays (``meta`` must be a learned index's)."""
        if "learned" not in meta:
            raise ValueError("the snapshot is not a learned-sparse index")
        index = cls()
        index._fill(block)
        return index

    # ----------------------------------------------------------------- writing
    def upsert(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Refused: a learned index holds the model's weights, not texts (see :meth:`upsert_weights`)."""
        raise InputError(
            "a learned-sparse index holds the model's lexical weights, not texts; pass "
            "encoder.encode_outputs(texts, sparse=True).lexical to upsert_weights(ids, lexical)"
        )

    def upsert_terms(self, ids: Sequence[str], terms: Sequence[Sequence[str]]) -> None:
        """Refused: terms without weights mean nothing here (see :meth:`upsert_weights`)."""
        raise InputError("a learned-sparse index needs a weight per token id; use upsert_weights(ids, lexical)")

    def upsert_weights(self, ids: Sequence[str], lexical: Sequence[Mapping[str, float]]) -> None:
        """Add chunks' lexical weights, replacing those of ids already held.

        Args:
            ids: chunk ids (non-empty strings); if an id repeats, its last weights win.
            lexical: for each id, ``{token id: weight}`` as the model's sparse output gives it.

        Raises:
            InputError: if the lengths differ, an id is not a string, or a weight is negative, NaN or not a
                number (checked before anything is added).

        """
        id_list, raw = _check_pairs(ids, lexical, "lexical weights")
        checked = [check_weights(w, repr(cid)) for cid, w in zip(id_list, raw, strict=True)]
        with self._lock:
            for chunk_id, weights in zip(id_list, checked, strict=True):
                self._add_values(chunk_id, weights, len(weights))
            self._fingerprint = None
            self._maybe_fold()

    # ----------------------------------------------------------------- reading
    def weights(self, chunk_id: str) -> dict[str, float]:
        """The lexical weights held for one chunk (float32 values), or KeyError if the id is not held."""
        with self._lock:
            numbers, values = self._terms_at(self._position[chunk_id])
            return {self._terms[t]: float(v) for t, v in zip(numbers, values, strict=True)}

    def terms(self, chunk_id: str) -> list[str]:
        """The token ids held for one chunk (each once), or KeyError if the id is not held."""
        return list(self.weights(chunk_id))

    def build(self) -> None:
        """Nothing to prepare: the query's weights come from the model, not from jieba."""

    def term_coverage(self, query: str | Mapping[str, float]) -> float:
        """Share of the query's weighted token ids held by at least one chunk (0 to 1)."""
        if isinstance(query, str):
            raise InputError("a learned-sparse index measures coverage of the query's lexical weights, not its text")
        tokens = [t for t, w in query.items() if w > 0]
        if not tokens:
            return 0.0
        with self._lock:
            known = sum(1 for t in tokens if (n := self._vocab.get(t)) is not None and len(self._postings(n)[0]))
        return known / len(tokens)

    def search(
        self,
        query: str | Mapping[str, float],
        k: int,
        allowed_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best chunks by lexical matching score (sum over shared token ids of q * d).

        Args:
            query: the query's lexical weights (``encoder.encode_outputs([q], "query", sparse=True).lexical[0]``).
            k: how many results at most; ``0`` gives ``[]``.
            allowed_ids: if given, only these ids can be returned (ids not held are ignored).

        Returns:
            ``(id, score)`` pairs, best first, only scores above 0; equal scores are ordered by id.

        Raises:
            InputError: if ``query`` is a text or holds a bad weight, or ``k`` is not an int ``>= 0``.

        """
        if isinstance(query, str):
            raise InputError(
                "a learned-sparse index is searched with the query's lexical weights, not its text; pass "
                "encoder.encode_outputs([query], 'query', sparse=True).lexical[0]"
            )
        check_search(k, allowed_ids)
        weights = check_weights(query, "the query")
        if not weights or k == 0:
            return []
        with self._lock:
            mask = self._allowed_mask(allowed_ids)
            if not self._position or (mask is not None and not mask.any()):
                return []
            acc_pos, acc_val = [], []
            for token, q_weight in weights.items():
                number = self._vocab.get(token)
                if number is None:
                    continue
                positions, values = self._postings(number)
                if mask is not None and len(positions):
                    keep = mask[positions]
                    positions, values = positions[keep], values[keep]
                if len(positions):
                    acc_pos.append(positions)
                    acc_val.append(values.astype(np.float64) * q_weight)
            if not acc_pos:
                return []
            ids = self._ids
        positions, inverse = np.unique(np.concatenate(acc_pos), return_inverse=True)
        totals = np.bincount(inverse, weights=np.concatenate(acc_val))
        keep = totals > 0
        return top_k(ids, positions[keep], totals[keep], k)
