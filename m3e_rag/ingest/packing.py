"""Where chunks begin and end: sentences packed greedily into the token budget, with overlap.

Given a window's text and its :class:`~m3e_rag.ingest.tokens._TokenIndex`, :class:`SpanPacker`
plans the chunk spans: sentences (and pieces of over-long ones, cut at clause marks, then between
tokens) become atoms; a paragraph that fits stays one group; groups are packed up to ``max_tokens``
and each new chunk starts with whole trailing sentences of the previous one within
``overlap_tokens``. :meth:`SpanPacker._finalize` then trims each span, takes its own token count
and cuts again any span over budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from m3e_rag.ingest.sentences import _NO_START, _clause_cuts, _in_run, _in_word, _sentence_starts
from m3e_rag.ingest.tokens import TokenizerPass, _TokenIndex


@dataclass(frozen=True)
class _Atom:
    """A smallest packing unit: a whole sentence or a piece of an over-long sentence."""

    start: int
    end: int
    whole: bool


class SpanPacker(TokenizerPass):
    """Plan chunk spans in a window: atoms, groups, greedy packing, overlap, re-cuts over budget.

    A base of :class:`~m3e_rag.ingest.chunking.Chunker`, which sets the budget attributes.
    """

    max_tokens: int
    overlap_tokens: int

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
