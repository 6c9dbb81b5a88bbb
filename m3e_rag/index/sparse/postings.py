"""The postings of a BM25 index: positions, term table, CSC block, delta and segments.

:class:`Postings` is the storage under :class:`~m3e_rag.index.sparse.bm25.SparseIndex` (its base
class): it numbers chunks and terms, adds and kills positions, folds the delta into the block, and
reads one term's live postings. BM25 parameters, tokenizing and input checks stay with the index;
both share one re-entrant lock (``_lock``).

Layout in memory: every chunk gets a *position* (0, 1, 2, ... in the order written). Positions
below ``base_end`` have their postings in one term-major CSC block (``ptr``/``pos``/``tf`` arrays,
memory-mapped when loaded from disk); later positions sit in a small *delta* (term -> postings
lists). An upsert of a held id or a delete marks the old position dead (a tombstone); document
frequencies and the corpus size count live positions only, so scores always equal a fresh build.
:meth:`Postings.compact` folds the delta into the block and drops dead positions (it runs by
itself when the delta outgrows a share of the block), so memory stays O(live postings).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from m3e_rag.errors import InputError

__all__ = ["Postings", "check_search", "nonempty_strings"]

#: Fold the delta into the CSC block when it holds more than this many positions and more than
#: :data:`_DELTA_SHARE` of the block: the amortised cost per written chunk stays constant.
_DELTA_MIN = 8192
_DELTA_SHARE = 0.125
#: Drop unused terms from the term table in :meth:`SparseIndex.compact` when more than this many
#: (and more than half of them) occur in no live chunk.
_COMPACT_MIN_DEAD = 10_000
_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_EMPTY_F32 = np.zeros(0, dtype=np.float32)


def nonempty_strings(values: Iterable[Any]) -> bool:
    """Whether every value is a non-empty str; at C speed (a log replay or a snapshot checks 1M of them)."""
    try:
        return all(map(str.__len__, values))  # str.__len__ raises TypeError on anything but a str
    except TypeError:
        return False


def check_search(k: object, allowed_ids: object) -> None:
    """The arguments every sparse search shares: ``k`` an int >= 0, ``allowed_ids`` a collection (not one str)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"k must be an int >= 0, got {k!r}")
    if isinstance(allowed_ids, str):
        raise InputError("allowed_ids must be a collection of ids, got one str; wrap it in a list")


class _Grow:
    """A numpy array that grows by doubling (amortised O(1) appends)."""

    __slots__ = ("data", "size")

    def __init__(self, dtype: Any, values: np.ndarray | None = None) -> None:
        values = np.zeros(0, dtype=dtype) if values is None else np.asarray(values, dtype=dtype)
        self.data = np.zeros(max(16, len(values)), dtype=dtype)
        self.data[: len(values)] = values
        self.size = len(values)

    def append(self, value: Any) -> None:
        if self.size == len(self.data):
            bigger = np.zeros(len(self.data) * 2, dtype=self.data.dtype)
            bigger[: self.size] = self.data[: self.size]
            self.data = bigger
        self.data[self.size] = value
        self.size += 1

    def extend(self, values: np.ndarray) -> None:
        need = self.size + len(values)
        if need > len(self.data):
            bigger = np.zeros(max(need, len(self.data) * 2), dtype=self.data.dtype)
            bigger[: self.size] = self.data[: self.size]
            self.data = bigger
        self.data[self.size : need] = values
        self.size = need

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class Postings:
    """The chunks and postings of a BM25 index, and the operations that change them.

    Base class of :class:`~m3e_rag.index.sparse.bm25.SparseIndex`. Methods with a leading underscore
    expect the lock held by the caller; the others take it.
    """

    #: dtype of a posting's value: a term count for BM25; a learned index holds float weights
    #: (:class:`~m3e_rag.index.sparse.learned.LearnedSparseIndex`), in the same machinery.
    VALUE_DTYPE: Any = np.uint16

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._terms: list[str] = []  # term number -> term
        self._vocab: dict[str, int] = {}  # term -> term number
        self._ids: list[str | None] = []  # position -> id (None once dead)
        self._position: dict[str, int] = {}  # live id -> position
        self._doc_len = _Grow(np.int32)  # position -> number of terms (with repeats)
        self._alive = _Grow(np.bool_)
        self._total_len = 0  # sum of live doc lengths
        # CSC block over positions [0, _base_end): term t's postings are pos/tf[ptr[t]:ptr[t+1]].
        self._base_end = 0
        self._ptr = np.zeros(1, dtype=np.int64)
        self._pos = _EMPTY_I32
        self._tf: np.ndarray = np.zeros(0, dtype=self.VALUE_DTYPE)
        # Delta over positions >= _base_end: term -> ([positions], [tfs]).
        self._delta: dict[int, tuple[list[int], list[Any]]] = {}
        # Segments over positions >= _base_end written by batched adds: (term numbers ascending,
        # positions, term frequencies), each a numpy array; folded with the delta by compact().
        self._segments: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _terms_at(self, position: int) -> tuple[list[int], list[int]]:
        """Term numbers held at a live position and their counts, grouped by term (lock held)."""
        if position >= self._base_end:  # scan the delta: an introspection call, O(delta postings)
            numbers, tfs = [], []
            for number, (positions, counts) in self._delta.items():
                if positions and positions[-1] >= position:
                    for p, n in zip(positions, counts, strict=True):
                        if p == position:
                            numbers.append(number)
                            tfs.append(n)
            for seg_terms, seg_pos, seg_tf in self._segments:
                hits = np.flatnonzero(seg_pos == position)
                numbers += seg_terms[hits].tolist()
                tfs += seg_tf[hits].tolist()
        else:  # scan the block: an introspection call, O(postings)
            hits = np.flatnonzero(self._pos == position)
            numbers = (np.searchsorted(self._ptr, hits, side="right") - 1).tolist()
            tfs = self._tf[hits].tolist()
        return numbers, tfs

    def _add(self, chunk_id: str, tokens: Sequence[str]) -> None:
        """Append one chunk at a new position, killing its old one (lock held)."""
        self._add_values(chunk_id, Counter(tokens), len(tokens))  # counted in C

    def _add_values(self, chunk_id: str, values: Mapping[str, Any], length: int) -> None:
        """Append one chunk holding ``values`` (term -> count or weight) at a new position (lock held)."""
        self._kill(chunk_id)
        vocab, number_of = self._vocab, self._new_term
        counts: dict[int, Any] = {}
        for token, count in values.items():  # one dict lookup per distinct term
            number = vocab.get(token)
            counts[number_of(token) if number is None else number] = count
        position = len(self._ids)
        self._ids.append(chunk_id)
        self._position[chunk_id] = position
        self._doc_len.append(length)
        self._alive.append(True)
        self._total_len += length
        delta = self._delta
        for number, tf in counts.items():
            lists = delta.get(number)
            if lists is None:
                lists = delta[number] = ([], [])
            lists[0].append(position)
            lists[1].append(tf)

    def _new_term(self, token: str) -> int:
        """Number a term not in the table yet (lock held)."""
        number = self._vocab[token] = len(self._terms)
        self._terms.append(token)
        return number

    def _add_batch(self, ids: Sequence[str], terms: Sequence[Sequence[str]]) -> None:
        """:meth:`_add` for many distinct ids at once, the same index in the end (lock held).

        Term frequencies are counted with numpy over (position, term) keys and the batch's postings are
        kept as one term-sorted segment (no Python work per posting or per term): one chunk at a time,
        replaying a large log made opening the index slow (figures: benchmarks/README.md, 'Design figures').
        """
        for chunk_id in ids:
            self._kill(chunk_id)
        vocab = self._vocab
        flat = [token for tokens in terms for token in tokens]
        numbers = [vocab.get(token, -1) for token in flat]
        for i in [i for i, known in enumerate(numbers) if known == -1]:
            found = vocab.get(flat[i])  # a term new in this batch may have been numbered already
            numbers[i] = self._new_term(flat[i]) if found is None else found
        start = len(self._ids)
        lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        self._ids.extend(ids)
        self._position.update(zip(ids, range(start, start + len(ids)), strict=True))
        self._doc_len.extend(lengths)
        self._alive.extend(np.ones(len(ids), dtype=bool))
        self._total_len += int(lengths.sum())
        if not flat:
            return
        width = len(self._terms)
        keys = np.repeat(np.arange(len(ids), dtype=np.int64), lengths) * width + np.asarray(numbers, dtype=np.int64)
        unique, tfs = np.unique(keys, return_counts=True)  # sorted by position, then term
        positions, term_numbers = unique // width + start, unique % width
        order = np.argsort(term_numbers, kind="stable")  # by term, positions still ascending within each
        term_numbers, positions, tfs = term_numbers[order], positions[order], tfs[order]
        self._segments.append((term_numbers, positions.astype(np.int32), tfs.astype(np.uint16)))

    def _kill(self, chunk_id: str) -> bool:
        position = self._position.pop(chunk_id, None)
        if position is None:
            return False
        self._alive.data[position] = False
        self._ids[position] = None
        self._total_len -= int(self._doc_len.data[position])
        return True

    def _maybe_fold(self) -> None:
        pending = len(self._ids) - self._base_end
        if pending > _DELTA_MIN and pending > _DELTA_SHARE * self._base_end:
            self.compact()

    def compact(self) -> None:
        """Fold the delta into the CSC block and drop dead positions (and, if many, unused terms).

        Runs by itself when the delta outgrows :data:`_DELTA_SHARE` of the block; O(live postings).
        Positions are renumbered; results do not change.
        """
        with self._lock:
            alive = self._alive.view()
            renumber = np.cumsum(alive, dtype=np.int64) - 1
            n_terms = len(self._terms)
            # Block postings of live positions, still grouped by term.
            base_keep = alive[self._pos] if len(self._pos) else np.zeros(0, dtype=bool)
            base_counts = np.zeros(n_terms, dtype=np.int64)
            if len(self._ptr) > 1:
                kept = np.concatenate(([0], np.cumsum(base_keep, dtype=np.int64)))
                base_counts[: len(self._ptr) - 1] = kept[self._ptr[1:]] - kept[self._ptr[:-1]]
            base_pos = renumber[self._pos[base_keep]].astype(np.int32)
            base_tf = np.asarray(self._tf[base_keep], dtype=self.VALUE_DTYPE)
            base_terms = np.repeat(np.arange(n_terms, dtype=np.int32), base_counts)
            # Delta postings of live positions.
            d_terms, d_pos, d_tf = [], [], []
            for number, (positions, tfs) in self._delta.items():
                d_terms.append(np.full(len(positions), number, dtype=np.int32))
                d_pos.append(np.asarray(positions, dtype=np.int64))
                d_tf.append(np.asarray(tfs, dtype=self.VALUE_DTYPE))
            for seg_terms, seg_pos, seg_tf in self._segments:
                d_terms.append(seg_terms.astype(np.int32))
                d_pos.append(seg_pos.astype(np.int64))
                d_tf.append(seg_tf)
            if self._segments and len(d_terms) > 1:  # they interleave with the delta: positions ascending per term
                d_terms, d_pos, d_tf = [np.concatenate(d_terms)], [np.concatenate(d_pos)], [np.concatenate(d_tf)]
                order = np.lexsort((d_pos[0], d_terms[0]))
                d_terms, d_pos, d_tf = [d_terms[0][order]], [d_pos[0][order]], [d_tf[0][order]]
            terms = np.concatenate([base_terms, *d_terms]) if d_terms else base_terms
            pos64 = np.concatenate([base_pos.astype(np.int64), *d_pos]) if d_pos else base_pos.astype(np.int64)
            tf = np.concatenate([base_tf, *d_tf]) if d_tf else base_tf
            live = alive[pos64] if len(pos64) else np.zeros(0, dtype=bool)
            live[: len(base_pos)] = True  # block postings were renumbered already
            terms, pos64, tf = terms[live], pos64[live], tf[live]
            pos64[len(base_pos) :] = renumber[pos64[len(base_pos) :]]
            order = np.argsort(terms, kind="stable")  # the block part is sorted: timsort is ~linear
            terms, pos, tf = terms[order], pos64[order].astype(np.int32), tf[order]
            counts = np.bincount(terms, minlength=n_terms)
            dead_terms = int((counts == 0).sum())
            if dead_terms > _COMPACT_MIN_DEAD and dead_terms * 2 > n_terms:
                used = counts > 0
                self._terms = [t for t, keep in zip(self._terms, used.tolist(), strict=True) if keep]
                self._vocab = {t: i for i, t in enumerate(self._terms)}
                counts = counts[used]
            self._ptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
            self._pos, self._tf = pos, tf
            keep_positions = np.flatnonzero(alive)
            self._ids = [self._ids[p] for p in keep_positions.tolist()]
            self._position = {chunk_id: i for i, chunk_id in enumerate(self._ids)}  # type: ignore[misc]
            self._doc_len = _Grow(np.int32, self._doc_len.view()[keep_positions])
            self._alive = _Grow(np.bool_, np.ones(len(keep_positions), dtype=bool))
            self._base_end = len(self._ids)
            self._delta = {}
            self._segments = []

    def block(self) -> dict[str, Any]:
        """Fold, then return the index's arrays and tables (what :mod:`m3e_rag.index.sparse.folder` saves)."""
        with self._lock:
            self.compact()
            return {
                "ids": list(self._ids),
                "terms": list(self._terms),
                "doc_len": self._doc_len.view().copy(),
                "ptr": self._ptr,
                "pos": self._pos,
                "tf": self._tf,
            }

    def _fill(self, block: Mapping[str, Any]) -> None:
        """Take the arrays and tables of :meth:`block` into this empty storage (they may be memory-mapped).

        Raises:
            ValueError: if the arrays disagree with each other (a damaged file).

        """
        ids, terms = list(block["ids"]), list(block["terms"])
        doc_len, ptr, pos, tf = block["doc_len"], block["ptr"], block["pos"], block["tf"]
        if len(doc_len) != len(ids) or len(ptr) != len(terms) + 1 or len(pos) != len(tf):
            raise ValueError("the ids, lengths, terms and postings of the block differ in size")
        if len(ptr) and (ptr[0] != 0 or ptr[-1] != len(pos) or np.any(np.diff(ptr) < 0)):
            raise ValueError("the postings pointers are not ascending from 0 to the postings count")
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(ids)):
            raise ValueError("a posting points outside the chunk positions")
        self._ids = ids
        self._position = {chunk_id: i for i, chunk_id in enumerate(ids)}
        self._terms = terms
        self._vocab = {term: i for i, term in enumerate(terms)}
        if len(self._position) != len(ids) or len(self._vocab) != len(terms):
            raise ValueError("duplicate ids or terms")
        self._doc_len = _Grow(np.int32, doc_len)
        self._alive = _Grow(np.bool_, np.ones(len(ids), dtype=bool))
        self._total_len = int(np.asarray(doc_len, dtype=np.int64).sum())
        self._ptr, self._pos, self._tf = np.asarray(ptr), pos, tf
        self._base_end = len(ids)

    def _allowed_mask(self, allowed_ids: Collection[str] | None) -> np.ndarray | None:
        """Positions a filtered search may return, as a boolean mask (lock held); None: no filter.

        An all-False mask means no allowed id is held: the search returns nothing.
        """
        if allowed_ids is None:
            return None
        mask = np.zeros(len(self._ids), dtype=bool)
        mask[[self._position[i] for i in allowed_ids if i in self._position]] = True
        return mask

    def _postings(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Live postings of one term: (positions, term frequencies) (lock held)."""
        parts_pos, parts_tf = [], []
        if number < len(self._ptr) - 1:
            start, end = int(self._ptr[number]), int(self._ptr[number + 1])
            if end > start:
                parts_pos.append(np.asarray(self._pos[start:end]))
                parts_tf.append(np.asarray(self._tf[start:end], dtype=np.float32))
        lists = self._delta.get(number)
        if lists is not None:
            parts_pos.append(np.asarray(lists[0], dtype=np.int32))
            parts_tf.append(np.asarray(lists[1], dtype=np.float32))
        for seg_terms, seg_pos, seg_tf in self._segments:
            lo, hi = np.searchsorted(seg_terms, number, "left"), np.searchsorted(seg_terms, number, "right")
            if hi > lo:
                parts_pos.append(seg_pos[lo:hi])
                parts_tf.append(seg_tf[lo:hi].astype(np.float32))
        if not parts_pos:
            return _EMPTY_I32, _EMPTY_F32
        positions = np.concatenate(parts_pos) if len(parts_pos) > 1 else parts_pos[0]
        tfs = np.concatenate(parts_tf) if len(parts_tf) > 1 else parts_tf[0]
        live = self._alive.data[positions]
        if not live.all():
            positions, tfs = positions[live], tfs[live]
        return positions, tfs
