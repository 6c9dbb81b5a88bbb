"""One tokenizer pass per window: token character spans, searchable by position.

The chunker budgets in model tokens, so it needs, for a window of text, where every token starts
and ends (:class:`_TokenIndex`) and, per chunk, the count the tokenizer gives for the chunk on its
own. :class:`TokenizerPass` gets both with as little tokenizer work as it can; the chunker's
sentence scanning and packing (:mod:`m3e_rag.ingest.sentences`, :mod:`m3e_rag.ingest.packing`)
only ever search the index.

Tokenizer work is kept small, so that most of the chunker's time is sentence scanning and packing
in Python (figures: benchmarks/README.md, 'Design figures'). For a BERT WordPiece tokenizer CJK
ideographs are one token each and never tokenized, and each distinct whitespace-delimited run of the
rest is tokenized once per chunker (a cache: English repeats its words). The old chunker also
converted every offset through ``transformers`` and tokenized every chunk a second time; both are
gone. For BERT WordPiece tokenizers (M3E's) a chunk whose edges fall on word boundaries has exactly
the in-document token count (normalization is per character and pre-tokens end at whitespace,
punctuation and CJK characters), so only the few chunks cut inside a word are tokenized again; any
other tokenizer recounts every chunk.
"""

from __future__ import annotations

import re
import threading
import weakref
from bisect import bisect_left, bisect_right
from itertools import islice, pairwise, repeat
from operator import le
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.ingest.sentences import _in_run

#: Characters a BERT WordPiece tokenizer always makes one token each (CJK ideographs of the basic,
#: extension A and extension B blocks, and common CJK punctuation), whatever the vocabulary.
_ONE_TOKEN_PUNCTUATION = "，。、；：？！「」『』（）《》〈〉【】“”‘’…—·"  # all Unicode P*: split off by BERT
_ONE_TOKEN_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002a6df" + _ONE_TOKEN_PUNCTUATION + "]+")
#: A run of non-whitespace for BERT's pre-tokenizer (which splits at these four; other spaces and
#: control characters are handled inside the tokenizer, within the run).
_BERT_RUN_RE = re.compile("[^ \t\n\r]+")
#: Distinct runs whose tokens a chunker keeps (cleared when exceeded; a few MiB at most).
_RUN_CACHE_LIMIT = 50_000

#: Characters per tokenizer call when tokenizing a whole document (batched, so the Rust side can
#: work on several pieces in parallel; small pieces are also faster than one huge string).
_SEGMENT_CHARS = 2000


class _TokenIndex:
    """Token character spans of one text, searchable by character position."""

    def __init__(self, starts: list[int], ends: list[int], ids: list[int]) -> None:
        # Offsets are non-decreasing for every tokenizer we know; enforce it so bisect is valid
        # (checked at C speed; repaired in Python only when needed).
        if not (all(map(le, starts, islice(starts, 1, None))) and all(map(le, ends, islice(ends, 1, None)))):
            for i in range(1, len(starts)):
                if starts[i] < starts[i - 1]:
                    starts[i] = starts[i - 1]
                if ends[i] < ends[i - 1]:
                    ends[i] = ends[i - 1]
        self.starts = starts
        self.ends = ends
        self.ids = ids

    def count(self, start: int, end: int) -> int:
        """Tokens overlapping ``[start, end)`` (a token across an edge counts once on each side)."""
        if end <= start:
            return 0
        return max(0, bisect_left(self.starts, end) - bisect_right(self.ends, start))

    def first_after(self, pos: int) -> int:
        """Index of the first token that ends after ``pos``."""
        return bisect_right(self.ends, pos)


class TokenizerPass:
    """How a chunker tokenizes: a private Rust backend copy, batched calls, the BERT shortcut.

    A base class of :class:`~m3e_rag.ingest.chunking.Chunker`; the tokenizer and what is learnt about
    it (backend copy, whether counts can be exact, the cache of tokenized runs) live on the chunker.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._verbose_kwarg: bool | None = None
        self._backend_cache: Any = None
        self._exact_bert = False
        self._continuation_ids: frozenset[int] = frozenset()
        self._run_cache: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def _backend(self) -> Any:
        """A private copy of the fast tokenizer's Rust backend, truncation and padding off (or None).

        A copy, because an encoder sharing the tokenizer may switch truncation on in between.
        """
        if self._backend_cache is None:
            copy = _backend_copy(self.tokenizer)
            self._backend_cache = copy
            self._exact_bert = copy is not False and _is_bert_wordpiece(copy)
            if self._exact_bert:
                prefix = copy.model.continuing_subword_prefix
                self._continuation_ids = frozenset(i for t, i in copy.get_vocab().items() if t.startswith(prefix))
        return self._backend_cache or None

    def _call_tokenizer(self, texts: list[str], offsets: bool) -> Any:
        """Call the tokenizer on a batch, without special tokens and without length warnings."""
        kwargs: dict[str, Any] = {"add_special_tokens": False}
        if offsets:
            kwargs["return_offsets_mapping"] = True
        if self._verbose_kwarg is not False:
            try:
                result = self.tokenizer(texts, verbose=False, **kwargs)
                self._verbose_kwarg = True
                return result
            except TypeError:
                if self._verbose_kwarg:
                    raise
                self._verbose_kwarg = False
        return self.tokenizer(texts, **kwargs)

    def _encode(self, texts: list[str], offsets: bool) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Tokenize a batch; returns ``(ids, offsets)`` per text (offsets empty unless asked)."""
        if not texts:
            return []
        backend = self._backend()
        if backend is not None:
            if not offsets:
                return [(e.ids, []) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
            return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
        try:
            enc = self._call_tokenizer(texts, offsets)
            ids = enc["input_ids"]
            spans = enc["offset_mapping"] if offsets else [[] for _ in texts]
        except NotImplementedError as exc:  # slow tokenizers refuse return_offsets_mapping
            raise InputError(
                "the tokenizer cannot report character offsets; pass a fast tokenizer "
                "(AutoTokenizer.from_pretrained(..., use_fast=True))"
            ) from exc
        return [(list(i), [(int(a), int(b)) for a, b in s]) for i, s in zip(ids, spans, strict=True)]

    def _index(self, text: str) -> _TokenIndex:
        """Tokenize the whole text once, in line-aligned segments, and index the token offsets."""
        if self._backend() is not None and self._exact_bert:
            return self._index_bert(text)
        cuts = _segment_cuts(text, _SEGMENT_CHARS)
        pieces = [text[a:b] for a, b in pairwise(cuts)]
        starts: list[int] = []
        ends: list[int] = []
        ids: list[int] = []
        for base, (piece_ids, piece_offsets) in zip(cuts, self._encode(pieces, offsets=True), strict=False):
            if not piece_offsets:
                continue
            ids.extend(piece_ids)
            piece_starts, piece_ends = zip(*piece_offsets, strict=True)
            starts.extend(map(base.__add__, piece_starts) if base else piece_starts)
            ends.extend(map(base.__add__, piece_ends) if base else piece_ends)
        return _TokenIndex(starts, ends, ids)

    def _index_bert(self, text: str) -> _TokenIndex:
        """Token offsets for a BERT WordPiece tokenizer, without tokenizing CJK ideographs.

        BERT's normalizer isolates every CJK ideograph and its pre-tokenizer every punctuation
        mark, and WordPiece turns a one-character word into one token (itself or ``[UNK]``): so each
        character of :data:`_ONE_TOKEN_RE` is exactly one token. The rest (Latin words, digits,
        other scripts) is cut at BERT's whitespace (space, tab, newline, CR) into runs: BERT splits
        there too and its normalizer works character by character, so a run's tokens are the same
        alone as in the whole text. Runs repeat (``the``, ``of``, ``1990,``), so each distinct run
        goes through the Rust tokenizer once and its tokens are kept in a bounded per-chunker cache,
        which saves much of the time spent tokenizing English text (figures: benchmarks/README.md,
        'Design figures').
        """
        starts: list[int] = []
        ends: list[int] = []
        ids: list[int] = []
        cache = self._run_cache
        if len(cache) > _RUN_CACHE_LIMIT:
            cache.clear()
        plan: list[tuple[int, int, str | None]] = []  # (start, end, run) ; run None: one-token chars
        missing: dict[str, None] = {}
        pos = 0
        for m in _ONE_TOKEN_RE.finditer(text):
            a, b = m.span()
            if a > pos:
                for r in _BERT_RUN_RE.finditer(text, pos, a):
                    run = r.group()
                    plan.append((r.start(), r.end(), run))
                    if run not in cache:
                        missing[run] = None
            plan.append((a, b, None))
            pos = b
        for r in _BERT_RUN_RE.finditer(text, pos):
            run = r.group()
            plan.append((r.start(), r.end(), run))
            if run not in cache:
                missing[run] = None
        if missing:
            for key, (new_ids, new_offsets) in zip(missing, self._encode(list(missing), offsets=True), strict=True):
                cache[key] = (tuple(x for x, _ in new_offsets), tuple(y for _, y in new_offsets), tuple(new_ids))
        for a, b, part in plan:
            if part is None:
                starts.extend(range(a, b))
                ends.extend(range(a + 1, b + 1))
                ids.extend(repeat(-1, b - a))
                continue
            run_starts, run_ends, run_ids = cache[part]
            if len(run_ids) == 1:
                starts.append(a + run_starts[0])
                ends.append(a + run_ends[0])
                ids.append(run_ids[0])
            elif run_ids:
                starts.extend(map(a.__add__, run_starts))
                ends.extend(map(a.__add__, run_ends))
                ids.extend(run_ids)
        return _TokenIndex(starts, ends, ids)

    def _is_continuation(self, tokens: _TokenIndex, i: int) -> bool:
        """Whether token ``i`` continues a word (a WordPiece ``##`` piece)."""
        if self._exact_bert:
            return i < len(tokens.ids) and tokens.ids[i] in self._continuation_ids
        convert = getattr(self.tokenizer, "convert_ids_to_tokens", None)
        if convert is None or i >= len(tokens.ids):
            return False
        try:
            piece = convert(tokens.ids[i])
        except Exception:  # noqa: BLE001 - a duck-typed tokenizer may not support it; not needed
            return False
        return isinstance(piece, str) and piece.startswith("##")

    def _clean_edges(self, tokens: _TokenIndex, a: int, b: int) -> bool:
        """Whether no token or word crosses ``a`` or ``b`` (then the in-document count is exact)."""
        i0 = bisect_right(tokens.ends, a)
        i1 = bisect_left(tokens.starts, b)
        if i0 >= i1:
            return True
        if tokens.starts[i0] < a or tokens.ends[i1 - 1] > b:
            return False
        cont = self._continuation_ids
        return tokens.ids[i0] not in cont and (i1 >= len(tokens.ids) or tokens.ids[i1] not in cont)


#: One private backend copy per tokenizer object (copying a 250k-piece vocabulary takes seconds),
#: keyed weakly; rebuilt when the vocabulary size changes (tokens added).
_BACKEND_COPIES: weakref.WeakKeyDictionary[Any, tuple[int, Any]] = weakref.WeakKeyDictionary()
_BACKEND_LOCK = threading.Lock()


def _backend_copy(tokenizer: Any) -> Any:
    """A copy of ``tokenizer``'s Rust backend with truncation and padding off, or ``False``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return False
    try:
        size = backend.get_vocab_size(with_added_tokens=True)
        with _BACKEND_LOCK:
            cached = _BACKEND_COPIES.get(tokenizer)
        if cached is not None and cached[0] == size:
            return cached[1]
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.no_truncation()
        copy.no_padding()
    except Exception:  # noqa: BLE001 - any failure: use the tokenizer's own call
        return False
    try:
        with _BACKEND_LOCK:
            _BACKEND_COPIES[tokenizer] = (size, copy)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return copy


def _is_bert_wordpiece(backend: Any) -> bool:
    """Whether a Rust tokenizer is BERT WordPiece (per-character normalizer, BERT pre-tokenizer)."""
    try:
        from tokenizers import models, normalizers, pre_tokenizers
    except ImportError:  # pragma: no cover - tokenizers comes with transformers
        return False
    normalizer = backend.normalizer
    return (
        isinstance(backend.model, models.WordPiece)
        and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
        and (normalizer is None or isinstance(normalizer, normalizers.BertNormalizer))
    )


def _segment_cuts(text: str, size: int) -> list[int]:
    """Positions that cut ``text`` into pieces of about ``size`` characters for batch tokenizing.

    Cuts fall after a line break where possible, else at whitespace or next to a CJK character, so
    no token straddles a cut for BERT-style tokenizers (the per-chunk recount covers the rest).
    """
    cuts = [0]
    n = len(text)
    pos = 0
    while n - pos > size:
        target = pos + size
        low = pos + size // 2
        newline = text.rfind("\n", low, target)
        if newline != -1:
            cut = newline + 1
        else:
            cut = target
            for c in range(target, low, -1):
                if not _in_run(text, c):
                    cut = c
                    break
        cuts.append(cut)
        pos = cut
    cuts.append(n)
    return cuts
