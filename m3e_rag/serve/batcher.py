"""Dynamic batching: concurrent requests share forward passes, run by one model worker thread, in fair turns.

Requests put their texts in a bounded line and get a :class:`concurrent.futures.Future` back (the
event loop awaits it through :func:`asyncio.wrap_future`, so the model never runs on the loop).
One worker thread builds each batch of at most ``max_batch_texts`` texts from *every* request
waiting, in equal shares, a large request being served over several batches
(:mod:`m3e_rag.serve.fair`): a one-text request waits for about one batch, never behind whole
large requests. It counts the batch's tokens once (for ``usage`` and the window check, attributed
to each request's own input index) and hands the texts to the encoder in one call, which sorts them
by token length and cuts token-budgeted forward passes.

One request cannot hurt another: texts are checked before they are queued (empty, not a string,
invalid Unicode: refused for that request only), and if a batch fails in the encoder its requests
are retried one by one, so only the request that fails alone gets the error.

Waiting: an idle worker that finds work waits up to ``max_wait_s`` for more, but only while some
request is still *arriving* (announced by the HTTP layer, not yet queued); when every request in
flight is already queued it starts at once, so a lone request pays no batching delay.

Cancelling a request's future (a client that disconnected) drops its texts not yet handed to the
worker: before it started, or at the next batch boundary. Other work (a reranker's ``predict``) runs
on the same worker via :meth:`Batcher.submit_call`, taking its own turn, so two models never compete
for the same cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from m3e_rag.encode.inputs import check_unicode
from m3e_rag.errors import InputError, InputTooLongError, M3ERagError
from m3e_rag.serve.fair import FairQueue, Job, Kind, Slice

__all__ = ["Batcher", "EmbedResult", "QueueFullError", "BatcherClosedError", "Kind"]

logger = logging.getLogger(__name__)


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


EmbedFn = Callable[[list[str], Kind], np.ndarray]
CountFn = Callable[[list[str], Kind], list[int]]


def _resolve(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Set a future's result or error, unless its request was cancelled meanwhile (then it is dropped)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass  # cancelled while its last slice ran: nobody waits for it


class Batcher:
    """A bounded line of requests and one worker thread that encodes their texts in fair, coalesced batches.

    Args:
        embed: ``embed(texts, kind)`` returns the (len(texts), dim) float32 vectors (the encoder,
            set to truncate silently: the window policy is applied here, per request).
        count: ``count(texts, kind)`` returns each text's token count as the model reads it.
        window: the model's token window.
        on_overflow: ``truncate``, ``warn`` or ``error`` for texts longer than ``window``.
        max_batch_texts: most texts per batch; a larger request is served over several batches,
            sharing each with the other requests waiting.
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
        self._queue = FairQueue()
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
        """Texts waiting for the worker (not yet in a batch)."""
        return self._queue.texts

    @property
    def max_batch_texts(self) -> int:
        """Most texts per batch (callers that split their own work, such as reranks, use it as a slice size)."""
        return self._max_batch

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
            texts: non-empty strings of valid Unicode (checked here, before anything is queued: an
                empty or non-string item, or a lone surrogate, raises InputError naming ``input[i]``).
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
            check_unicode(text, f"input[{i}]")  # the tokenizer would fail the whole batch on it
        job = Job(Future(), kind, texts=items)
        self._put(job, block=block, announced=announced)
        return job.future

    def submit_call(self, call: Callable[[], Any]) -> Future[Any]:
        """Run ``call()`` on the model worker (in its own turn, between batches); the future holds its result."""
        job = Job(Future(), "call", call=call)
        self._put(job, block=True, announced=False)
        return job.future

    def _put(self, job: Job, *, block: bool, announced: bool) -> None:
        size = job.size
        with self._cond:
            if announced:
                self._arriving = max(0, self._arriving - 1)
            if self._closing:
                raise BatcherClosedError("The service is shutting down; retry on another instance.")
            if self._queue.texts + size > self._max_queue and self._queue:
                if not block:
                    raise QueueFullError(
                        f"The queue holds {self._queue.texts} texts (limit {self._max_queue}); retry in a moment."
                    )
                while self._queue.texts + size > self._max_queue and self._queue and not self._closing:
                    self._cond.wait()
            self._queue.add(job)
            depth = self._queue.texts
            self._cond.notify_all()
        job.future.add_done_callback(lambda fut: self._forget_if_cancelled(job))
        if self._observer is not None:
            self._observer.queue_depth(depth)

    def _forget_if_cancelled(self, job: Job) -> None:
        """A cancelled request's texts not yet in a batch leave the line (counted as cancelled)."""
        if not job.future.cancelled():
            return
        with self._cond:
            dropped = self._queue.remove(job)
            depth = self._queue.texts
            self._cond.notify_all()
        if dropped and self._observer is not None:
            self._observer.cancelled(dropped)
            self._observer.queue_depth(depth)

    def _fail(self, job: Job, error: BaseException) -> None:
        """Fail one request; its texts not yet in a batch leave the line."""
        _resolve(job.future, error=error)
        with self._cond:
            self._queue.remove(job)
            self._cond.notify_all()

    # ----------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, and everything queued is done
                deadline = self._queue.head.queued_at + self._max_wait
                while (
                    self._arriving > 0
                    and self._queue.texts < self._max_batch
                    and not self._closing
                    and self._queue.head.kind != "call"
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._queue.take(self._max_batch)
                purged, self._queue.purged = self._queue.purged, 0
                depth = self._queue.texts
                self._cond.notify_all()  # room for blocked submitters
            if self._observer is not None:
                if purged:
                    self._observer.cancelled(purged)
                self._observer.queue_depth(depth)
            if batch:
                self._process(batch)

    def _process(self, batch: list[Slice]) -> None:
        first = batch[0].job
        if first.kind == "call":
            if first.future.set_running_or_notify_cancel():
                try:
                    assert first.call is not None
                    first.future.set_result(first.call())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    first.future.set_exception(exc)
            return
        started = time.perf_counter()
        kinds: tuple[Kind, ...] = ("document", "query")
        for kind in kinds:
            group = [s for s in batch if s.job.kind == kind]
            if group:
                self._encode(group, kind)
        if self._observer is not None:
            self._observer.batch_done(sum(len(s) for s in batch), len(batch), time.perf_counter() - started)

    def _encode(self, group: list[Slice], kind: Kind) -> None:
        """Encode the slices of one kind together; if that fails, each alone, so only a failing request fails."""
        group = [s for s in group if not s.job.future.done()]  # cancelled (or failed) meanwhile: dropped
        if not group:
            return
        try:
            counts = self._count([text for s in group for text in s.texts], kind)
            kept = self._within_window(group, counts)
            vectors = self._embed([text for s, _ in kept for text in s.texts], kind) if kept else None
        except Exception as exc:  # noqa: BLE001 - handed to the request(s) it belongs to
            if len(group) == 1:
                self._fail(group[0].job, exc)
                return
            logger.warning("a batch of %d requests failed (%s: %s); retrying each request alone so only the "
                           "failing one gets the error", len(group), type(exc).__name__, exc)
            for piece in group:
                self._encode([piece], kind)
            return
        offset = 0
        for piece, piece_counts in kept:
            assert vectors is not None
            job = piece.job
            job.parts.append(vectors[offset : offset + len(piece)])
            job.tokens.extend(min(c, self._window) for c in piece_counts)
            offset += len(piece)
            if job.done == job.size:
                self._complete(job)

    def _within_window(self, group: list[Slice], counts: list[int]) -> list[tuple[Slice, list[int]]]:
        """The slices to embed with their token counts; with ``on_overflow="error"`` a request over the window fails."""
        kept: list[tuple[Slice, list[int]]] = []
        offset = 0
        for piece in group:
            piece_counts = counts[offset : offset + len(piece)]
            offset += len(piece)
            over = sorted((piece.indices[i], c) for i, c in enumerate(piece_counts) if c > self._window)
            if over and self._on_overflow == "error":
                first, tokens = over[0]
                self._fail(piece.job, InputTooLongError(
                    f"input[{first}] has {tokens} tokens, more than the model's window of {self._window}; split "
                    "long texts before embedding them, or start the server with --on-overflow truncate."
                ))
                continue
            if over:
                piece.job.over += len(over)
                piece.job.first_over = min(piece.job.first_over or over[0], over[0])
            kept.append((piece, piece_counts))
        return kept

    def _complete(self, job: Job) -> None:
        """Every slice of a request is done: hand it its vectors (and log its truncations under ``warn``)."""
        if job.first_over is not None and self._on_overflow == "warn":
            logger.warning(
                "%d of %d inputs of one request exceed the %d-token window and were truncated (first: input[%d], "
                "%d tokens)", job.over, job.size, self._window, job.first_over[0], job.first_over[1],
            )
        handed = job.parts[0] if len(job.parts) == 1 else np.concatenate(job.parts)  # in hand-out order
        job.parts = []
        vectors = np.empty_like(handed)
        vectors[job.order] = handed
        tokens = [0] * len(job.order)
        for i, count in zip(job.order, job.tokens, strict=True):
            tokens[i] = count
        _resolve(job.future, EmbedResult(vectors, tokens))
