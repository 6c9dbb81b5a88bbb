"""Dynamic batching: concurrent requests share forward passes, run by one model worker thread.

Requests put their texts on a bounded queue and get a :class:`concurrent.futures.Future` back (the
event loop awaits it through :func:`asyncio.wrap_future`, so the model never runs on the loop).
One worker thread takes whole requests from the queue, up to ``max_batch_texts`` texts, counts
their tokens once (for ``usage`` and the window check, attributed to each request's own input
index), and hands the texts of every request taken to the encoder in one call: the encoder sorts
them by token length and cuts token-budgeted forward passes, so short texts of many requests
share a pass with little padding.

Waiting: an idle worker that finds work waits up to ``max_wait_s`` for more, but only while some
request is still *arriving* (announced by the HTTP layer, not yet queued); when every request in
flight is already queued it starts at once, so a lone request pays no batching delay. Under load
the queue fills while the worker computes, and the next batch is simply everything waiting.

Cancelling a request's future (a client that disconnected) removes its texts from the queue if the
worker has not taken them yet. Other work (a reranker's ``predict``) runs on the same worker via
:meth:`Batcher.submit_call`, so two models never compete for the same cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from m3e_rag.errors import InputError, InputTooLongError, M3ERagError

__all__ = ["Batcher", "EmbedResult", "QueueFullError", "BatcherClosedError", "Kind"]

logger = logging.getLogger(__name__)

Kind = Literal["document", "query"]


class QueueFullError(M3ERagError):
    """The queue holds ``max_queue_texts`` texts already: retry shortly (the HTTP layer answers 503)."""


class BatcherClosedError(M3ERagError):
    """The service is shutting down and takes no new work."""


@dataclass(frozen=True)
class EmbedResult:
    """Vectors of one request's texts, in order, and the tokens the model read for each."""

    vectors: np.ndarray
    tokens: list[int]


class BatchObserver(Protocol):
    """What the batcher reports (implemented by :class:`m3e_rag.serve.metrics.ServeMetrics`)."""

    def batch_done(self, texts: int, requests: int, seconds: float) -> None:
        """One coalesced batch was encoded."""
        ...

    def queue_depth(self, texts: int) -> None:
        """Texts now waiting in the queue."""
        ...

    def cancelled(self, texts: int) -> None:
        """Texts dropped from the queue because their request was cancelled."""
        ...


@dataclass(eq=False)
class _Job:
    future: Future[Any]
    kind: Kind | Literal["call"]
    texts: list[str] = field(default_factory=list)
    call: Callable[[], Any] | None = None
    queued_at: float = field(default_factory=time.monotonic)


EmbedFn = Callable[[list[str], Kind], np.ndarray]
CountFn = Callable[[list[str], Kind], list[int]]


class Batcher:
    """A bounded queue and one worker thread that encodes coalesced batches.

    Args:
        embed: ``embed(texts, kind)`` returns the (len(texts), dim) float32 vectors (the encoder,
            set to truncate silently: the window policy is applied here, per request).
        count: ``count(texts, kind)`` returns each text's token count as the model reads it.
        window: the model's token window.
        on_overflow: ``truncate``, ``warn`` or ``error`` for texts longer than ``window``.
        max_batch_texts: most texts taken from the queue at once (a larger request is taken whole).
        max_wait_s: longest wait for arriving requests before a batch starts.
        max_queue_texts: most texts waiting; :meth:`submit_texts` raises QueueFullError above it.
        observer: receives batch sizes, queue depth and cancellations (metrics).
    """

    def __init__(
        self,
        embed: EmbedFn,
        count: CountFn,
        *,
        window: int,
        on_overflow: str = "warn",
        max_batch_texts: int = 64,
        max_wait_s: float = 0.003,
        max_queue_texts: int = 4096,
        observer: BatchObserver | None = None,
    ) -> None:
        self._embed = embed
        self._count = count
        self._window = window
        self._on_overflow = on_overflow
        self._max_batch = max_batch_texts
        self._max_wait = max_wait_s
        self._max_queue = max_queue_texts
        self._observer = observer
        self._queue: deque[_Job] = deque()
        self._queued_texts = 0
        self._arriving = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="m3e-rag-model-worker", daemon=True)
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Batcher:
        """Start the worker thread (idempotent). Returns self."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, finish everything queued, and stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout)

    @property
    def queued_texts(self) -> int:
        """Texts waiting for the worker."""
        return self._queued_texts

    # ------------------------------------------------------------- arrivals
    def announce(self) -> None:
        """A request that will submit texts has arrived (the worker may wait a little for it)."""
        with self._cond:
            self._arriving += 1

    def withdraw(self) -> None:
        """An announced request will not submit after all (refused, failed or finished)."""
        with self._cond:
            self._arriving = max(0, self._arriving - 1)
            self._cond.notify_all()

    # ----------------------------------------------------------------- submit
    def submit_texts(
        self, texts: Sequence[str], kind: Kind = "document", *, block: bool = False, announced: bool = False
    ) -> Future[EmbedResult]:
        """Queue one request's texts; the future resolves to an :class:`EmbedResult`.

        Args:
            texts: non-empty strings (checked: an empty or non-string item raises InputError at once).
            kind: ``document`` (the model's passage prompt) or ``query`` (its query prompt).
            block: wait for room instead of raising QueueFullError (for ingest, which must not fail).
            announced: the caller announced itself with :meth:`announce`; this submission ends that.
        """
        items = list(texts)
        if not items:
            raise InputError("No texts to embed; send at least one non-empty string.")
        for i, text in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"input[{i}] is empty or not a string; every input must be a non-empty string.")
        job = _Job(Future(), kind, texts=items)
        self._put(job, len(items), block=block, announced=announced)
        return job.future

    def submit_call(self, call: Callable[[], Any]) -> Future[Any]:
        """Run ``call()`` on the model worker (between batches); the future holds its result."""
        job = _Job(Future(), "call", call=call)
        self._put(job, 1, block=True, announced=False)
        return job.future

    def _put(self, job: _Job, size: int, *, block: bool, announced: bool) -> None:
        with self._cond:
            if announced:
                self._arriving = max(0, self._arriving - 1)
            if self._closing:
                raise BatcherClosedError("The service is shutting down; retry on another instance.")
            if self._queued_texts + size > self._max_queue and self._queue:
                if not block:
                    raise QueueFullError(
                        f"The queue holds {self._queued_texts} texts (limit {self._max_queue}); retry in a moment."
                    )
                while self._queued_texts + size > self._max_queue and self._queue and not self._closing:
                    self._cond.wait()
            self._queue.append(job)
            self._queued_texts += size
            depth = self._queued_texts
            self._cond.notify_all()
        job.future.add_done_callback(lambda fut: self._forget_if_cancelled(job, size))
        if self._observer is not None:
            self._observer.queue_depth(depth)

    def _forget_if_cancelled(self, job: _Job, size: int) -> None:
        if not job.future.cancelled():
            return
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # already taken by the worker
            self._queued_texts -= size
            depth = self._queued_texts
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.cancelled(size)
            self._observer.queue_depth(depth)

    # ----------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and everything queued is done
                deadline = self._queue[0].queued_at + self._max_wait
                while (
                    self._arriving > 0
                    and self._queued_texts < self._max_batch
                    and not self._closing
                    and self._queue[0].kind != "call"
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                jobs = self._take()
                depth = self._queued_texts
                self._cond.notify_all()  # room for blocked submitters
            if self._observer is not None:
                self._observer.queue_depth(depth)
            if jobs:
                self._process(jobs)

    def _take(self) -> list[_Job]:
        """Pop whole jobs: one call, or text jobs up to ``max_batch_texts`` texts (at least one job)."""
        taken: list[_Job] = []
        texts = 0
        while self._queue:
            job = self._queue[0]
            if job.kind == "call":
                if taken:
                    break
                self._queue.popleft()
                self._queued_texts -= 1
                taken.append(job)
                break
            if taken and texts + len(job.texts) > self._max_batch:
                break
            self._queue.popleft()
            self._queued_texts -= len(job.texts)
            texts += len(job.texts)
            taken.append(job)
        return [job for job in taken if job.future.set_running_or_notify_cancel()]

    def _process(self, jobs: list[_Job]) -> None:
        if jobs[0].kind == "call":
            job = jobs[0]
            try:
                assert job.call is not None
                job.future.set_result(job.call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                job.future.set_exception(exc)
            return
        started = time.perf_counter()
        kinds: tuple[Kind, ...] = ("document", "query")
        for kind in kinds:
            group = [job for job in jobs if job.kind == kind]
            if group:
                self._encode_group(group, kind)
        if self._observer is not None:
            self._observer.batch_done(sum(len(j.texts) for j in jobs), len(jobs), time.perf_counter() - started)

    def _encode_group(self, group: list[_Job], kind: Kind) -> None:
        texts = [text for job in group for text in job.texts]
        try:
            counts = self._count(texts, kind)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            for job in group:
                job.future.set_exception(exc)
            return
        kept: list[tuple[_Job, list[int]]] = []
        offset = 0
        for job in group:
            job_counts = counts[offset : offset + len(job.texts)]
            offset += len(job.texts)
            error = self._window_error(job_counts)
            if error is not None:
                job.future.set_exception(error)
            else:
                kept.append((job, job_counts))
        if not kept:
            return
        try:
            vectors = self._embed([text for job, _ in kept for text in job.texts], kind)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            for job, _ in kept:
                job.future.set_exception(exc)
            return
        offset = 0
        for job, job_counts in kept:
            n = len(job.texts)
            job.future.set_result(
                EmbedResult(vectors[offset : offset + n], [min(c, self._window) for c in job_counts])
            )
            offset += n

    def _window_error(self, counts: list[int]) -> InputTooLongError | None:
        over = [i for i, c in enumerate(counts) if c > self._window]
        if not over:
            return None
        first = over[0]
        if self._on_overflow == "error":
            return InputTooLongError(
                f"input[{first}] has {counts[first]} tokens, more than the model's window of {self._window} "
                f"({len(over)} input(s) in all); split long texts before embedding them, or start the server "
                "with --on-overflow truncate."
            )
        if self._on_overflow == "warn":
            logger.warning(
                "%d of %d inputs of one request exceed the %d-token window and were truncated (first: input[%d], "
                "%d tokens)", len(over), len(counts), self._window, first, counts[first],
            )
        return None
