"""A BM25 sparse index over Chinese and English text, kept beside a Chroma collection.

Chinese runs are segmented with jieba in search mode, English words and numbers are lower-cased
(:mod:`m3e_rag.index.sparse.tokenize`), and BM25 is scored at query time from postings (numpy,
:mod:`m3e_rag.index.sparse.postings`), with the variants and parameters of
`bm25s <https://github.com/xhluca/bm25s>`_ (Lucene by default; scores equal bm25s's).

Why this shape: the first version rebuilt a bm25s matrix after every write and rewrote one JSON file
per call, O(index) per ``add_texts``. Two persistent designs were measured on the same synthetic
bilingual chunks (``benchmarks/sparse_engines.py``): SQLite FTS5 over pre-tokenized text (one hex
token per term, ``unicode61``, its built-in ``bm25()``, ``ORDER BY rank LIMIT 100``) against this
module's postings plus the append-only log of :mod:`m3e_rag.index.sparse.folder`. The postings wrote
and answered faster and took less disk per chunk; FTS5 bulk-loaded faster, but jieba's own tokenizing
is what limits an ingest (figures: benchmarks/README.md, 'Design figures'). FTS5 also fixes k1/b and
uses Robertson's clamped idf (not the variants offered here) and needs a join for an exact
``allowed_ids`` mask; the postings score any mask exactly. tantivy (fixed k1/b, its own commit and merge
threads) and bm25s's memory-mapped format (a static matrix, rebuilt whole to add one document) were not
taken.

:func:`~m3e_rag.index.sparse.folder.save_index` and :func:`~m3e_rag.index.sparse.folder.load_index`
write and read an index as a folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from m3e_rag.errors import InputError
from m3e_rag.index.sparse.postings import Postings, check_search, nonempty_strings
from m3e_rag.index.sparse.scoring import BM25Method, idf, term_scores, top_k
from m3e_rag.index.sparse.tokenize import TOKENIZER_VERSION, _jieba, tokenize_for_bm25

__all__ = ["SparseIndex", "fingerprint"]


def fingerprint(ids: Iterable[str]) -> str:
    """Return a digest of a set of chunk ids (order and duplicates do not matter).

    :func:`~m3e_rag.index.sparse.folder.save_index` stores this digest, and :attr:`SparseIndex.fingerprint`
    gives it, so a caller can compare the index with a Chroma collection's ids and rebuild when stale.

    Args:
        ids: chunk ids.

    Returns:
        The SHA-256 hex digest over the sorted, de-duplicated ids (each length-prefixed UTF-8).

    """
    digest = hashlib.sha256()
    for chunk_id in sorted(set(ids)):
        data = chunk_id.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


#: Texts tokenized per lock acquisition in :meth:`SparseIndex.upsert`.
_UPSERT_PIECE = 256
#: Upserts of at least this many distinct ids take the batched path (:meth:`SparseIndex._add_batch`).
_BATCH_ADD_MIN = 32


class SparseIndex(Postings):
    """A BM25 index of chunk texts by chunk id, for hybrid search beside a vector store.

    Scores are computed at query time from the postings of the query's terms, counting live
    chunks only, so a write never triggers a rebuild: an upsert costs its own tokenizing plus
    O(terms of the text). :mod:`m3e_rag.index.sparse.folder` persists the index as a snapshot plus an
    append-only log (:func:`~m3e_rag.index.sparse.folder.save_index`,
    :func:`~m3e_rag.index.sparse.folder.load_index`).

    All methods are thread-safe. Tokenizing, the slow part of an upsert, happens outside the lock.

    Args:
        k1: BM25 term-frequency saturation (``>= 0``).
        b: BM25 length normalisation (``0`` to ``1``).
        method: BM25 variant as named by bm25s: ``"lucene"`` (default), ``"robertson"``
            or ``"atire"``.

    Raises:
        InputError: if a parameter is out of range.

    """

    #: What the terms are, recorded in a snapshot: a snapshot of other terms is refused on open.
    TERMS_VERSION = TOKENIZER_VERSION

    def __init__(self, *, k1: float = 1.2, b: float = 0.75, method: BM25Method = "lucene") -> None:
        if method not in ("lucene", "robertson", "atire"):
            raise InputError(f"unknown BM25 method {method!r}; use 'lucene', 'robertson' or 'atire'")
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not 0 <= k1 < float("inf"):
            raise InputError(f"k1 must be a number >= 0, got {k1!r}; 1.2 is the usual value")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise InputError(f"b must be a number between 0 and 1, got {b!r}; 0.75 is the usual value")
        self._k1 = float(k1)
        self._b = float(b)
        self._method: BM25Method = method
        super().__init__()
        self._fingerprint: str | None = None

    # ----------------------------------------------------------------- introspection

    @property
    def k1(self) -> float:
        """BM25 term-frequency saturation."""
        return self._k1

    @property
    def b(self) -> float:
        """BM25 length normalisation."""
        return self._b

    @property
    def method(self) -> BM25Method:
        """BM25 variant (bm25s method name)."""
        return self._method

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the ids held (cached until the next change)."""
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = fingerprint(self._position)
            return self._fingerprint

    def ids(self) -> set[str]:
        """Return the ids held (a copy)."""
        with self._lock:
            return set(self._position)

    def terms(self, chunk_id: str) -> list[str]:
        """Return the BM25 terms held for one chunk, each repeated by its count.

        Terms come grouped (all repeats of a term together), in term-table order.

        Args:
            chunk_id: a chunk id held by the index.

        Returns:
            The chunk's terms, as a multiset equal to what :func:`tokenize_for_bm25` gave.

        Raises:
            KeyError: if the id is not held.

        """
        with self._lock:
            numbers, tfs = self._terms_at(self._position[chunk_id])
            return [self._terms[t] for t, n in zip(numbers, tfs, strict=True) for _ in range(int(n))]

    def __len__(self) -> int:
        """Return the number of chunks held."""
        with self._lock:
            return len(self._position)

    def __contains__(self, chunk_id: object) -> bool:
        """Return whether a chunk id is held."""
        with self._lock:
            return chunk_id in self._position

    def __repr__(self) -> str:
        """Return a short description: size and BM25 parameters."""
        return f"SparseIndex(n={len(self)}, method={self._method!r}, k1={self._k1}, b={self._b})"

    # ----------------------------------------------------------------- mutation

    def upsert(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Add chunks, replacing the text of ids already held.

        Texts are tokenized outside the lock, in pieces of a few hundred, each piece added as soon
        as it is tokenized: a search running meanwhile may see part of a large upsert.

        Args:
            ids: chunk ids (non-empty strings); if an id repeats, its last text wins.
            texts: the chunk texts, aligned with ``ids``. A text with no terms is held (it counts
                in the id set and the corpus size) but never matches.

        Raises:
            InputError: if the lengths differ, or an id or text is not a string (checked before
                anything is added).

        """
        ids, texts = _check_pairs(ids, texts, "texts")
        for chunk_id, text in zip(ids, texts, strict=True):
            if not isinstance(text, str):
                raise InputError(f"the text of {chunk_id!r} is a {type(text).__name__}, not a str")
        for start in range(0, len(ids), _UPSERT_PIECE):
            tokenized = [tokenize_for_bm25(text) for text in texts[start : start + _UPSERT_PIECE]]
            self.upsert_terms(ids[start : start + _UPSERT_PIECE], tokenized)

    def upsert_terms(self, ids: Sequence[str], terms: Sequence[Sequence[str]]) -> None:
        """Add chunks given as already tokenized terms (what a log replay and a catch-up use).

        Args:
            ids: chunk ids; if an id repeats, its last terms win.
            terms: for each id, its terms as :func:`tokenize_for_bm25` gives them.

        Raises:
            InputError: if the lengths differ, or an id or a term is not a non-empty string.

        """
        ids, terms = _check_pairs(ids, terms, "terms")
        for chunk_id, tokens in zip(ids, terms, strict=True):
            if isinstance(tokens, str) or not nonempty_strings(tokens):
                raise InputError(f"the terms of {chunk_id!r} must be a list of non-empty strings")
        with self._lock:
            if len(ids) >= _BATCH_ADD_MIN and len(set(ids)) == len(ids):
                self._add_batch(ids, terms)
            else:
                for chunk_id, tokens in zip(ids, terms, strict=True):
                    self._add(chunk_id, tokens)
            self._fingerprint = None
            self._maybe_fold()

    def delete(self, ids: Sequence[str]) -> None:
        """Remove chunks; ids not held are ignored.

        Args:
            ids: chunk ids to remove.

        Raises:
            InputError: if ``ids`` is a single string rather than a sequence of ids.

        """
        if isinstance(ids, str):
            raise InputError("delete needs a sequence of ids, got one str; wrap it: delete([chunk_id])")
        with self._lock:
            removed = False
            for chunk_id in ids:
                removed = self._kill(chunk_id) or removed
            if removed:
                self._fingerprint = None

    # ----------------------------------------------------------------- folding (see Postings)

    @classmethod
    def from_block(
        cls, block: Mapping[str, Any], *, k1: float = 1.2, b: float = 0.75, method: BM25Method = "lucene"
    ) -> SparseIndex:
        """Build an index from arrays written by :meth:`block` (they may be memory-mapped).

        Raises:
            ValueError: if the arrays disagree with each other (a damaged file).

        """
        index = cls(k1=k1, b=b, method=method)
        index._fill(block)
        return index

    def snapshot_params(self) -> dict[str, Any]:
        """What a snapshot records besides the postings to build this index again (the BM25 parameters)."""
        return {"bm25": {"method": self._method, "k1": self._k1, "b": self._b}}

    @classmethod
    def from_snapshot(cls, block: Mapping[str, Any], meta: Mapping[str, Any]) -> SparseIndex:
        """Build an index from a snapshot's arrays and the :meth:`snapshot_params` in its ``meta``."""
        params = meta["bm25"]
        return cls.from_block(block, k1=params["k1"], b=params["b"], method=params["method"])

    # ----------------------------------------------------------------- search

    def build(self) -> None:
        """Get ready to search: load jieba's dictionary now (once per process), not in the first search.

        The load takes a noticeable moment (figures: benchmarks/README.md, 'Design figures').
        """
        _jieba()

    def term_coverage(self, query: str) -> float:
        """Share of the query's distinct BM25 terms that occur in at least one held chunk (0 to 1).

        Hybrid search scales the BM25 weight by it: a Chinese question against an English corpus
        shares no terms (coverage near 0), so BM25 has no signal there and must not disturb dense
        ranking with stray matches on numbers or names.
        """
        terms = set(tokenize_for_bm25(query))
        if not terms:
            return 0.0
        with self._lock:
            known = 0
            for term in terms:
                number = self._vocab.get(term)
                if number is not None and len(self._postings(number)[0]):
                    known += 1
        return known / len(terms)

    def search(
        self,
        query: str,
        k: int,
        allowed_ids: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Return the ``k`` best chunks for a query by BM25 score.

        Args:
            query: the query text, tokenized like the chunks (a repeated term counts twice).
            k: how many results at most; larger than the corpus is fine, ``0`` gives ``[]``.
            allowed_ids: if given, only these ids can be returned (ids not held are ignored).

        Returns:
            ``(id, score)`` pairs, best first, only scores above 0; equal scores are ordered by id.
            Empty when the index is empty or no query term occurs in it.

        Raises:
            InputError: if ``query`` is not a string or ``k`` is not an int ``>= 0``.

        """
        check_search(k, allowed_ids)
        terms = tokenize_for_bm25(query)
        if not terms or k == 0:
            return []
        with self._lock:
            n = len(self._position)
            if n == 0:
                return []
            avgdl = self._total_len / n
            mask = self._allowed_mask(allowed_ids)
            if mask is not None and not mask.any():
                return []
            weights: dict[int, float] = {}
            for term in terms:  # a repeated query term counts again
                number = self._vocab.get(term)
                if number is not None:
                    weights[number] = weights.get(number, 0.0) + 1.0
            if not weights:
                return []
            doc_len = self._doc_len.data
            acc_pos, acc_val = [], []
            k1, b = self._k1, self._b
            for number, times in weights.items():
                positions, tfs = self._postings(number)
                if not len(positions):
                    continue
                weight = idf(self._method, len(positions), n) * times
                if mask is not None:
                    keep = mask[positions]
                    positions, tfs = positions[keep], tfs[keep]
                    if not len(positions):
                        continue
                part = term_scores(self._method, tfs, doc_len[positions], avgdl, k1, b)
                acc_pos.append(positions)
                acc_val.append(part * np.float32(weight))
            if not acc_pos:
                return []
            ids = self._ids
            all_pos = np.concatenate(acc_pos)
        if len(acc_pos) == 1:
            positions, totals = all_pos, acc_val[0]
        else:
            positions, inverse = np.unique(all_pos, return_inverse=True)
            totals = np.bincount(inverse, weights=np.concatenate(acc_val).astype(np.float64)).astype(np.float32)
        keep = totals > 0
        return top_k(ids, positions[keep], totals[keep], k)


def _check_pairs(ids: Sequence[str], values: Sequence[Any], what: str) -> tuple[list[str], list[Any]]:
    if isinstance(ids, str) or isinstance(values, str):
        raise InputError(f"upsert needs sequences of ids and {what}, got a str; wrap it in a list")
    id_list, value_list = list(ids), list(values)
    if len(id_list) != len(value_list):
        raise InputError(f"upsert got {len(id_list)} ids but {len(value_list)} {what}; pass one per id")
    for chunk_id in id_list:
        _check_id(chunk_id)
    return id_list, value_list


def _check_id(chunk_id: object) -> None:
    if not isinstance(chunk_id, str) or not chunk_id:
        raise InputError(f"chunk ids must be non-empty strings, got {chunk_id!r}")
    try:
        chunk_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"chunk id {chunk_id!r} is not valid Unicode ({exc}); use UTF-8 ids") from exc

