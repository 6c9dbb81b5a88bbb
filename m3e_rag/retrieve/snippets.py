"""What a person reads of a search result: the chunk's text around the query's words, and what its score is.

A chunk is up to 256 tokens, and the words that made it match may lie anywhere in it: cutting the text at
its first 90 characters cut the answer off in 2 of the demo's 5 queries. :func:`snippet` shows a window of the
text centred on a matched query term (the query's BM25 terms, so Chinese is segmented as the index segments
it), with ellipses where it was cut. :func:`score_label` and :data:`SCORE_MEANINGS` name the score of each mode
(a fused hybrid score of -0.29 beside 0.81 is no error: it is a z-score).
"""

from __future__ import annotations

import bisect
import unicodedata

from m3e_rag.errors import InputError
from m3e_rag.index.sparse.tokenize import tokenize_for_bm25

__all__ = ["SCORE_MEANINGS", "score_label", "snippet"]

#: What each score label means, for a line under the results.
SCORE_MEANINGS: dict[str, str] = {
    "cosine": "cosine similarity of query and chunk vectors, -1 to 1; M3E's cluster high, so compare within one query",
    "BM25": "BM25 word-match score, 0 and up; compare within one query",
    "fused": "hybrid of cosine and BM25, each standardised over this query's candidates, then weighted; unitless, "
             "below 0 means below this query's average candidate; compare within one query",
    "rerank": "the cross-encoder's relevance score; the first stage's score follows it",
    "lexical": "the model's lexical matching score (sum over shared tokens of query x chunk weight), 0 and up; "
               "compare within one query",
    "colbert": "the mean of the dense, lexical and ColBERT scores (FlagEmbedding's combination); compare within "
               "one query",
}

_MODE_LABELS = {"dense": "cosine", "sparse": "BM25", "hybrid": "fused"}

#: Occurrences of one term looked at when placing the window (a long chunk repeating a word).
_MAX_OCCURRENCES = 64
#: Occurrences of all terms looked at (placing the window compares each with each).
_MAX_MATCHES = 256
#: Punctuation that a cut window does not start with (the end of the sentence before it).
_LEADING_PUNCTUATION = "，。、；：！？）》」,.;:!?) "


def score_label(mode: str, reranked: bool = False) -> str:
    """The name of a score: ``cosine`` (dense), ``BM25`` (sparse), ``fused`` (hybrid), ``rerank`` (reranked)."""
    return "rerank" if reranked else _MODE_LABELS.get(mode, mode)


def _fold(text: str) -> str:
    """``text`` NFKC-folded and lower-cased character by character, keeping its length (offsets stay valid)."""
    out = []
    for char in text:
        folded = unicodedata.normalize("NFKC", char).lower()
        out.append(folded if len(folded) == 1 else char.lower()[:1] or char)
    return "".join(out)


def _matches(folded: str, terms: list[str]) -> list[tuple[int, int, str]]:
    """``(start, end, term)`` of the terms' occurrences in ``folded`` (at most :data:`_MAX_OCCURRENCES` each)."""
    found = []
    for term in terms:
        start = folded.find(term)
        for _ in range(_MAX_OCCURRENCES):
            if start < 0:
                break
            found.append((start, start + len(term), term))
            start = folded.find(term, start + 1)
    return sorted(found)


def _columns(text: str) -> list[int]:
    """Terminal columns before each character of ``text`` (and after the last): wide CJK characters take two."""
    columns = [0]
    for char in text:
        columns.append(columns[-1] + (2 if unicodedata.east_asian_width(char) in ("W", "F") else 1))
    return columns


def _window(columns: list[int], centre: int, width: int) -> tuple[int, int]:
    """Characters ``[start, end)`` of a window ``width`` columns wide, centred on character ``centre``."""
    left = max(0, min(columns[centre] - width // 2, columns[-1] - width))
    start = bisect.bisect_left(columns, left)
    return start, bisect.bisect_right(columns, columns[start] + width) - 1


def _snap(flat: str, start: int, end: int) -> tuple[int, int]:
    """Move a cut that splits a Latin word to the nearest space inside the window (up to 12 characters)."""
    def inside_word(i: int) -> bool:
        return 0 < i < len(flat) and flat[i - 1].isascii() and flat[i - 1].isalnum() and flat[i].isalnum()

    if inside_word(start):
        space = flat.find(" ", start, start + 12)
        start = space + 1 if space >= 0 else start
    if inside_word(end):
        space = flat.rfind(" ", end - 12, end)
        end = space if space > start else end
    return start, end


def snippet(text: str, query: str, width: int = 160) -> str:
    """``text`` on one line, cut to about ``width`` terminal columns around the query's words.

    Columns, not characters: a Chinese character takes two, so a window of Chinese shows half as many.

    The window is centred on a matched query term: of the terms' occurrences, the one whose window holds the
    most distinct query terms; among equals, the term that comes first in the query (a question's own word,
    "tall", before the topic words every chunk of the document repeats), then the earliest. A text with no
    query term in it (a dense hit) shows its beginning. ``…`` marks each side that was cut; a cut inside an
    English word moves to a space.
    """
    flat = " ".join(text.split())
    columns = _columns(flat)
    if columns[-1] <= width:
        return flat
    try:
        terms = list(dict.fromkeys(t for t in tokenize_for_bm25(query) if t))  # in query order
    except InputError:  # a query the tokenizer refuses still gets the text's beginning
        terms = []
    order = {term: n for n, term in enumerate(terms)}
    matches = _matches(_fold(flat), terms)[:_MAX_MATCHES]
    best: tuple[int, int, int] | None = None  # (distinct terms held, -query order, -start): highest wins
    centre = 0
    for start, end, term in matches:
        lo, hi = _window(columns, (start + end) // 2, width)
        key = (len({t for s, e, t in matches if s >= lo and e <= hi}), -order[term], -start)
        if best is None or key > best:
            best, centre = key, (start + end) // 2
    lo, hi = _snap(flat, *_window(columns, centre, width))
    body = flat[lo:hi].strip()
    if lo > 0:
        body = body.lstrip(_LEADING_PUNCTUATION)  # "…。 Photosynthesis" reads as "…Photosynthesis"
    return ("…" if lo > 0 else "") + body + ("…" if hi < len(flat) else "")
