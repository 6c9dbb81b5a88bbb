"""Where sentences and clauses begin and end, in Chinese, English and mixed text.

The chunker's text rules, kept apart from tokenization and packing because they only look at
characters: which characters are CJK, which end a sentence (``。！？；…｡．`` always; ASCII ``! ? ;``
and ``.`` only before whitespace, the end or CJK text, and ``.`` not after an abbreviation), which
closing quotes and brackets stay with the sentence they close, which characters a chunk never
starts with (:data:`_NO_START`), and where an over-long sentence may be cut at a clause mark. The
rules are described in full in :mod:`m3e_rag.ingest.chunking`.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left

_CJK_TERMINATORS = frozenset("。！？；…｡．")
_TERMINATOR_CHARS = "。！？；…｡．!?;."
_CLOSERS = frozenset("」』”’）)】》〉〗〕］]｝}»\"'")
_TERMINATOR_RE = re.compile(r"[。！？；…｡．!?;.]+|\n")
#: Characters a chunk (or sentence) never starts with: closers, sentence ends, clause marks.
_NO_START = frozenset("」』”’）)】》〉〗〕］]｝}»。！？；…｡．，、：,.;:!?")
_SPACE_RE = re.compile(r"\s*")
_CLAUSE_RE = re.compile(r"[，、：；,:;]")
_CJK_CLAUSE_MARKS = frozenset("，、：；")
_APOSTROPHE_RE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")  # a quote, not an apostrophe
_DOUBLE_QUOTE_RE = re.compile('"')
_INITIALS_RE = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs fig figs eq eqs vol pp inc ltd corp dept approx al cf viz ca".split()
)


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


def _punctuation_only(chunk: str) -> bool:
    """Whether a chunk holds nothing but punctuation (and spaces)."""
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in chunk)


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


def sentence_starts(text: str) -> list[int]:
    """Where the sentences of ``text`` start (0 first), by the chunker's own rules.

    Public for callers above this layer that cut text at sentence boundaries without chunking it
    (the LLM context assembly: :mod:`m3e_rag.retrieve.context`, which gets it from the pipeline).
    """
    return _sentence_starts(text)[0]
