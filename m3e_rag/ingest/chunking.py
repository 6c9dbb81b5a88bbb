"""Chinese-aware chunking, budgeted in model tokens.

:class:`Chunker` cuts a :class:`~m3e_rag.types.Document` into :class:`~m3e_rag.types.Chunk` s that
each fit the embedding model's token window. The rules, in order of preference:

1. **Paragraphs** (separated by a blank line) that fit the budget are never split across chunks.
2. **Sentences** end at ``。！？；…`` (always), at ASCII ``! ? ;`` followed by whitespace, the end
   or a CJK character, at ASCII ``.`` followed by whitespace or the end (so ``3.14``, ``e.g.x``,
   ``U.S.A`` and URLs stay whole; ``U.S.``, ``e.g.``, ``Mr.`` and similar abbreviations do not end a
   sentence), and at every line break. Closing quotes and brackets right after a sentence end
   (``」”’』）)】》`` and balanced ASCII quotes) stay with the sentence they close.
3. A sentence longer than the budget is cut at clause marks (``，、：；`` and ASCII ``, : ;`` followed
   by whitespace), and a clause still too long is cut between tokens, preferring a cut at whitespace
   or next to a CJK character, then one that is not inside a word (never before a WordPiece ``##``
   piece), and only as a last resort anywhere (a single unbroken run longer than the budget).

Consecutive pieces are packed greedily up to ``max_tokens``. Each new chunk starts with whole
trailing sentences of the previous chunk totalling at most ``overlap_tokens`` (never a part of a
sentence; no overlap when the last sentence alone is larger).

Punctuation: a chunk never starts with closing punctuation, a sentence end or a clause mark
(``」』”’）。！？；…｡．，、：`` and ASCII ``) ] } . , ; : ! ?``), and a chunk made only of punctuation
is merged into a neighbour that has room (full-width ``！？｡．`` end sentences like ``。``).

Every chunk is an exact slice ``document.text[start:end]`` with surrounding whitespace trimmed, and
``n_tokens`` is the count the tokenizer gives for the chunk on its own; it never exceeds
``max_tokens`` (a chunk whose own count is over budget is cut again).

**Bounded memory and one tokenizer pass.** Text is processed in windows of about
:data:`WINDOW_CHARS` characters, cut at a paragraph break (else a line break, else a sentence end)
in the window's second half; the last chunk of a window is redone from its start in the next one,
so windows change nothing but memory: RAM is O(window), whatever the document's size, and
:meth:`Chunker.iter_chunks` takes the text as a stream of segments (a file decoded block by block).
Where the time goes (mixed zh/en text, M3E's WordPiece, one core; ``benchmarks/chunker.py``:
5.45 MB/s, of which 23% in the Rust tokenizer): for a BERT WordPiece tokenizer CJK ideographs are
one token each and never tokenized, and each distinct whitespace-delimited run of the rest is
tokenized once per chunker (a cache: English repeats its words); then sentence scanning and packing
in Python. The old chunker also converted every offset through ``transformers`` and
tokenized every chunk a second time; both are gone. For BERT WordPiece tokenizers (M3E's)
a chunk whose edges fall on word boundaries has exactly the in-document token count (normalization
is per character and pre-tokens end at whitespace, punctuation and CJK characters), so only the few
chunks cut inside a word are tokenized again; any other tokenizer recounts every chunk.

Lone surrogates (``"\ud800"``: text decoded with ``surrogateescape`` or broken UTF-16) cannot be
tokenized, stored or encoded as UTF-8: they raise :class:`~m3e_rag.errors.InputError` naming the
position, rather than being silently altered (the loaders never produce them).
"""

from __future__ import annotations

import re
import threading
import unicodedata
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, pairwise, repeat
from operator import le
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.types import Chunk, Document, Metadata

__all__ = ["Chunker", "CHUNKER_VERSION", "MIN_MAX_TOKENS", "MAX_MAX_TOKENS", "WINDOW_CHARS"]

#: Bumped whenever a change can move chunk boundaries (recorded by the store via ``settings()``).
#: 2: windows, no chunk starting with closing punctuation, "．" ends a sentence.
CHUNKER_VERSION = "2"
#: Characters per processing window (memory is bounded by the window, not the document).
WINDOW_CHARS = 32_768
#: Smallest accepted ``max_tokens``.
MIN_MAX_TOKENS = 8
#: Largest accepted ``max_tokens``: the M3E window of 512 minus ``[CLS]`` and ``[SEP]``.
MAX_MAX_TOKENS = 510

_CJK_TERMINATORS = frozenset("。！？；…｡．")
_TERMINATOR_CHARS = "。！？；…｡．!?;."
_CLOSERS = frozenset("」』”’）)】》〉〗〕］]｝}»\"'")
_TERMINATOR_RE = re.compile(r"[。！？；…｡．!?;.]+|\n")
#: Characters a chunk (or sentence) never starts with: closers, sentence ends, clause marks.
_NO_START = frozenset("」』”’）)】》〉〗〕］]｝}»。！？；…｡．，、：,.;:!?")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
#: Characters a BERT WordPiece tokenizer always makes one token each (CJK ideographs of the basic,
#: extension A and extension B blocks, and common CJK punctuation), whatever the vocabulary.
_ONE_TOKEN_PUNCTUATION = "，。、；：？！「」『』（）《》〈〉【】“”‘’…—·"  # all Unicode P*: split off by BERT
_ONE_TOKEN_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002a6df" + _ONE_TOKEN_PUNCTUATION + "]+")
_SPACE_RE = re.compile(r"\s*")
#: A run of non-whitespace for BERT's pre-tokenizer (which splits at these four; other spaces and
#: control characters are handled inside the tokenizer, within the run).
_BERT_RUN_RE = re.compile("[^ \t\n\r]+")
#: Distinct runs whose tokens a chunker keeps (cleared when exceeded; a few MiB at most).
_RUN_CACHE_LIMIT = 50_000
_CLAUSE_RE = re.compile(r"[，、：；,:;]")
_CJK_CLAUSE_MARKS = frozenset("，、：；")
_APOSTROPHE_RE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")  # a quote, not an apostrophe
_DOUBLE_QUOTE_RE = re.compile('"')
_INITIALS_RE = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs fig figs eq eqs vol pp inc ltd corp dept approx al cf viz ca".split()
)

#: Characters per tokenizer call when tokenizing a whole document (batched, so the Rust side can
#: work on several pieces in parallel; small pieces are also faster than one huge string).
_SEGMENT_CHARS = 2000


def _is_cjk(ch: str) -> bool:
    """Whether ``ch`` is a CJK ideograph, kana, hangul or CJK/fullwidth punctuation."""
    cp = ord(ch)
    if 0xFF10 <= cp <= 0xFF19 or 0xFF21 <= cp <= 0xFF3A or 0xFF41 <= cp <= 0xFF5A:
        return False  # fullwidth digits and letters behave like a word
    return (
        0x2E80 <= cp <= 0x9FFF
        or 0xA960 <= cp <= 0xA97F
        or 0xAC00 <= cp <= 0xD7AF
        or 0xF900 <= cp <= 0xFAFF
        or 0xFE30 <= cp <= 0xFE4F
        or 0xFF00 <= cp <= 0xFFEF
        or 0x20000 <= cp <= 0x3FFFF
    )


def _in_run(text: str, pos: int) -> bool:
    """Whether ``pos`` lies inside a run of non-space, non-CJK characters (a word, number, URL)."""
    if pos <= 0 or pos >= len(text):
        return False
    before, after = text[pos - 1], text[pos]
    return not (before.isspace() or after.isspace() or _is_cjk(before) or _is_cjk(after))


def _in_word(text: str, pos: int) -> bool:
    """Whether ``pos`` lies between two letters or digits of a non-CJK word."""
    if pos <= 0 or pos >= len(text):
        return False
    before, after = text[pos - 1], text[pos]
    return before.isalnum() and after.isalnum() and not (_is_cjk(before) or _is_cjk(after))


@dataclass(frozen=True)
class _Atom:
    """A smallest packing unit: a whole sentence or a piece of an over-long sentence."""

    start: int
    end: int
    whole: bool


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


class Chunker:
    """Split documents into chunks that fit a token budget, Chinese- and English-aware.

    Construction is cheap (no tokenization happens until :meth:`split`).

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (or any callable that, like one, accepts
            ``add_special_tokens=False, return_offsets_mapping=True`` and returns ``input_ids``
            and ``offset_mapping``). Use the embedding model's own tokenizer so budgets are exact.
        max_tokens: most tokens per chunk, special tokens not included; 8 to 510 (M3E reads 512
            tokens including ``[CLS]`` and ``[SEP]``; pass less to leave room for a prompt).
        overlap_tokens: most tokens of whole trailing sentences repeated at the start of the next
            chunk; ``0 <= overlap_tokens < max_tokens / 2``.

    Raises:
        InputError: a setting is out of range, or the tokenizer cannot report offsets.

    Example:
        >>> chunker = Chunker(tokenizer, max_tokens=256, overlap_tokens=32)  # doctest: +SKIP
        >>> chunks = chunker.split(Document(text="第一句。第二句！", source="a.txt"))  # doctest: +SKIP

    """

    def __init__(self, tokenizer: Any, max_tokens: int = 384, overlap_tokens: int = 32) -> None:
        if tokenizer is None or not callable(tokenizer):
            raise InputError(
                "tokenizer must be a Hugging Face fast tokenizer (for example "
                "AutoTokenizer.from_pretrained('moka-ai/m3e-base')); got "
                f"{type(tokenizer).__name__}"
            )
        if getattr(tokenizer, "is_fast", True) is False:
            raise InputError(
                "the tokenizer is a slow (pure Python) tokenizer, which cannot report character offsets; "
                "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise InputError(
                f"max_tokens must be an integer from {MIN_MAX_TOKENS} to {MAX_MAX_TOKENS}; got {max_tokens!r}"
            )
        if not MIN_MAX_TOKENS <= max_tokens <= MAX_MAX_TOKENS:
            raise InputError(
                f"max_tokens must be from {MIN_MAX_TOKENS} to {MAX_MAX_TOKENS} (the model reads 512 tokens "
                f"including [CLS] and [SEP]); got {max_tokens}"
            )
        overlap_limit = (max_tokens - 1) // 2
        if (
            isinstance(overlap_tokens, bool)
            or not isinstance(overlap_tokens, int)
            or not 0 <= overlap_tokens < max_tokens / 2
        ):
            raise InputError(
                "overlap_tokens must be an integer with 0 <= overlap_tokens < max_tokens / 2 "
                f"(0 to {overlap_limit} for max_tokens={max_tokens}); got {overlap_tokens!r}"
            )
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self._verbose_kwarg: bool | None = None
        self._backend_cache: Any = None
        self._exact_bert = False
        self._continuation_ids: frozenset[int] = frozenset()
        self._run_cache: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def __repr__(self) -> str:
        """Show the settings."""
        return f"Chunker(max_tokens={self.max_tokens}, overlap_tokens={self.overlap_tokens})"

    # ------------------------------------------------------------------ public API

    def settings(self) -> dict[str, int | str]:
        """Return the settings that decide chunk boundaries, for recording beside an index.

        Returns:
            ``{"max_tokens": ..., "overlap_tokens": ..., "chunker_version": ...}``.

        """
        return {
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "chunker_version": CHUNKER_VERSION,
        }

    def count_tokens(self, text: str) -> int:
        """Count the model tokens of ``text`` (special tokens not included).

        Args:
            text: any string.

        Returns:
            The number of tokens the tokenizer produces for ``text``.

        """
        return len(self._encode([text], offsets=False)[0][0])

    def split(self, document: Document) -> list[Chunk]:
        """Split one document.

        Args:
            document: the document; its metadata is copied into every chunk.

        Returns:
            The chunks in document order (an empty list for an empty or whitespace-only text).

        Raises:
            InputError: ``document`` is not a :class:`~m3e_rag.types.Document` with a string text.

        """
        if not isinstance(document, Document):
            raise InputError(
                f"split() takes a Document; got {type(document).__name__} (use split_text() for a str)"
            )
        return self.split_text(document.text, source=document.source, metadata=document.metadata)

    def split_text(self, text: str, source: str = "", metadata: Metadata | None = None) -> list[Chunk]:
        """Split one text.

        Args:
            text: the text to split.
            source: the source name recorded on every chunk.
            metadata: metadata copied into every chunk (``None`` for none).

        Returns:
            The chunks in text order; each ``chunk.text == text[chunk.start:chunk.end]``.

        Raises:
            InputError: ``text`` is not a string, or holds a lone surrogate.

        """
        if not isinstance(text, str):
            raise InputError(f"text must be a str; got {type(text).__name__}")
        return list(self.iter_chunks([text], source=source, metadata=metadata))

    def iter_chunks(
        self, segments: Iterable[str], source: str = "", metadata: Metadata | None = None
    ) -> Iterator[Chunk]:
        """Split a text given as consecutive segments, yielding chunks as soon as they are final.

        The result does not depend on how the text is cut into segments (it equals
        ``split_text("".join(segments))``); memory holds about one window plus one segment.

        Args:
            segments: the text, in order (for example a file decoded block by block).
            source: the source name recorded on every chunk.
            metadata: metadata copied into every chunk (``None`` for none).

        Yields:
            Chunks in text order; ``start``/``end`` are offsets into the whole (joined) text.

        Raises:
            InputError: a segment is not a string, or holds a lone surrogate.

        """
        base: Metadata = dict(metadata) if metadata else {}
        buf = ""  # text from absolute offset `buf_start`; the next window starts at buf[pos]
        buf_start = 0
        pos = 0
        index = 0
        pieces = iter(segments)
        exhausted = False
        while True:
            while not exhausted and len(buf) - pos < 2 * WINDOW_CHARS:
                try:
                    segment = next(pieces)
                except StopIteration:
                    exhausted = True
                    break
                if not isinstance(segment, str):
                    raise InputError(f"text must be a str; got {type(segment).__name__}")
                bad = _SURROGATE_RE.search(segment)
                if bad:
                    offset = buf_start + len(buf) + bad.start()
                    raise InputError(
                        f"text holds a lone surrogate U+{ord(bad.group()):04X} at position {offset} (text decoded "
                        "with surrogateescape, or broken UTF-16); decode it with errors='replace' first"
                    )
                if pos:
                    buf, buf_start, pos = buf[pos:], buf_start + pos, 0
                buf = buf + segment if buf else segment
            final = exhausted and len(buf) - pos <= WINDOW_CHARS
            end = len(buf) if final else _window_end(buf, pos, pos + WINDOW_CHARS)
            window = buf[pos:end]
            spans, resume = self._split_window(window, final)
            offset = buf_start + pos
            for a, b, n in spans:
                yield Chunk(
                    text=window[a:b],
                    source=source,
                    start=offset + a,
                    end=offset + b,
                    index=index,
                    n_tokens=n,
                    metadata=dict(base),
                )
                index += 1
            if final:
                return
            pos += resume

    def _split_window(self, window: str, final: bool) -> tuple[list[tuple[int, int, int]], int]:
        """Chunk spans of one window and where the next window starts (the last span is redone)."""
        if not window.strip():
            return [], len(window)
        tokens = self._index(window)
        spans = self._pack(window, tokens)
        resume = len(window)
        if not final:
            if len(spans) >= 2:
                resume = spans[-1][0]
                spans = spans[:-1]
            elif spans:
                resume = spans[-1][1]  # one chunk larger than the window (a giant token): forced cut
        done = _drop_contained(self._fix_punctuation_only(window, self._finalize(window, spans, tokens, final)))
        return done, resume

    # ------------------------------------------------------------------ tokenization

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
        goes through the Rust tokenizer once and its tokens are kept in a bounded per-chunker cache:
        on English text this halves the time spent tokenizing (``benchmarks/chunker.py``).
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

    # ------------------------------------------------------------------ planning

    def _pack(self, text: str, tokens: _TokenIndex) -> list[tuple[int, int]]:
        """Build atoms and groups, then pack them greedily with sentence overlap."""
        atoms, groups = self._atoms(text, tokens)
        budget = self.max_tokens
        spans: list[tuple[int, int]] = []
        lo = hi = -1
        for g_lo, g_hi in groups:
            if lo < 0:
                lo, hi = g_lo, g_hi
                continue
            if tokens.count(atoms[lo].start, atoms[g_hi - 1].end) <= budget:
                hi = g_hi
                continue
            spans.append((atoms[lo].start, atoms[hi - 1].end))
            lo, hi = self._overlap_start(atoms, tokens, lo, hi, g_hi), g_hi
        if lo >= 0:
            spans.append((atoms[lo].start, atoms[hi - 1].end))
        return spans

    def _overlap_start(self, atoms: list[_Atom], tokens: _TokenIndex, lo: int, hi: int, g_hi: int) -> int:
        """First atom of the next chunk: whole trailing sentences of ``[lo, hi)`` within the overlap."""
        best = hi
        if self.overlap_tokens == 0:
            return best
        k = hi
        while k - 1 > lo and atoms[k - 1].whole:
            k -= 1
            if tokens.count(atoms[k].start, atoms[hi - 1].end) > self.overlap_tokens:
                break
            if tokens.count(atoms[k].start, atoms[g_hi - 1].end) > self.max_tokens:
                break
            best = k
        return best

    def _atoms(self, text: str, tokens: _TokenIndex) -> tuple[list[_Atom], list[tuple[int, int]]]:
        """Sentences (and pieces of over-long ones) plus the groups that must stay together."""
        budget = self.max_tokens
        starts, paragraph_starts = _sentence_starts(text)
        bounds = [*starts, len(text)]
        atoms: list[_Atom] = []
        groups: list[tuple[int, int]] = []
        i = 0
        n_sentences = len(starts)
        while i < n_sentences:
            j = i + 1
            while j < n_sentences and starts[j] not in paragraph_starts:
                j += 1
            if j - i > 1 and tokens.count(bounds[i], bounds[j]) <= budget:
                first = len(atoms)
                atoms.extend(_Atom(bounds[k], bounds[k + 1], True) for k in range(i, j))
                groups.append((first, len(atoms)))
            else:
                for k in range(i, j):
                    a, b = bounds[k], bounds[k + 1]
                    if tokens.count(a, b) <= budget:
                        atoms.append(_Atom(a, b, True))
                        groups.append((len(atoms) - 1, len(atoms)))
                        continue
                    for p, q in self._split_long(text, a, b, tokens):
                        atoms.append(_Atom(p, q, False))
                        groups.append((len(atoms) - 1, len(atoms)))
            i = j
        return atoms, groups

    def _split_long(self, text: str, start: int, end: int, tokens: _TokenIndex) -> list[tuple[int, int]]:
        """Cut an over-long sentence at clause marks, then by tokens."""
        pieces: list[tuple[int, int]] = []
        cut_points = [start, *_clause_cuts(text, start, end), end]
        for a, b in pairwise(cut_points):
            if a >= b:
                continue
            if tokens.count(a, b) <= self.max_tokens:
                pieces.append((a, b))
            else:
                inner = [a, *self._token_cuts(text, a, b, tokens), b]
                pieces.extend(pairwise(inner))
        return pieces

    def _token_cuts(self, text: str, start: int, end: int, tokens: _TokenIndex) -> list[int]:
        """Cut positions in ``[start, end)`` so every piece holds at most ``max_tokens`` tokens."""
        cuts: list[int] = []
        cur = start
        budget = self.max_tokens
        while tokens.count(cur, end) > budget:
            first = tokens.first_after(cur)
            cut = self._choose_cut(text, tokens, cur, first, first + budget)
            cuts.append(cut)
            cur = cut
        return cuts

    def _choose_cut(self, text: str, tokens: _TokenIndex, cur: int, first: int, last: int) -> int:
        """Pick a token start in ``(cur, starts[last]]`` that does not fall inside a word.

        Tries, within the last half of the budget: a cut at whitespace or next to a CJK character,
        then one that is not inside a word nor before a ``##`` piece; otherwise cuts at ``last``.
        """
        floor = max(first + 1, last - self.max_tokens // 2)
        starts = tokens.starts
        for c in range(last, floor - 1, -1):
            pos = starts[c]
            if pos > cur and not _in_run(text, pos) and text[pos] not in _NO_START:
                return pos
        for c in range(last, floor - 1, -1):
            pos = starts[c]
            if (
                pos > cur
                and text[pos] not in _NO_START
                and not _in_word(text, pos)
                and not self._is_continuation(tokens, c)
            ):
                return pos
        for c in range(last, first, -1):  # never start the next chunk with closing punctuation
            if starts[c] > cur and text[starts[c]] not in _NO_START:
                return starts[c]
        for c in range(last, len(starts)):
            if starts[c] > cur:
                return starts[c]
        raise AssertionError("no token boundary after the cursor")  # unreachable: count > budget

    def _finalize(
        self,
        text: str,
        spans: Sequence[tuple[int, int]],
        tokens: _TokenIndex | None = None,
        final: bool = True,
    ) -> list[tuple[int, int, int]]:
        """Trim each span, take its own token count, and cut again any span over budget.

        The own count is the in-document count where that is exact (a BERT WordPiece tokenizer
        and no token or word across the span's edges), else the tokenizer's count of the span
        alone. A span's own count can differ from the in-document count where a cut fell inside
        a word; re-cutting with the span's own offsets always makes progress (pieces are shorter).
        """
        trimmed = [t for t in (_trim(text, a, b) for a, b in spans) if t is not None]
        if not trimmed:
            return []
        self._backend()  # decides whether in-document counts can be exact
        counts: list[int | None] = []
        for a, b in trimmed:
            exact = tokens is not None and self._exact_bert and (final or b < len(text))
            counts.append(tokens.count(a, b) if exact and tokens is not None and self._clean_edges(tokens, a, b)
                          else None)
        need = [span for span, n in zip(trimmed, counts, strict=True) if n is None]
        if need:
            fresh = iter([len(ids) for ids, _ in self._encode([text[a:b] for a, b in need], offsets=False)])
            counts = [n if n is not None else next(fresh) for n in counts]
        out: list[tuple[int, int, int]] = []
        for (a, b), n in zip(trimmed, counts, strict=True):
            assert n is not None
            if n == 0:
                continue  # nothing the model can read (control or zero-width characters only)
            if n <= self.max_tokens:
                out.append((a, b, n))
                continue
            ids, offsets = self._encode([text[a:b]], offsets=True)[0]
            local = _TokenIndex([a + s for s, _ in offsets], [a + e for _, e in offsets], list(ids))
            inner = [a, *self._token_cuts(text, a, b, local), b]
            out.extend(self._finalize(text, list(pairwise(inner)), local))
        return out

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

    def _fix_punctuation_only(self, text: str, spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Merge a chunk made only of punctuation into the previous (else the next) chunk if it fits."""
        if len(spans) < 2 or not any(_punctuation_only(text[a:b]) for a, b, _ in spans):
            return spans
        out = list(spans)
        i = 0
        while i < len(out) and len(out) > 1:
            a, b, _ = out[i]
            if not _punctuation_only(text[a:b]):
                i += 1
                continue
            merged = False
            for j in (i - 1, i + 1):
                if 0 <= j < len(out):
                    lo, hi = min(out[j][0], a), max(out[j][1], b)
                    n = self.count_tokens(text[lo:hi])
                    if n <= self.max_tokens:
                        out[min(i, j)] = (lo, hi, n)
                        del out[max(i, j)]
                        merged = True
                        break
            if not merged:
                i += 1
        return out

# ---------------------------------------------------------------------- text scanning helpers


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


def _punctuation_only(chunk: str) -> bool:
    """Whether a chunk holds nothing but punctuation (and spaces)."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in chunk)


def _window_end(text: str, start: int, limit: int) -> int:
    """End of a window over ``text[start:limit]``.

    After a paragraph break in the window's second half, else after a line break, else after a CJK
    sentence end, else at whitespace, else ``limit``.
    """
    low = start + (limit - start) // 2
    for mark in ("\n\n", "\n", "。", "！", "？", " "):
        found = text.rfind(mark, low, limit)
        if found != -1:
            return found + len(mark)
    return limit


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Shrink ``[start, end)`` past surrounding whitespace; ``None`` if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _drop_contained(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Drop a span that lies inside its neighbour (possible after a re-cut next to an overlap)."""
    kept: list[tuple[int, int, int]] = []
    for span in spans:
        if kept and kept[-1][0] <= span[0] and span[1] <= kept[-1][1]:
            continue
        while kept and span[0] <= kept[-1][0] and kept[-1][1] <= span[1]:
            kept.pop()
        kept.append(span)
    return kept


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


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at ``dot`` closes an abbreviation such as ``U.S.``, ``e.g.`` or ``Mr.``."""
    i = dot
    limit = max(0, dot - 16)  # abbreviations are short; bounded so a long run stays linear
    while i > limit and (text[i - 1].isascii() and (text[i - 1].isalpha() or text[i - 1] == ".")):
        i -= 1
    if i == limit and i > 0 and text[i - 1].isascii() and text[i - 1].isalpha():
        return False
    word = text[i:dot]
    if not word:
        return False
    if _INITIALS_RE.fullmatch(word):
        return True
    return word.lower() in _ABBREVIATIONS


class _Quotes:
    """Positions of ASCII quotes in a text (apostrophes such as ``don't`` left out), found lazily."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._positions: dict[str, list[int]] = {}

    def is_closing(self, start: int, pos: int) -> bool:
        """Whether the quote at ``pos`` closes one opened in ``text[start:pos]`` (odd count there)."""
        quote = self._text[pos]
        positions = self._positions.get(quote)
        if positions is None:
            pattern = _APOSTROPHE_RE if quote == "'" else _DOUBLE_QUOTE_RE
            positions = self._positions[quote] = [m.start() for m in pattern.finditer(self._text)]
        return (bisect_left(positions, pos) - bisect_left(positions, start)) % 2 == 1


def _sentence_end(
    text: str, run_start: int, run_end: int, sentence_start: int, quotes: _Quotes
) -> int | None:
    """End of the sentence closed by the terminator run ``text[run_start:run_end]``, or ``None``.

    Absorbs closing quotes/brackets (and terminators after them, as in ``」。``) and decides
    whether an ASCII terminator really ends a sentence.
    """
    n = len(text)
    end = run_end
    while end < n:
        ch = text[end]
        if ch in _CLOSERS:
            if ch in "\"'" and not quotes.is_closing(sentence_start, end):
                break
            end += 1
        elif ch in _TERMINATOR_CHARS and end > run_end:
            end += 1
        else:
            break
    run = text[run_start:run_end]
    if any(c in _CJK_TERMINATORS for c in run):
        return end
    nxt = text[end] if end < n else ""
    last = run[-1]
    if nxt == "" or nxt.isspace():
        pass
    elif _is_cjk(nxt) and (
        last in "!?;" or (run_start > 0 and text[run_start - 1].isascii() and text[run_start - 1].isalpha())
    ):
        pass  # mixed text: "Hello world!你好" or "Python.它"
    else:
        return None
    if run == "." and end == run_end and _is_abbreviation(text, run_start):
        return None
    return end


def _sentence_starts(text: str) -> tuple[list[int], set[int]]:
    """Start positions of the sentences of ``text`` (the first is 0) and those that open a paragraph.

    Sentences partition the text: whitespace after a sentence end belongs to that sentence.
    """
    starts = [0]
    paragraphs: set[int] = set()
    n = len(text)
    pos = 0
    sentence_start = 0
    quotes = _Quotes(text)
    while True:
        m = _TERMINATOR_RE.search(text, pos)
        if m is None:
            break
        if m.group() == "\n":
            end: int | None = m.start()
        else:
            end = _sentence_end(text, m.start(), m.end(), sentence_start, quotes)
        if end is None:
            pos = m.end()
            continue
        space = _SPACE_RE.match(text, end)
        boundary = space.end() if space else end
        if boundary >= n:
            break
        if text[boundary] in _NO_START:
            pos = max(boundary, m.end())  # a line that opens with "」" or "。" stays with the sentence before
            continue
        if boundary > sentence_start:
            starts.append(boundary)
            if text.count("\n", end, boundary) >= 2:
                paragraphs.add(boundary)
            sentence_start = boundary
        pos = max(boundary, m.end())
    return starts, paragraphs


def _clause_cuts(text: str, start: int, end: int) -> list[int]:
    """Cut positions after clause marks inside ``[start, end)`` (after any following whitespace)."""
    cuts: list[int] = []
    for m in _CLAUSE_RE.finditer(text, start, end):
        after = m.end()
        if m.group() not in _CJK_CLAUSE_MARKS:
            nxt = text[after] if after < len(text) else ""
            if not (nxt == "" or nxt.isspace() or _is_cjk(nxt)):
                continue  # 1,000 / 10:30 / http://
        while after < end and text[after].isspace():
            after += 1
        if after < end and text[after] in _NO_START:
            continue  # "，」": the closer stays with its clause
        if start < after < end and (not cuts or after > cuts[-1]):
            cuts.append(after)
    return cuts
