"""A BM25 sparse index over Chinese and English text, kept beside a Chroma collection.

Chinese runs are segmented with jieba in search mode, English words and numbers are lower-cased,
and the scoring is done by `bm25s <https://github.com/xhluca/bm25s>`_ (Lucene variant by default).
The index keeps every chunk's terms (as numbers into a term table), so a rebuild after an upsert
or delete never re-runs jieba; the BM25 matrix is rebuilt lazily on the next search.

The index is persisted as one UTF-8 JSON file (the term table, the ids and each chunk's term
numbers; never a pickle) written atomically, with a :func:`fingerprint` of the id set so the
caller can tell when the file no longer matches the Chroma collection and rebuild it::

    index = SparseIndex.load(path) if path.exists() else SparseIndex()
    if index.fingerprint != fingerprint(collection_ids):
        ...  # rebuild from the collection's texts, then index.save(path)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import jieba
import numpy as np

from m3e_rag.errors import InputError, StoreError

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

#: Version of the on-disk format written by :meth:`SparseIndex.save`.
FORMAT_VERSION = 1

#: Version of :func:`tokenize_for_bm25`. Bump it whenever the tokens it produces could change
#: (normalisation, segmentation mode, stopwords): a saved index with another version is refused.
TOKENIZER_VERSION = "nfkc-jieba_search-words-stop/1"

_FORMAT_NAME = "m3e-rag/sparse-index"

#: Tokens dropped from documents and queries: the commonest function words of each language.
#: Kept short on purpose: BM25's idf already discounts frequent terms, the list only trims the
#: index and stops a query made of them alone from matching everything weakly.
STOPWORDS: frozenset[str] = frozenset(
    # Chinese (jieba tokens): particles, conjunctions, copula, demonstratives.
    "的 了 着 是 在 和 与 及 或 也 都 就 而 之 其 这 那 吗 呢 吧 啊".split()
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


#: Compact the term table during a rebuild when more than this many terms (and more than half
#: of them) no longer occur in any held chunk.
_COMPACT_MIN_DEAD = 10_000

#: Texts tokenized per lock acquisition in :meth:`SparseIndex.upsert`.
_UPSERT_PIECE = 256


class _Model:
    """An immutable snapshot of a built BM25 matrix and the order of its documents."""

    __slots__ = ("bm25", "order", "position")

    def __init__(self, bm25: Any, order: list[str]) -> None:
        self.bm25 = bm25
        self.order = order
        self.position = {chunk_id: i for i, chunk_id in enumerate(order)}


class SparseIndex:
    """A BM25 index of chunk texts by chunk id, for hybrid search beside a vector store.

    Each chunk is kept as a list of term numbers into a term table, so a rebuild hands bm25s
    ready token ids (no re-tokenizing, no string hashing). The BM25 matrix is rebuilt on the first
    search after a change, in O(total terms): about 1-1.4 s for 20,000 Chinese chunks of 300
    characters, 5.3 s for 100,000, on one CPU core.

    All methods are thread-safe. Tokenizing, the slow part of an upsert, happens outside the lock;
    searches score outside it too, on an immutable snapshot of the built matrix.

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
        # chunk id -> term numbers. The lists are never mutated, only replaced, and hold the int
        # objects of ``_vocab`` (about 8 bytes a term); bm25s takes them as they are.
        self._docs: dict[str, list[int]] = {}
        self._model: _Model | None = None
        self._dirty = False
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
                self._fingerprint = fingerprint(self._docs)
            return self._fingerprint

    def ids(self) -> set[str]:
        """Return the ids held (a copy)."""
        with self._lock:
            return set(self._docs)

    def terms(self, chunk_id: str) -> list[str]:
        """Return the BM25 terms held for one chunk, in text order.

        Args:
            chunk_id: a chunk id held by the index.

        Returns:
            The chunk's terms, as :func:`tokenize_for_bm25` gave them.

        Raises:
            KeyError: if the id is not held.

        """
        with self._lock:
            return [self._terms[i] for i in self._docs[chunk_id]]

    def __len__(self) -> int:
        """Return the number of chunks held."""
        with self._lock:
            return len(self._docs)

    def __contains__(self, chunk_id: object) -> bool:
        """Return whether a chunk id is held."""
        with self._lock:
            return chunk_id in self._docs

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
        if isinstance(ids, str) or isinstance(texts, str):
            raise InputError("upsert needs sequences of ids and texts, got a str; wrap it in a list")
        ids, texts = list(ids), list(texts)
        if len(ids) != len(texts):
            raise InputError(f"upsert got {len(ids)} ids but {len(texts)} texts; pass one text per id")
        for chunk_id, text in zip(ids, texts, strict=True):
            _check_id(chunk_id)
            if not isinstance(text, str):
                raise InputError(f"the text of {chunk_id!r} is a {type(text).__name__}, not a str")
        # Pieces bound the memory of tokens in flight (a str object each, before encoding).
        for start in range(0, len(ids), _UPSERT_PIECE):
            piece = ids[start : start + _UPSERT_PIECE]
            tokenized = [tokenize_for_bm25(text) for text in texts[start : start + _UPSERT_PIECE]]
            with self._lock:
                for chunk_id, tokens in zip(piece, tokenized, strict=True):
                    self._docs[chunk_id] = self._encode(tokens)
                self._changed()

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
                removed = self._docs.pop(chunk_id, None) is not None or removed
            if removed:
                self._changed()

    def _encode(self, tokens: list[str]) -> list[int]:
        """Map terms to term numbers, adding new terms to the table (call with the lock held)."""
        vocab, terms = self._vocab, self._terms
        numbers = []
        for token in tokens:
            number = vocab.get(token)
            if number is None:
                number = vocab[token] = len(terms)
                terms.append(token)
            numbers.append(number)
        return numbers

    def _changed(self) -> None:
        self._dirty = True
        self._fingerprint = None

    # ----------------------------------------------------------------- search

    def build(self) -> None:
        """Get ready to search: rebuild the BM25 matrix if anything changed, and load jieba.

        Without this, the next search does both: a rebuild (about 1 s per 20,000 chunks) and, once
        per process, jieba's dictionary load (about 0.5 s).
        """
        _jieba()
        self._snapshot()

    def _snapshot(self) -> _Model | None:
        """Return the current model, rebuilding it first if the corpus changed."""
        with self._lock:
            if self._dirty:
                self._model = self._build_model()
                if self._model is not None and self._compact(self._model):
                    self._model = self._build_model()
                self._dirty = False
            return self._model

    def _build_model(self) -> _Model | None:
        order = list(self._docs)
        corpus = [self._docs[chunk_id] for chunk_id in order]
        if not any(corpus):  # empty, or no terms at all: bm25s cannot build an empty vocabulary
            return None
        import bm25s  # here, not at the top: it costs ~0.2 s (scipy) and only a build needs it

        _quiet("bm25s")  # bm25s sets its own logger to DEBUG on import
        bm25 = bm25s.BM25(k1=self._k1, b=self._b, method=self._method, csc_backend="scipy")
        # A (token ids, vocab) tuple skips bm25s's own vocabulary pass. The vocab is copied: bm25s
        # keeps it for query lookups, and later upserts add terms to ours.
        bm25.index((corpus, dict(self._vocab)), create_empty_token=False, show_progress=False)
        return _Model(bm25, order)

    def _compact(self, model: _Model) -> bool:
        """Drop terms no held chunk uses, if there are many (lock held); True if it did."""
        used = np.diff(model.bm25.scores["indptr"]) > 0  # a matrix column per term
        dead = len(used) - int(used.sum())
        if dead <= _COMPACT_MIN_DEAD or dead * 2 <= len(used):
            return False
        self._terms, renumber = _drop_unused(self._terms, used)
        self._vocab = {term: i for i, term in enumerate(self._terms)}
        self._docs = {chunk_id: [renumber[t] for t in numbers] for chunk_id, numbers in self._docs.items()}
        return True

    def term_coverage(self, query: str) -> float:
        """Share of the query's distinct BM25 terms that occur in at least one held chunk (0 to 1).

        Hybrid search scales the BM25 weight by it: a Chinese question against an English corpus
        shares no terms (coverage near 0), so BM25 has no signal there and must not disturb dense
        ranking with stray matches on numbers or names.
        """
        terms = set(tokenize_for_bm25(query))
        if not terms:
            return 0.0
        model = self._snapshot()
        if model is None:
            return 0.0
        used = np.diff(model.bm25.scores["indptr"]) > 0
        known = [t for t in model.bm25.get_tokens_ids(list(terms)) if t < len(used) and used[t]]
        return len(known) / len(terms)

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
        model = self._snapshot()
        if model is None:
            return []
        term_ids = model.bm25.get_tokens_ids(terms)
        if not term_ids:
            return []
        scores: np.ndarray = model.bm25.get_scores_from_ids(term_ids)
        if allowed_ids is None:
            positions = np.flatnonzero(scores > 0)
        else:
            wanted = {model.position[i] for i in allowed_ids if i in model.position}
            positions = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
            positions = positions[scores[positions] > 0]
        return _top_k(model.order, positions, scores[positions], k)

    # ----------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """Write the index to one UTF-8 JSON file, atomically (temp file, then ``os.replace``).

        The file holds the format and tokenizer versions, the BM25 parameters, the
        :attr:`fingerprint`, the term table (``vocab``), the ids sorted, and for each id its terms
        as numbers into ``vocab`` (``docs``). Not the BM25 matrix: :meth:`load` rebuilds it.
        Missing parent folders are created.

        Args:
            path: the file to write.

        Raises:
            StoreError: if the file cannot be written.

        """
        from bm25s import __version__ as bm25s_version

        path = Path(path)
        with self._lock:  # lists are replaced, never mutated: shallow copies are a snapshot
            docs = dict(self._docs)
            terms = list(self._terms)
        ids = sorted(docs)
        lists = [docs[chunk_id] for chunk_id in ids]
        total = sum(map(len, lists))
        used = np.zeros(len(terms), dtype=bool)  # write only the terms still in use
        used[np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=total)] = True
        if not used.all():
            terms, renumber = _drop_unused(terms, used)
            lists = [[renumber[t] for t in numbers] for numbers in lists]
        payload = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "bm25": {"method": self._method, "k1": self._k1, "b": self._b},
            "fingerprint": fingerprint(ids),
            "count": len(ids),
            "written_by": {"jieba": jieba.__version__, "bm25s": bm25s_version},
            "vocab": terms,
            "ids": ids,
            "docs": lists,
        }
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write the sparse index to {path}: {exc}; check the folder") from exc

    @classmethod
    def load(cls, path: Path) -> SparseIndex:
        """Read an index written by :meth:`save` and rebuild its BM25 matrix.

        Args:
            path: the file to read.

        Returns:
            The index, with the BM25 parameters it was saved with.

        Raises:
            StoreError: if the file is missing, unreadable, corrupt, or written by another format
                or tokenizer version; in every case rebuild the index from the collection's texts.

        """
        path = Path(path)
        rebuild = "rebuild the sparse index from the collection's texts and save it again"
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the sparse index {path} ({exc}); {rebuild}") from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT_NAME:
            raise StoreError(f"{path} is not an m3e-rag sparse index; {rebuild}")
        if payload.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{path} has sparse index format {payload.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}; {rebuild}"
            )
        if payload.get("tokenizer_version") != TOKENIZER_VERSION:
            raise StoreError(
                f"{path} was tokenized by {payload.get('tokenizer_version')!r}, this version tokenizes "
                f"with {TOKENIZER_VERSION!r}; {rebuild}"
            )
        try:
            params, vocab, ids, docs = payload["bm25"], payload["vocab"], payload["ids"], payload["docs"]
            index = cls(k1=params["k1"], b=params["b"], method=params["method"])
            index._terms = _str_list(vocab, "vocab")
            ids = _str_list(ids, "ids")
            if not isinstance(docs, list) or len(docs) != len(ids):
                raise ValueError("ids and docs differ in length")
            canonical = list(range(len(index._terms)))  # share one int object per term, as _encode does
            for chunk_id, numbers in zip(ids, docs, strict=True):
                if not isinstance(numbers, list) or (numbers and min(numbers) < 0):
                    raise ValueError(f"the terms of {chunk_id!r} are not a list of term numbers")
                index._docs[chunk_id] = [canonical[t] for t in numbers]  # IndexError if out of range
            index._vocab = dict(zip(index._terms, canonical, strict=True))
            if len(index._vocab) != len(index._terms) or len(index._docs) != len(ids):
                raise ValueError("duplicate terms or ids")
        except (KeyError, IndexError, TypeError, ValueError, InputError) as exc:
            raise StoreError(f"the sparse index {path} is corrupt ({exc}); {rebuild}") from exc
        index._fingerprint = fingerprint(ids)
        if index._fingerprint != payload.get("fingerprint"):
            raise StoreError(f"the ids in the sparse index {path} do not match its fingerprint; {rebuild}")
        index._dirty = True
        index.build()
        return index


def _str_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} is not a list of strings")
    return value


def _drop_unused(terms: list[str], used: np.ndarray) -> tuple[list[str], list[int]]:
    """Return the terms still used and a table from old to new term numbers (-1 for dropped)."""
    renumber = (np.cumsum(used, dtype=np.int64) - 1).tolist()
    renumber = [n if keep else -1 for n, keep in zip(renumber, used.tolist(), strict=True)]
    kept = [term for term, keep in zip(terms, used.tolist(), strict=True) if keep]
    return kept, renumber


def _check_id(chunk_id: object) -> None:
    if not isinstance(chunk_id, str) or not chunk_id:
        raise InputError(f"chunk ids must be non-empty strings, got {chunk_id!r}")
    try:
        chunk_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"chunk id {chunk_id!r} is not valid Unicode ({exc}); use UTF-8 ids") from exc


def _top_k(order: list[str], positions: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Pick the ``k`` best positions by score, ties by id, as ``(id, score)`` pairs."""
    if len(positions) > k:
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= threshold  # may keep a few more than k when scores tie at the threshold
        positions, scores = positions[keep], scores[keep]
    pairs = [(order[p], s) for p, s in zip(positions.tolist(), scores.tolist(), strict=True)]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs[:k]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # mkstemp creates 0600; make it readable like a normal file
                os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
