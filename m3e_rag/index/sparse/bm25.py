"""A BM25 sparse index over Chinese and English text, kept beside a Chroma collection.

Chinese runs are segmented with jieba in search mode, English words and numbers are lower-cased,
and BM25 is scored at query time from postings (numpy), with the variants and parameters of
`bm25s <https://github.com/xhluca/bm25s>`_ (Lucene by default; scores equal bm25s's).

Why this shape: the first version rebuilt a bm25s matrix after every write and rewrote one JSON file
per call, O(index) per ``add_texts``. Two persistent designs were measured on the same 100,000
pre-tokenized synthetic bilingual chunks (``benchmarks/sparse_engines.py``, results in
``benchmarks/results/sparse_engines.json``; 2 cores under a load average near 20, so absolute
figures are inflated, ratios less so): SQLite FTS5 over pre-tokenized text (one hex token per term,
``unicode61``, its built-in ``bm25()``, ``ORDER BY rank LIMIT 100``) against this module's postings
plus the append-only log of :mod:`m3e_rag.index.sparse.folder`. FTS5: write + commit p50 6.8 ms, top-100
query p50 10.3 ms / p99 368 ms (it scores every row matching any query term inside the SQL engine),
763 bytes per chunk, bulk 3,661 chunks/s. Postings + log: write p50 0.06 ms, query p50 0.26 ms /
p99 95 ms, 206 bytes per chunk, bulk 935 chunks/s (jieba itself tokenizes about 1,000 chunks/s, so
bulk speed is not what limits an ingest). FTS5 also fixes k1/b and uses Robertson's clamped idf
(not the variants offered here) and needs a join for an exact ``allowed_ids`` mask; the postings
score any mask exactly. tantivy (fixed k1/b, its own commit and merge threads) and bm25s's memory-
mapped format (a static matrix, rebuilt whole to add one document) were not taken.

Layout in memory: every chunk gets a *position* (0, 1, 2, ... in the order written). Positions
below ``base_end`` have their postings in one term-major CSC block (``ptr``/``pos``/``tf`` arrays,
memory-mapped when loaded from disk); later positions sit in a small *delta* (term -> postings
lists). An upsert of a held id or a delete marks the old position dead (a tombstone); document
frequencies and the corpus size count live positions only, so scores always equal a fresh build.
:meth:`SparseIndex.compact` folds the delta into the block and drops dead positions (it runs by
itself when the delta outgrows a share of the block), so memory stays O(live postings).
"""


from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jieba
import numpy as np

from m3e_rag.errors import InputError

__all__ = [
    "BM25Method",
    "FORMAT_VERSION",
    "STOPWORDS",
    "SparseIndex",
    "TOKENIZER_VERSION",
    "fingerprint",
    "tokenize_for_bm25",
]

#: BM25 variants offered (all give a score of 0 to a document without any query term).
BM25Method = Literal["lucene", "robertson", "atire"]

#: Version of the on-disk format written by :meth:`SparseIndex.save` (see :mod:`m3e_rag.index.sparse.folder`).
FORMAT_VERSION = 2

#: Version of :func:`tokenize_for_bm25`. Bump it whenever the tokens it produces could change
#: (normalisation, segmentation mode, stopwords): a saved index with another version is refused.
TOKENIZER_VERSION = "nfkc-jieba_search-words-stop/2"

#: Tokens dropped from documents and queries: the commonest function words of each language.
#: Kept short on purpose: BM25's idf already discounts frequent terms, the list only trims the
#: index and stops a query made of them alone from matching everything weakly.
STOPWORDS: frozenset[str] = frozenset(
    # Chinese (jieba tokens): particles, conjunctions, copula, demonstratives; simplified forms,
    # then the traditional forms of those that differ (著 與 這 嗎), so traditional text is
    # trimmed alike (NFKC does not map traditional to simplified).
    "的 了 着 是 在 和 与 及 或 也 都 就 而 之 其 这 那 吗 呢 吧 啊".split()
    + "著 與 這 嗎".split()
    # English (already lower-cased).
    + "a an the of to is are was were be been in on at by for from with as and or it its this that".split()
)

# Han ideographs: Extension A, the URO, compatibility ideographs and planes 2-3 (Extension B and
# later, e.g. U+20000). jieba only knows U+4E00-U+9FD5; it yields other ideographs one by one.
_HAN_RUN = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]+)")
# Outside Han runs: decimal numbers such as 3.14 or 1.2.3 stay whole, otherwise letters and
# digits up to any non-alphanumeric (punctuation, spaces, underscore).
_WORD = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")

_JIEBA_LOCK = threading.Lock()
_JIEBA: Any = None  # the private jieba.Tokenizer, created on first use


def _quiet(logger_name: str) -> None:
    """Raise a chatty library logger to WARNING unless someone already set it higher."""
    logger = logging.getLogger(logger_name)
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


def _jieba() -> Any:
    """Return the module's own jieba tokenizer, loading its dictionary once (thread-safe).

    A private ``jieba.Tokenizer`` leaves jieba's global tokenizer (and any user dictionary
    loaded into it) alone. jieba caches the parsed dictionary in the temp directory.
    """
    global _JIEBA
    tokenizer = _JIEBA
    if tokenizer is None:
        with _JIEBA_LOCK:
            if _JIEBA is None:
                _quiet("jieba")  # it logs "Building prefix dict ..." to stderr at DEBUG
                new = jieba.Tokenizer()
                new.initialize()
                _JIEBA = new
            tokenizer = _JIEBA
    return tokenizer


def tokenize_for_bm25(text: str) -> list[str]:
    """Split a Chinese, English or mixed text into BM25 terms.

    The text is NFKC-normalised (fullwidth ``ＡＢＣ１２３`` becomes ``abc123``), runs of Han
    ideographs are segmented by jieba in search mode (``中华人民共和国`` gives ``中华``,
    ``华人``, ..., ``共和国`` and the whole word), everything else is split on non-alphanumerics
    into lower-cased words and numbers (``3.14`` and ``2024`` stay whole). Punctuation, spaces
    and :data:`STOPWORDS` are dropped. Ideographs outside jieba's dictionary range, such as
    Extension B (U+20000), become one-character terms.

    Args:
        text: the text to tokenize.

    Returns:
        The terms in text order; repeated terms are kept (they are term frequencies).

    Raises:
        InputError: if ``text`` is not a string.

    """
    if not isinstance(text, str):
        raise InputError(f"tokenize_for_bm25 needs a str, got {type(text).__name__}; pass the chunk text")
    text = unicodedata.normalize("NFKC", text)
    tokens: list[str] = []
    for i, segment in enumerate(_HAN_RUN.split(text)):
        if not segment:
            continue
        if i % 2:  # a run of Han ideographs (odd positions of a split on one capturing group)
            words: Iterable[str] = _jieba().cut_for_search(segment)
        else:
            words = (match.group().lower() for match in _WORD.finditer(segment))
        tokens.extend(word for word in words if word and word not in STOPWORDS)
    return tokens


def fingerprint(ids: Iterable[str]) -> str:
    """Return a digest of a set of chunk ids (order and duplicates do not matter).

    :meth:`SparseIndex.save` stores this digest, and :attr:`SparseIndex.fingerprint` gives it,
    so a caller can compare the index with a Chroma collection's ids and rebuild when stale.

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


#: Fold the delta into the CSC block when it holds more than this many positions and more than
#: :data:`_DELTA_SHARE` of the block: the amortised cost per written chunk stays constant.
_DELTA_MIN = 8192
_DELTA_SHARE = 0.125
#: Drop unused terms from the term table in :meth:`SparseIndex.compact` when more than this many
#: (and more than half of them) occur in no live chunk.
_COMPACT_MIN_DEAD = 10_000
#: Texts tokenized per lock acquisition in :meth:`SparseIndex.upsert`.
_UPSERT_PIECE = 256
#: Upserts of at least this many distinct ids take the batched path (:meth:`SparseIndex._add_batch`).
_BATCH_ADD_MIN = 32
_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_EMPTY_F32 = np.zeros(0, dtype=np.float32)


def nonempty_strings(values: Iterable[Any]) -> bool:
    """Whether every value is a non-empty str; at C speed (a log replay or a snapshot checks 1M of them)."""
    try:
        return all(map(str.__len__, values))  # str.__len__ raises TypeError on anything but a str
    except TypeError:
        return False


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


class SparseIndex:
    """A BM25 index of chunk texts by chunk id, for hybrid search beside a vector store.

    Scores are computed at query time from the postings of the query's terms, counting live
    chunks only, so a write never triggers a rebuild: an upsert costs its own tokenizing plus
    O(terms of the text). :mod:`m3e_rag.index.sparse.folder` persists the index as a snapshot plus an
    append-only log (what :meth:`save` and :meth:`load` read and write).

    All methods are thread-safe. Tokenizing, the slow part of an upsert, happens outside the lock.

    Args:
        k1: BM25 term-frequency saturation (``>= 0``).
        b: BM25 length normalisation (``0`` to ``1``).
        method: BM25 variant as named by bm25s: ``"lucene"`` (default), ``"robertson"``
            or ``"atire"``.

    Raises:
        InputError: if a parameter is out of range.

    """

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
        self._tf: np.ndarray = np.zeros(0, dtype=np.uint16)
        # Delta over positions >= _base_end: term -> ([positions], [tfs]).
        self._delta: dict[int, tuple[list[int], list[int]]] = {}
        # Segments over positions >= _base_end written by batched adds: (term numbers ascending,
        # positions, term frequencies), each a numpy array; folded with the delta by compact().
        self._segments: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
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
            position = self._position[chunk_id]
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

    def _add(self, chunk_id: str, tokens: Sequence[str]) -> None:
        """Append one chunk at a new position, killing its old one (lock held)."""
        self._kill(chunk_id)
        vocab, number_of = self._vocab, self._new_term
        counts: dict[int, int] = {}
        for token, count in Counter(tokens).items():  # counted in C; one dict lookup per distinct term
            number = vocab.get(token)
            counts[number_of(token) if number is None else number] = count
        position = len(self._ids)
        self._ids.append(chunk_id)
        self._position[chunk_id] = position
        self._doc_len.append(len(tokens))
        self._alive.append(True)
        self._total_len += len(tokens)
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
        kept as one term-sorted segment (no Python work per posting or per term): a log replay of 24,270
        chunks at 1M took 1.4 s one chunk at a time (``benchmarks/scale.py`` open time).
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

    # ----------------------------------------------------------------- folding

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
            base_tf = np.asarray(self._tf[base_keep], dtype=np.uint16)
            base_terms = np.repeat(np.arange(n_terms, dtype=np.int32), base_counts)
            # Delta postings of live positions.
            d_terms, d_pos, d_tf = [], [], []
            for number, (positions, tfs) in self._delta.items():
                d_terms.append(np.full(len(positions), number, dtype=np.int32))
                d_pos.append(np.asarray(positions, dtype=np.int64))
                d_tf.append(np.asarray(tfs, dtype=np.uint16))
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

    @classmethod
    def from_block(
        cls, block: Mapping[str, Any], *, k1: float = 1.2, b: float = 0.75, method: BM25Method = "lucene"
    ) -> SparseIndex:
        """Build an index from arrays written by :meth:`block` (they may be memory-mapped).

        Raises:
            ValueError: if the arrays disagree with each other (a damaged file).

        """
        index = cls(k1=k1, b=b, method=method)
        ids, terms = list(block["ids"]), list(block["terms"])
        doc_len, ptr, pos, tf = block["doc_len"], block["ptr"], block["pos"], block["tf"]
        if len(doc_len) != len(ids) or len(ptr) != len(terms) + 1 or len(pos) != len(tf):
            raise ValueError("the ids, lengths, terms and postings of the block differ in size")
        if len(ptr) and (ptr[0] != 0 or ptr[-1] != len(pos) or np.any(np.diff(ptr) < 0)):
            raise ValueError("the postings pointers are not ascending from 0 to the postings count")
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(ids)):
            raise ValueError("a posting points outside the chunk positions")
        index._ids = ids
        index._position = {chunk_id: i for i, chunk_id in enumerate(ids)}
        index._terms = terms
        index._vocab = {term: i for i, term in enumerate(terms)}
        if len(index._position) != len(ids) or len(index._vocab) != len(terms):
            raise ValueError("duplicate ids or terms")
        index._doc_len = _Grow(np.int32, doc_len)
        index._alive = _Grow(np.bool_, np.ones(len(ids), dtype=bool))
        index._total_len = int(np.asarray(doc_len, dtype=np.int64).sum())
        index._ptr, index._pos, index._tf = np.asarray(ptr), pos, tf
        index._base_end = len(ids)
        return index

    # ----------------------------------------------------------------- search

    def build(self) -> None:
        """Get ready to search: load jieba's dictionary (about 0.5 s, once per process)."""
        _jieba()

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

    def _idf(self, df: int, n: int) -> float:
        if self._method == "lucene":
            return math.log(1 + (n - df + 0.5) / (df + 0.5))
        if self._method == "robertson":
            return math.log(max(1.0, (n - df + 0.5) / (df + 0.5)))
        return math.log(n / df)  # atire

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
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"k must be an int >= 0, got {k!r}")
        if isinstance(allowed_ids, str):
            raise InputError("allowed_ids must be a collection of ids, got one str; wrap it in a list")
        terms = tokenize_for_bm25(query)
        if not terms or k == 0:
            return []
        with self._lock:
            n = len(self._position)
            if n == 0:
                return []
            avgdl = self._total_len / n
            mask: np.ndarray | None = None
            if allowed_ids is not None:
                wanted = [self._position[i] for i in allowed_ids if i in self._position]
                if not wanted:
                    return []
                mask = np.zeros(len(self._ids), dtype=bool)
                mask[wanted] = True
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
                idf = self._idf(len(positions), n) * times
                if mask is not None:
                    keep = mask[positions]
                    positions, tfs = positions[keep], tfs[keep]
                    if not len(positions):
                        continue
                norm = k1 * ((1 - b) + b * doc_len[positions].astype(np.float32) / np.float32(avgdl))
                if self._method == "atire":
                    part = tfs * np.float32(k1 + 1) / (tfs + norm)
                else:
                    part = tfs / (tfs + norm)
                acc_pos.append(positions)
                acc_val.append(part * np.float32(idf))
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
        return _top_k(ids, positions[keep], totals[keep], k)

    # ----------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """Write the index as a snapshot folder, atomically (see :mod:`m3e_rag.index.sparse.folder`).

        The folder holds the format and tokenizer versions, the BM25 parameters, the
        :attr:`fingerprint`, the term table, the ids and the postings as ``.npy`` arrays, and
        an (empty) append-only log. Writing again replaces the snapshot; readers never see a half one.

        Args:
            path: the folder to write (created if missing).

        Raises:
            StoreError: if the folder cannot be written.

        """
        from m3e_rag.index.sparse.folder import SparseFolder

        SparseFolder.write_snapshot(Path(path), self, generation=None)

    @classmethod
    def load(cls, path: Path) -> SparseIndex:
        """Read an index written by :meth:`save` (or kept by :class:`~m3e_rag.index.sparse.folder.SparseFolder`).

        Args:
            path: the folder to read.

        Returns:
            The index, with the BM25 parameters it was saved with and the log replayed.

        Raises:
            StoreError: if the folder is missing, unreadable, corrupt, or written by another format
                or tokenizer version; in every case rebuild the index from the collection's texts.

        """
        from m3e_rag.index.sparse.folder import SparseFolder

        return SparseFolder.open(Path(path), writable=False).index


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


def _top_k(order: Sequence[str | None], positions: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Pick the ``k`` best positions by score, ties by id, as ``(id, score)`` pairs."""
    if len(positions) > k:
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= threshold  # may keep a few more than k when scores tie at the threshold
        positions, scores = positions[keep], scores[keep]
    pairs = [(str(order[p]), float(s)) for p, s in zip(positions.tolist(), scores.tolist(), strict=True)]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs[:k]
