"""Fitting ranked hits into a token budget: merge them, trim around the answer, widen with what is left.

:class:`Assembler` works on the :class:`~m3e_rag.retrieve.context_spans.Segment` s of the hits'
sources, in two passes:

1. **Place** the hits, best first. Hits of one source whose chunks overlap or touch (or are
   separated by whitespace only) are one candidate, its text the union of their spans. A candidate
   that fits what is left of the budget (and ``max_piece_tokens``) is taken whole; one that does not
   is **trimmed** to the run of units around its focus unit that fits: of the units that fit, the one
   the scorer puts closest to the query (its terms, or its embedding: the caller's choice), sought in its
   best-ranked hit first (nearest that hit's start on a tie), grown one unit at a time toward the side
   closer to the query (balanced on a tie). The scorer sees the candidate's units in one call, and only
   when some unit fits. A candidate none of whose units fits is left out; smaller ones after it may still fit.
2. **Widen** (optional): the tokens left are spent growing the pieces into the text around them
   (their own chunks first trimmed away, then the neighbouring chunks fetched for them), one unit per
   piece per round, best piece first, so every hit gains context before any gains much (toward the side
   the widening scorer, a cheap one, prefers). A piece that
   grows up to another piece of its source merges with it.

Every count is exact: a piece's tokens are the counter applied to its whole text, recounted at each
step (tokenizers are not additive across a cut), and the sum never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from m3e_rag.errors import InputError
from m3e_rag.retrieve.context_spans import Segment

__all__ = ["Assembler", "Hit", "Piece", "TokenCounter", "UnitScorer"]

#: ``count_tokens(text) -> int``: the budget's unit.
TokenCounter = Callable[[str], int]
#: ``score(texts) -> scores``: how close each unit is to the query (higher is closer), one score per text.
#: Batched because a scorer may run the embedding model: one call scores every unit a decision needs.
UnitScorer = Callable[[Sequence[str]], Sequence[float]]

_BEFORE, _AFTER = 0, 1
_PLACE, _WIDEN = 0, 1  # which scorer: the trimming one, the widening one


@dataclass(frozen=True)
class Hit:
    """A ranked hit placed in a segment: its rank (0 best), score and unit range."""

    rank: int
    score: float
    segment: Segment
    i: int
    j: int


@dataclass(eq=False)
class Piece:
    """A run of units ``i..j`` of one segment, and what it costs."""

    segment: Segment
    i: int
    j: int
    rank: int
    tokens: int
    grown: tuple[int, int] = (0, 0)
    blocked: tuple[bool, bool] = (False, False)

    @property
    def start(self) -> int:
        """Absolute offset of its first character."""
        return self.segment.units[self.i][0]

    @property
    def end(self) -> int:
        """Absolute offset one past its last character."""
        return self.segment.units[self.j][1]

    @property
    def text(self) -> str:
        """Its text, exactly the document's ``[start, end)``."""
        return self.segment.slice(self.start, self.end)


class Assembler:
    """Places hits into pieces within ``budget`` tokens, then optionally widens them (see the module doc).

    Args:
        count_tokens: the counter the budget is in.
        budget: the most tokens the pieces may hold together.
        scorer: how close a unit is to the query, for trimming (the focus and the way a trimmed piece grows);
            None when there is no query. It is called once per trimmed candidate, on that candidate's units.
        max_piece_tokens: the most tokens a piece may take in the placing pass (None: no cap); widening
            may grow it further with the tokens left after every hit was placed.
        widen_scorer: how close a unit is to the query, for the side widening grows toward (None: both sides
            in turn); a cheap one, because widening asks about one or two units at a time.
    """

    def __init__(
        self, count_tokens: TokenCounter, budget: int, scorer: UnitScorer | None, max_piece_tokens: int | None,
        widen_scorer: UnitScorer | None = None,
    ) -> None:
        self._count_tokens = count_tokens
        self.budget = budget
        self._scorers = (scorer, widen_scorer)
        self._cap = max_piece_tokens
        self._counts: dict[tuple[int, int, int], int] = {}
        self._scores: tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]] = ({}, {})
        self.used = 0
        self.pieces: list[Piece] = []

    def count(self, segment: Segment, i: int, j: int) -> int:
        """Tokens of units ``i..j`` of ``segment`` (cached), checked to be a count."""
        key = (id(segment), i, j)
        if key not in self._counts:
            text = segment.slice(segment.units[i][0], segment.units[j][1])
            n = self._count_tokens(text)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InputError(
                    f"count_tokens must return a non-negative int for a text, got {n!r}; pass a function "
                    "str -> int such as lambda t: len(tokenizer.encode(t, add_special_tokens=False))."
                )
            self._counts[key] = n
        return self._counts[key]

    def _scored(self, segment: Segment, units: Sequence[int], which: int = _PLACE) -> list[float]:
        """Scores of ``units`` of ``segment`` by the placing or widening scorer (cached; the uncached in one call).

        Zeros without a scorer.
        """
        scorer, cache = self._scorers[which], self._scores[which]
        if scorer is None:
            return [0.0] * len(units)
        todo = [u for u in dict.fromkeys(units) if (id(segment), u) not in cache]
        if todo:
            scores = list(scorer([segment.slice(*segment.units[u]) for u in todo]))
            if len(scores) != len(todo):
                raise InputError(f"a unit scorer must return one score per text: {len(scores)} for {len(todo)}.")
            cache.update(((id(segment), u), float(v)) for u, v in zip(todo, scores, strict=True))
        return [cache[(id(segment), u)] for u in units]

    def place(self, segment: Segment, i0: int, j0: int, rank: int, best: tuple[int, int]) -> bool:
        """Place the candidate of units ``i0..j0`` (whole, else trimmed around its focus); False if left out.

        ``best`` is the unit range of its best-ranked hit: the focus is sought there first (a candidate merged
        from several hits must not be trimmed to a weaker hit's sentence), then in the rest of the candidate.
        """
        room = self.budget - self.used if self._cap is None else min(self.budget - self.used, self._cap)
        whole = self.count(segment, i0, j0)
        if whole <= room:
            self._add(Piece(segment, i0, j0, rank, whole))
            return True
        # The focus: the unit closest to the query (nearest the best hit's start on a tie) among those that fit,
        # in the best hit first. Nothing is scored unless some unit fits; then the candidate's units are scored
        # in one call (the growth below compares them), so a scorer that runs a model runs once per candidate.
        fits = [u for u in range(i0, j0 + 1) if self.count(segment, u, u) <= room]
        if not fits:
            return False
        scores = dict(zip(range(i0, j0 + 1), self._scored(segment, range(i0, j0 + 1)), strict=True))
        inside = [u for u in fits if best[0] <= u <= best[1]] or fits
        focus = min(inside, key=lambda u: (-scores[u], abs(u - best[0]), u))
        piece = Piece(segment, focus, focus, rank, self.count(segment, focus, focus))
        self._add(piece)
        while self._step(piece, i0, j0, self._cap, _PLACE):
            pass
        piece.blocked, piece.grown = (False, False), (0, 0)  # widening starts afresh
        return True

    def widen(self) -> None:
        """Spend the tokens left growing the pieces, one unit each per round, best piece first."""
        active = sorted(self.pieces, key=lambda p: p.rank)
        while active:
            active = [p for p in active
                      if p in self.pieces and self._step(p, 0, len(p.segment.units) - 1, None, _WIDEN)]

    def _add(self, piece: Piece) -> None:
        self.pieces.append(piece)
        self.used += piece.tokens

    def _sides(self, piece: Piece, lo: int, hi: int, which: int) -> list[int]:
        """The sides ``piece`` may still grow on, preferred first."""
        sides = []
        if piece.i > lo and not piece.blocked[_BEFORE]:
            sides.append(_BEFORE)
        if piece.j < hi and not piece.blocked[_AFTER]:
            sides.append(_AFTER)
        if len(sides) == 2:
            seg = piece.segment
            before, after = self._scored(seg, [piece.i - 1, piece.j + 1], which)
            if before > after or (before == after and piece.grown[_BEFORE] < piece.grown[_AFTER]):
                return [_BEFORE, _AFTER]
            return [_AFTER, _BEFORE]
        return sides

    def _step(self, piece: Piece, lo: int, hi: int, cap: int | None, which: int) -> bool:
        """Grow ``piece`` by one unit within units ``lo..hi`` and ``cap`` tokens (merging a piece it comes to touch).

        False when it can grow on neither side.
        """
        for side in self._sides(piece, lo, hi, which):
            i, j = (piece.i - 1, piece.j) if side == _BEFORE else (piece.i, piece.j + 1)
            other = self._touching(piece, i, j)
            if other is not None:
                i, j = min(i, other.i), max(j, other.j)
            n = self.count(piece.segment, i, j)
            freed = piece.tokens + (other.tokens if other is not None else 0)
            if (cap is None or n <= cap) and self.used - freed + n <= self.budget:
                if other is not None:
                    self.pieces.remove(other)
                    piece.rank = min(piece.rank, other.rank)
                self.used += n - freed
                piece.i, piece.j, piece.tokens = i, j, n
                grown = list(piece.grown)
                grown[side] += 1
                piece.grown = (grown[0], grown[1])
                return True
            blocked = list(piece.blocked)
            blocked[side] = True
            piece.blocked = (blocked[0], blocked[1])
        return False

    def _touching(self, piece: Piece, i: int, j: int) -> Piece | None:
        """Another piece of the segment that units ``i..j`` would overlap or sit right next to."""
        for other in self.pieces:
            if other is not piece and other.segment is piece.segment and other.i <= j + 1 and other.j >= i - 1:
                return other
        return None
