"""The text a context can be cut from: each source's stored chunks joined into stretches, cut into units.

Chunks of one source are exact slices of its document (``text == document[start:end]``, see
:class:`~m3e_rag.types.Chunk`), consecutive chunks overlap by a few sentences or are separated by
whitespace only. :func:`build_segments` joins the chunks it is given (the hits and their fetched
neighbours) into :class:`Segment` s: maximal stretches of the document known without a gap, each
rebuilt from the chunks' own texts at their offsets, so no character is ever repeated. Where two
chunks claim different text for the same offsets (a source re-ingested between two reads, or
metadata that lies) the later one is set aside, never silently blended.

A segment is cut into **units** at sentence starts (the chunker's own rules, passed in by the
caller because ``retrieve`` does not import ``ingest``) and at every chunk edge; a unit is
whitespace-trimmed, so two consecutive units are separated by whitespace only. A context piece is
always a run of consecutive units: the smallest things it is trimmed or widened by.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from m3e_rag.types import RetrievedChunk

__all__ = ["KnownChunk", "Segment", "SentenceStarts", "build_segments", "known_chunk"]

#: ``sentence_starts(text) -> offsets`` of the sentences of ``text`` (0 first).
SentenceStarts = Callable[[str], Sequence[int]]


@dataclass(frozen=True)
class KnownChunk:
    """A stored chunk whose span is usable: its text is exactly ``end - start`` characters long."""

    id: str
    source: str
    start: int
    end: int
    text: str


def known_chunk(record: RetrievedChunk) -> KnownChunk | None:
    """The record as a :class:`KnownChunk`, or None when it has no usable span.

    Usable: a string ``source``, integer ``start`` < ``end`` with ``start >= 0``, and a text of exactly
    ``end - start`` characters (anything else cannot be placed in its document without guessing).
    """
    meta = record.metadata
    source, start, end = meta.get("source"), meta.get("start"), meta.get("end")
    if not isinstance(source, str) or not source:
        return None
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        return None
    if not 0 <= start < end or len(record.text) != end - start:
        return None
    return KnownChunk(record.id, source, start, end, record.text)


@dataclass
class Segment:
    """A stretch ``[start, end)`` of one source's document known from its chunks, and its units.

    Attributes:
        source: the source.
        start: offset of ``text`` in the document.
        text: the document's text over the stretch.
        chunks: the chunks it was built from, by start offset.
        units: ``(start, end)`` of each unit (absolute offsets), in order; filled by :meth:`cut`.
    """

    source: str
    start: int
    text: str
    chunks: list[KnownChunk] = field(default_factory=list)
    units: list[tuple[int, int]] = field(default_factory=list)

    @property
    def end(self) -> int:
        """Offset one past the stretch's last character."""
        return self.start + len(self.text)

    def slice(self, start: int, end: int) -> str:
        """The document's text over ``[start, end)`` (absolute offsets inside the stretch)."""
        return self.text[start - self.start : end - self.start]

    def cut(self, sentence_starts: SentenceStarts | None) -> None:
        """Cut the stretch into whitespace-trimmed units at sentence starts and chunk edges."""
        cuts = {0, len(self.text)}
        for chunk in self.chunks:
            cuts.update((chunk.start - self.start, chunk.end - self.start))
        if sentence_starts is not None:
            cuts.update(int(c) for c in sentence_starts(self.text) if 0 < int(c) < len(self.text))
        edges = sorted(cuts)
        units: list[tuple[int, int]] = []
        for a, b in zip(edges, edges[1:], strict=False):
            piece = self.text[a:b]
            stripped = piece.strip()
            if stripped:
                lead = len(piece) - len(piece.lstrip())
                units.append((self.start + a + lead, self.start + a + lead + len(stripped)))
        self.units = units

    def unit_range(self, start: int, end: int) -> tuple[int, int] | None:
        """Indices ``(i, j)`` of the first and last unit inside ``[start, end)`` (a chunk's span); None if none is."""
        i = bisect_left(self.units, (start, start))
        if i >= len(self.units) or self.units[i][1] > end:
            return None  # a chunk of whitespace only
        j = i
        while j + 1 < len(self.units) and self.units[j + 1][1] <= end:
            j += 1
        return i, j


def _agrees(segment: Segment, chunk: KnownChunk) -> bool:
    """Whether ``chunk`` (starting inside or right at the end of ``segment``) matches its text on the overlap."""
    overlap_end = min(segment.end, chunk.end)
    return segment.slice(chunk.start, overlap_end) == chunk.text[: overlap_end - chunk.start]


def build_segments(chunks: Iterable[KnownChunk]) -> tuple[dict[str, list[Segment]], list[KnownChunk]]:
    """Join chunks into segments per source (overlapping or touching chunks form one segment).

    Returns:
        The segments of each source in document order, and the chunks set aside because their text
        disagrees with the chunks before them on the same offsets.
    """
    by_source: dict[str, list[Segment]] = {}
    conflicts: list[KnownChunk] = []
    seen: set[str] = set()
    for chunk in sorted(chunks, key=lambda c: (c.source, c.start, -c.end, c.id)):
        if chunk.id in seen:
            continue
        seen.add(chunk.id)
        segments = by_source.setdefault(chunk.source, [])
        last = segments[-1] if segments else None
        if last is None or chunk.start > last.end:
            segments.append(Segment(chunk.source, chunk.start, chunk.text, [chunk]))
            continue
        if not _agrees(last, chunk):
            conflicts.append(chunk)
            continue
        if chunk.end > last.end:
            last.text += chunk.text[last.end - chunk.start :]
        last.chunks.append(chunk)
    return by_source, conflicts
