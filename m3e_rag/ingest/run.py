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

**A file that changes while it is ingested** is noticed before its chunks are stored: before each
step is committed, every file with chunks in it (or finished by it) is asked whether it changed
since it was opened (:class:`SourceWatch`, the file loader). A changed file's chunks are taken out
of the step and the file is read again from the start once the other inputs are done; its chunks
from the first reading that the second does not repeat go as stale ones when it is finished, so
what is stored is the second reading, whole (and a note says so). A file that changes again while
it is read the second time is reported as skipped: the chunks this ingest added for it are removed
and its chunks from before the ingest are kept: never a mix of two versions.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from m3e_rag.index.chroma import chunk_id
from m3e_rag.ingest.loaders import SkippedFile, StreamedDocument
from m3e_rag.types import Chunk, Document

if TYPE_CHECKING:  # pragma: no cover
    from m3e_rag.ingest.chunking import Chunker

__all__ = ["IngestInterrupted", "IngestRun", "SourceWatch", "sigint_deferred", "InterruptFlag"]

logger = logging.getLogger(__name__)

#: ``commit(pairs, finished_sources, current_ids, drop_ids)``: embed and store one step, delete the
#: ``drop_ids``; returns the ids it newly stored (see the Ingestor).
CommitStep = Callable[[list[tuple[str, Chunk]], list[str], dict[str, set[str]], list[str]], set[str]]

_CHANGED_AGAIN = (
    "changed while it was being read, and again while it was read a second time: nothing of it was stored "
    "(its chunks from before this ingest were kept); ingest it again once nothing writes to it"
)
_CHANGED_ONCE = "changed while it was being read: read again from the start, stored as of the second reading"


class SourceWatch(Protocol):
    """What the run asks of the loader about the files it loaded (see the module docstring)."""

    def changed(self, source: str) -> bool:
        """Whether the file of ``source`` changed since it was opened (False for sources not from files)."""
        ...

    def reread(self, source: str) -> Iterator[Document | StreamedDocument]:
        """The documents of ``source``'s file, loaded again."""
        ...

    def forget(self, source: str) -> None:
        """``source`` is stored: stop watching it."""
        ...


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
    fresh: set[str] = field(default_factory=set)  # ids this run newly stored (removed if the source fails)
    requeued: bool = False  # changed during its first reading: read again after the other inputs
    retried: bool = False  # this is its second reading


class IngestRun:
    """Chunk a stream of documents and hand the chunks to ``commit`` in steps of ``step_chunks``.

    Args:
        chunker: the pipeline's chunker.
        commit: stores one step (see :data:`CommitStep`).
        step_chunks: chunks per step.
        flag: the interrupt flag to poll.
        on_step: called with ``(chunks_done, chunks_known)`` after each committed step.
        watch: the loader of the files among the inputs, asked before each commit whether they changed.

    """

    def __init__(
        self,
        chunker: Chunker,
        commit: CommitStep,
        step_chunks: int,
        flag: InterruptFlag,
        on_step: Callable[[int, int], None] | None = None,
        watch: SourceWatch | None = None,
    ) -> None:
        self.chunker = chunker
        self.commit = commit
        self.step_chunks = step_chunks
        self.flag = flag
        self.on_step = on_step
        self.watch = watch
        self.documents = 0
        self.chunks_done = 0
        self.skipped: list[SkippedFile] = []
        self.notes: list[SkippedFile] = []
        self.interrupted = False
        self.given_chars_done = 0
        self._pending: list[tuple[str, Chunk]] = []
        self._states: dict[str, _SourceState] = {}
        self._finished: list[str] = []
        self._drop: list[str] = []
        self._retry: list[str] = []

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
        while self._retry and not self.interrupted:
            self._read_again(self._retry.pop(0))

    def _read_again(self, source: str) -> None:
        """Ingest a changed source from the start, once; it fails if it yields nothing now."""
        state = self._states.get(source)
        if state is None or self.watch is None:
            return
        state.current, state.occurrences = set(), {}
        state.requeued, state.retried = False, True
        produced = False
        for doc in self.watch.reread(source):
            produced = True
            self._ingest_document(doc)
            if self.interrupted or state.failed:
                return
        if not produced:  # skipped now (the loader says why): keep what was stored before
            self._drop.extend(state.fresh)
            del self._states[source]
        else:
            self._finish(source)
        self._flush()

    def _ingest_document(self, doc: Document | StreamedDocument) -> None:
        """Chunk one document into the pending step, committing full steps as they fill."""
        state = self._states.setdefault(doc.source, _SourceState())
        if state.requeued:
            return  # the rest of a first reading that changed: it is read again later
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
                    if state.requeued or state.failed:
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
        if state is None or source in self._finished or state.requeued:
            return
        if not state.failed:
            self._finished.append(source)
        else:
            del self._states[source]

    def _flush(self) -> None:
        """Commit the pending chunks and the finished sources as one step (changed files taken out first)."""
        self._take_out_changed()
        if not self._pending and not self._finished and not self._drop:
            return
        pairs, finished, drop = self._pending, self._finished, self._drop
        current = {s: self._states[s].current for s in finished}
        fresh = self.commit(pairs, finished, current, drop)
        for cid, chunk in pairs:
            if cid in fresh and chunk.source in self._states:
                self._states[chunk.source].fresh.add(cid)
        for s in finished:
            state = self._states.pop(s, None)
            if state is not None and state.retried:
                self.notes.append(SkippedFile(s, _CHANGED_ONCE))
            if self.watch is not None:
                self.watch.forget(s)
        self._pending, self._finished, self._drop = [], [], []
        self.chunks_done += len(pairs)
        if self.on_step is not None:
            self.on_step(self.chunks_done, self.chunks_done)
        if self.flag.is_set:
            self.interrupted = True

    def _take_out_changed(self) -> None:
        """Take the files that changed since they were opened out of the step (see the module docstring)."""
        if self.watch is None:
            return
        for source in {chunk.source for _, chunk in self._pending}.union(self._finished):
            state = self._states.get(source)
            if state is None or not self.watch.changed(source):
                continue
            self._pending = [p for p in self._pending if p[1].source != source]
            if source in self._finished:
                self._finished.remove(source)
            if not state.retried:
                state.requeued = True
                self._retry.append(source)
                continue
            state.failed = True
            self._drop.extend(state.fresh)
            del self._states[source]
            self.watch.forget(source)
            self.skipped.append(SkippedFile(source, _CHANGED_AGAIN))
