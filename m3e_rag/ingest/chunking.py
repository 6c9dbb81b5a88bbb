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
Each window is tokenized once (:mod:`m3e_rag.ingest.tokens`), its sentences and clauses found
(:mod:`m3e_rag.ingest.sentences`) and packed into chunks (:mod:`m3e_rag.ingest.packing`).

Lone surrogates (``"\ud800"``: text decoded with ``surrogateescape`` or broken UTF-16) cannot be
tokenized, stored or encoded as UTF-8: they raise :class:`~m3e_rag.errors.InputError` naming the
position, rather than being silently altered (the loaders never produce them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from m3e_rag.encode.inputs import SURROGATE_RE
from m3e_rag.errors import InputError
from m3e_rag.ingest.packing import SpanPacker, _drop_contained
from m3e_rag.ingest.sentences import _punctuation_only
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


class Chunker(SpanPacker):
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
        super().__init__(tokenizer)
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

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
                bad = SURROGATE_RE.search(segment)
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
