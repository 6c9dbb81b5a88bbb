"""The ``m3e-rag ingest`` progress bar on a terminal: a total known up front, a rate and an ETA.

An ingest streams, so the library knows its total only at the end, and reports progress once per committed
step of up to 256 chunks: a small folder (129 chunks, 80-115 s on a loaded CPU) showed ``ingest: 0chunk`` the
whole time. Here:

- the total comes first from a stat-only walk of the same files (count and bytes, shown in the bar's title) and a
  chunk estimate from the bytes (:func:`estimate_chunks`), then from the library's own estimate after each step
  (scaled by the share of input consumed), and is exact at the end;
- the count moves per batch of embedded texts, not per step: :class:`CountingEncoder` reports each batch.

Only a terminal gets a bar: the ingest command loads this module only then (``--json`` and piped output are
unchanged). :class:`StageBars` is the simpler bar of commands that report ``(stage, done, total)`` (eval, adopt).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.encode.encoder import M3EEncoder

__all__ = ["BYTES_PER_TOKEN", "CountingEncoder", "IngestBar", "StageBars", "estimate_chunks", "walk_totals"]

#: Input bytes per model token assumed for the first estimate: a Chinese character is one M3E token and 3 bytes
#: in UTF-8 (2 in GBK); English averages 3-5 characters per WordPiece token. Replaced by the library's estimate
#: (from what was actually read) after the first step.
BYTES_PER_TOKEN = 3


def walk_totals(
    paths: Sequence[str], include: list[str] | None, exclude: list[str] | None, follow_symlinks: bool,
    max_file_bytes: int | None,
) -> tuple[int, list[int]]:
    """``(files, sizes)`` of what an ingest of ``paths`` will read: a stat-only walk with the ingest's own rules.

    Files over ``max_file_bytes`` count as files (they are reported) but have no size listed (they are not read).
    """
    from m3e_rag.ingest.loaders.walk import iter_files

    files = 0
    sizes = []
    for file, _ in iter_files([Path(p).expanduser() for p in paths], include, exclude, follow_symlinks, []):
        files += 1
        try:
            st = os.stat(file)
        except OSError:
            continue
        if max_file_bytes is None or st.st_size <= max_file_bytes:
            sizes.append(st.st_size)
    return files, sizes


def estimate_chunks(sizes: Sequence[int], chunk_tokens: int, overlap_tokens: int) -> int:
    """Chunks that files of these ``sizes`` will likely make (at least 1).

    Each chunk adds ``chunk_tokens - overlap_tokens`` new tokens of :data:`BYTES_PER_TOKEN` bytes, and a file's
    last chunk is a whole one however little it holds (a folder of small files makes a chunk per file).
    """
    per_chunk = BYTES_PER_TOKEN * max(1, chunk_tokens - overlap_tokens)
    return max(1, sum(math.ceil(size / per_chunk) for size in sizes))


def _size(n: int) -> str:
    """``n`` bytes for a person: 812 B, 4.5 KB, 1.2 MB, 3.0 GB (units of 1024, as ``--max-file-size``)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class CountingEncoder(M3EEncoder):
    """An :class:`M3EEncoder` that embeds documents one batch at a time and calls ``on_embedded(n)`` after each.

    The same batches the encoder would run (``batch_size`` texts each), so the vectors are the same; only the
    length-sorting of a whole step's texts into batches is given up, a small cost next to a bar that moves.
    """

    on_embedded: Callable[[int], None] | None = None

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as :meth:`M3EEncoder.encode_documents` does, reporting each batch done."""
        if self.on_embedded is None or len(texts) <= self.batch_size:
            vectors = super().encode_documents(texts)
            if self.on_embedded is not None:
                self.on_embedded(len(texts))
            return vectors
        parts = []
        for start in range(0, len(texts), self.batch_size):
            piece = texts[start:start + self.batch_size]
            parts.append(super().encode_documents(piece))
            self.on_embedded(len(piece))
        return np.concatenate(parts)


class IngestBar:
    """A tqdm bar over chunks: the title says the files and bytes walked; total, rate and ETA in chunks.

    Args:
        files, size: what :func:`walk_totals` found.
        estimate: the first chunk total (:func:`estimate_chunks`).
        stream: where the bar draws (the terminal's stderr).
    """

    def __init__(self, files: int, size: int, estimate: int, stream: Any = None) -> None:
        from tqdm import tqdm

        self.committed = 0  # chunks in committed steps (the library's count)
        self.bar = tqdm(
            total=estimate, unit="chunk", desc=f"ingest {files} file{'s' if files != 1 else ''}, {_size(size)}",
            file=stream or sys.stderr, dynamic_ncols=True, miniters=1,
        )

    def _move_to(self, n: int) -> None:
        if n > self.bar.total:
            self.bar.total = n
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)  # update(), not n=: tqdm's rate and ETA come from updates

    def embedded(self, count: int) -> None:
        """``count`` more texts were embedded in the step being built."""
        self._move_to(self.bar.n + count)

    def step(self, done: int, total: int) -> None:
        """The library's progress: ``done`` chunks committed, ``total`` its estimate (exact at the end)."""
        self.committed = done
        if total >= done:
            self.bar.total = max(total, self.bar.n)
        self._move_to(done)
        self.bar.refresh()

    def close(self) -> None:
        """Draw the last state and leave the bar on the terminal."""
        self.bar.close()


class StageBars:
    """``progress(stage, done, total)`` for a command in stages: one tqdm bar per stage on a terminal, log lines always.

    Each stage's bar replaces the previous one's (closed first); every call is also an INFO line of the
    ``m3e_rag.cli`` logger (``<command> <stage>: done/total``), so piped runs keep a record.

    Args:
        command: the name the log lines start with.
        labels: per stage, the bar's title and unit (default: the stage's name and ``unit``).
        unit: the unit of stages not in ``labels``.
        leave: keep each finished bar on the terminal.
    """

    def __init__(self, command: str, labels: Mapping[str, tuple[str, str]] | None = None, unit: str = "item",
                 leave: bool = False) -> None:
        self.command = command
        self.labels = dict(labels or {})
        self.unit = unit
        self.leave = leave
        self._stage: str | None = None
        self._bar: Any = None
        self._log = logging.getLogger("m3e_rag.cli")

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` in ``stage``."""
        self._log.info("%s %s: %d/%d", self.command, stage, done, total)
        if not sys.stderr.isatty():
            return
        if self._bar is None or stage != self._stage:
            from tqdm import tqdm

            self.close()
            desc, unit = self.labels.get(stage, (stage, self.unit))
            self._stage = stage
            self._bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=self.leave)
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Close the bar shown (if any); a later call starts a new one."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None
