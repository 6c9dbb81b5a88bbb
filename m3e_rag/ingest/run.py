"""Streaming ingest: documents in, chunks out in steps, Ctrl-C honoured after the current step.

:class:`~m3e_rag.ingest.ingestor.Ingestor` (behind :meth:`m3e_rag.RAGPipeline.ingest`) drives an
:class:`IngestRun`. Nothing is materialised whole: documents come one at a time from the loader (a
large text file as a stream of decoded blocks), each is chunked window by window, and chunks are
embedded and stored in steps of ``INGEST_STEP_CHUNKS`` under the index's write lock. Memory is
bounded by the window and the step, plus the ids (not the texts) of the chunks of the sources in
progress.

Re-ingesting a source replaces its chunks: ids derive from (source, occurrence, text), so an
unchanged chunk keeps its id and is not embedded again; once a source has been read to its end,
its stored chunks that did not come back are deleted (in the step that finishes the source). A
source whose reading failed midway keeps its old chunks (nothing is deleted for it).

**Interrupting** (SIGINT / Ctrl-C, in the main thread): the current step is finished and committed,
then :class:`IngestInterrupted` is raised. It *is* a :class:`KeyboardInterrupt` (so an
application that does not catch it stops as usual) and carries :attr:`IngestInterrupted.report`:
what was committed, with ``interrupted=True``. Running the same ingest again completes it. A
second Ctrl-C while the step finishes stops at once (the store stays consistent: each write is
atomic; the step is redone next time).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from m3e_rag.index.chroma import chunk_id
from m3e_rag.ingest.loaders import SkippedFile, StreamedDocument
from m3e_rag.types import Chunk, Document

if TYPE_CHECKING:  # pragma: no cover
    from m3e_rag.ingest.chunking import Chunker

__all__ = ["IngestInterrupted", "IngestRun", "sigint_deferred", "InterruptFlag"]

logger = logging.getLogger(__name__)

#: ``commit(pairs, finished_sources, current_ids)``: embed and store one step (see the Ingestor).
CommitStep = Callable[[list[tuple[str, Chunk]], list[str], dict[str, set[str]]], None]


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an ingest after committing its current step; :attr:`report` says what was stored."""

    def __init__(self, report: Any) -> None:
        super().__init__("ingest interrupted after committing the current step; run it again to complete it")
        self.report = report


@dataclass
class InterruptFlag:
    """Set by the SIGINT handler of :func:`sigint_deferred`; polled between chunks and steps."""

    is_set: bool = False


@contextmanager
def sigint_deferred() -> Iterator[InterruptFlag]:
    """Turn the first Ctrl-C into a flag (a second one interrupts at once), for the block's duration.

    Only in the main thread and only while Python's default SIGINT handler is installed: an
    application's own handler is left alone (its flag then never sets).
    """
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.is_set = True
        logger.warning("interrupt: finishing the current ingest step, then stopping (Ctrl-C again to stop now)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _SourceState:
    """Ids seen so far for one source, and how often each chunk text occurred (for unique ids)."""

    current: set[str] = field(default_factory=set)
    occurrences: dict[bytes, int] = field(default_factory=dict)
    failed: bool = False


class IngestRun:
    """Chunk a stream of documents and hand the chunks to ``commit`` in steps of ``step_chunks``.

    Args:
        chunker: the pipeline's chunker.
        commit: stores one step (see :data:`CommitStep`).
        step_chunks: chunks per step.
        flag: the interrupt flag to poll.
        on_step: called with ``(chunks_done, chunks_known)`` after each committed step.

    """

    def __init__(
        self,
        chunker: Chunker,
        commit: CommitStep,
        step_chunks: int,
        flag: InterruptFlag,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.chunker = chunker
        self.commit = commit
        self.step_chunks = step_chunks
        self.flag = flag
        self.on_step = on_step
        self.documents = 0
        self.chunks_done = 0
        self.skipped: list[SkippedFile] = []
        self.interrupted = False
        self.given_chars_done = 0
        self._pending: list[tuple[str, Chunk]] = []
        self._states: dict[str, _SourceState] = {}
        self._finished: list[str] = []

    def run(self, items: Iterable[tuple[Document | StreamedDocument, bool]]) -> None:
        """Ingest ``documents``, committing step by step.

        ``items`` are ``(document, consecutive)`` pairs: ``consecutive`` says whether all documents
        of its source come in one run (files: yes), so that the source can be finished as soon as
        the next one starts. On an interrupt this returns early with :attr:`interrupted` set.
        """
        last_source: str | None = None
        last_consecutive = False
        for doc, consecutive in items:
            if last_source is not None and doc.source != last_source and last_consecutive:
                self._finish(last_source)
            last_source, last_consecutive = doc.source, consecutive
            self.documents += 1
            self._ingest_document(doc)
            if not consecutive and isinstance(doc, Document):
                self.given_chars_done += len(doc.text)
            if self.interrupted:
                return
        for source in list(self._states):
            self._finish(source)
        self._flush()

    def _ingest_document(self, doc: Document | StreamedDocument) -> None:
        """Chunk one document into the pending step, committing full steps as they fill."""
        state = self._states.setdefault(doc.source, _SourceState())
        if isinstance(doc, StreamedDocument):
            segments: Iterable[str] = doc.segments()
        else:
            segments = [doc.text]
        produced = 0
        try:
            for chunk in self.chunker.iter_chunks(segments, source=doc.source, metadata=doc.metadata):
                key = hashlib.blake2b(chunk.text.encode("utf-8"), digest_size=16).digest()
                occurrence = state.occurrences.get(key, 0)
                state.occurrences[key] = occurrence + 1
                cid = chunk_id(doc.source, chunk.text, occurrence)
                state.current.add(cid)
                self._pending.append((cid, chunk))
                produced += 1
                if len(self._pending) >= self.step_chunks or self.flag.is_set:
                    self._flush()
                    if self.flag.is_set:
                        self.interrupted = True
                        return
        except OSError as exc:
            state.failed = True
            self.skipped.append(SkippedFile(
                doc.source,
                f"read error after {produced} chunks ({exc.strerror or exc}); the chunks before it were stored "
                "and its older chunks were kept: ingest it again",
            ))

    def _finish(self, source: str) -> None:
        """Mark a source as read to its end: its stale chunks go with the next committed step."""
        state = self._states.get(source)
        if state is None or source in self._finished:
            return
        if not state.failed:
            self._finished.append(source)
        else:
            del self._states[source]

    def _flush(self) -> None:
        """Commit the pending chunks and the finished sources as one step."""
        if not self._pending and not self._finished:
            return
        pairs, finished = self._pending, self._finished
        current = {s: self._states[s].current for s in finished}
        self.commit(pairs, finished, current)
        for s in finished:
            self._states.pop(s, None)
        self._pending, self._finished = [], []
        self.chunks_done += len(pairs)
        if self.on_step is not None:
            self.on_step(self.chunks_done, self.chunks_done)
        if self.flag.is_set:
            self.interrupted = True
