"""Turns at the model worker: which waiting requests' texts make up the next batch.

A batch holds at most ``max_batch_texts`` texts. A request larger than that is served over several
batches, and every batch is shared among *all* the requests waiting: each gets an equal share
(water-filling: a request that needs less than its share leaves the rest to the others, see
:func:`water_fill`), and a request that was served goes to the back of the line. So a one-text
request that arrives behind two 2,048-text requests rides in the very next batch instead of waiting
for 4,096 texts, and a large request still fills every batch when it is alone. When more requests wait
than a batch holds texts (the share rounds to zero), the batch's texts go first to the requests served
least so far, so a newcomer still rides the next batch.

Each request hands out its texts longest first (:attr:`Job.order`): when every waiting request gives
its share, the shares of one batch are of like length, so the encoder pads little even though each
request's texts vary (32 requests of 32 short texts with batches of 64: each batch takes every request's
two longest, then the next two, ...; results go back in input order).

A request's work is handed out slice by slice (:class:`Slice`), so the work of a request whose
future was cancelled (its client went away) stops at the next batch boundary: its untaken texts
leave the line (:meth:`FairQueue.remove`). Calls (a reranker's ``predict``) take a turn of their own:
a call at the front of the line runs alone, between two batches.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["FairQueue", "Job", "Kind", "Slice", "water_fill"]

Kind = Literal["document", "query"]


@dataclass(eq=False)
class Job:
    """One request waiting for the worker: its texts (or one call), what was handed out and what came back.

    The future stays pending while the request's slices run (it is resolved when the last one is
    done), so cancelling it works at any time and drops the texts not yet handed out.
    """

    future: Future[Any]
    kind: Kind | Literal["call"]
    texts: list[str] = field(default_factory=list)
    call: Callable[[], Any] | None = None
    queued_at: float = field(default_factory=time.monotonic)
    #: Texts handed to the worker so far (a call counts as one).
    taken: int = 0
    #: Vectors of the slices done, in order, and each text's token count (window-capped).
    parts: list[np.ndarray] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    #: Inputs longer than the window (for the warning): how many, and the first as (index, tokens).
    over: int = 0
    first_over: tuple[int, int] | None = None
    #: The order texts are handed out in: longest first (by characters, a proxy for tokens), so that when
    #: every request gives its share of a batch, the batch holds texts of like length (less padding).
    order: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        texts = self.texts
        self.order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # stable: ties keep input order

    @property
    def size(self) -> int:
        """Units of work: the number of texts, or 1 for a call."""
        return 1 if self.kind == "call" else len(self.texts)

    @property
    def left(self) -> int:
        """Units not yet handed to the worker."""
        return self.size - self.taken

    @property
    def done(self) -> int:
        """Texts whose vectors came back."""
        return len(self.tokens)


@dataclass(frozen=True)
class Slice:
    """Texts ``start:end`` of one job, handed to the worker in one batch."""

    job: Job
    start: int
    end: int

    @property
    def indices(self) -> list[int]:
        """The input indices of the slice's texts (the job hands its texts out longest first)."""
        return self.job.order[self.start : self.end]

    @property
    def texts(self) -> list[str]:
        """The slice's texts."""
        return [self.job.texts[i] for i in self.indices]

    def __len__(self) -> int:
        return self.end - self.start


def water_fill(needs: Sequence[int], capacity: int, served: Sequence[int] | None = None) -> list[int]:
    """Split ``capacity`` among ``needs`` in equal shares; a need below its share leaves the rest to the others.

    The remainder of the division goes one each to the least ``served`` so far (texts already handed out), then
    to the first in line (``needs`` is in line order). When more requests wait than a batch holds, the share is
    zero and the remainder is all there is: a request that just arrived (served 0) then rides the next batch
    instead of waiting at the back of the line for the requests already being served to take their turns.
    Example: ``water_fill([12, 1], 4) == [3, 1]``; ``water_fill([10] * 6, 4) == [1, 1, 1, 1, 0, 0]``;
    ``water_fill([10, 10, 1], 2, served=[5, 5, 0]) == [1, 0, 1]``.
    """
    shares = list(needs)
    if sum(needs) <= capacity:
        return shares
    left = capacity
    order = sorted(range(len(needs)), key=needs.__getitem__)
    for rank, i in enumerate(order):
        rest = len(needs) - rank
        if needs[i] * rest <= left:  # below the level: served whole
            left -= needs[i]
            continue
        level = left // rest
        capped = sorted(order[rank:])  # line order
        for j in capped:
            shares[j] = level
        if served is not None:
            capped.sort(key=served.__getitem__)  # stable: line order among the equally served
        for j in capped[: left - level * rest]:
            shares[j] += 1  # each capped need is above the level, so one more still fits it
        break
    return shares


class FairQueue:
    """The line of waiting jobs and the turn-taking of :func:`water_fill` (not thread-safe: the batcher locks).

    Attributes:
        texts: units waiting (texts not yet handed out; a call counts as one).
        purged: units of cancelled jobs dropped by :meth:`take` (the batcher reports and resets it).
    """

    def __init__(self) -> None:
        self._line: deque[Job] = deque()
        self.texts = 0
        self.purged = 0

    def __bool__(self) -> bool:
        return bool(self._line)

    def __len__(self) -> int:
        return len(self._line)

    @property
    def head(self) -> Job:
        """The job at the front of the line."""
        return self._line[0]

    def add(self, job: Job) -> None:
        """Put a job at the back of the line."""
        self._line.append(job)
        self.texts += job.left

    def remove(self, job: Job) -> int:
        """Take a job out of the line; returns the units it still had waiting (0 if it was not in line)."""
        try:
            self._line.remove(job)
        except ValueError:
            return 0
        left = job.left
        self.texts -= left
        return left

    def take(self, max_texts: int) -> list[Slice]:
        """The next batch: a call at the front alone, else a water-filled share of every waiting text job.

        Jobs served go to the back of the line (in their order) unless they are finished; jobs not
        served this time move up. Cancelled jobs are dropped (counted in :attr:`purged`).
        """
        for job in [j for j in self._line if j.future.cancelled()]:
            self.purged += self.remove(job)
        if not self._line:
            return []
        head = self._line[0]
        if head.kind == "call":
            self.remove(head)
            head.taken = 1
            return [Slice(head, 0, 1)]
        waiting = [j for j in self._line if j.kind != "call"]
        slices: list[Slice] = []
        shares = water_fill([j.left for j in waiting], max_texts, served=[j.taken for j in waiting])
        for job, share in zip(waiting, shares, strict=True):
            if share:
                slices.append(Slice(job, job.taken, job.taken + share))
                job.taken += share
                self.texts -= share
        served = {id(s.job) for s in slices}
        self._line = deque([j for j in self._line if id(j) not in served]
                           + [s.job for s in slices if s.job.left])
        return slices
