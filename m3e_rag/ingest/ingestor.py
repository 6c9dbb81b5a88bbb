"""One ingest, end to end: inputs in, chunks embedded and stored step by step, an :class:`IngestReport` out.

:class:`Ingestor` does what :meth:`m3e_rag.RAGPipeline.ingest` documents: it gathers the inputs
(files and folders through a :class:`~m3e_rag.ingest.loaders.FileLoader`, in-memory texts and
framework Documents), drives an :class:`~m3e_rag.ingest.run.IngestRun` over them with Ctrl-C
deferred to the end of a step, and commits each step to the index
(:class:`~m3e_rag.ingest.index_handle.IndexHandle`) under its write lock: chunks already stored are
kept (their metadata refreshed when it changed), new ones embedded and stored, and the stale
chunks of the sources the step finishes deleted. With ``sync=True``, a last step removes the chunks of
the files gone from the folders given (:mod:`m3e_rag.ingest.sync`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.chroma import StoreRecord
from m3e_rag.index.metadata import check_metadata
from m3e_rag.ingest.index_handle import IndexHandle
from m3e_rag.ingest.loaders import DEFAULT_MAX_FILE_BYTES, FileLoader, SkippedFile, StreamedDocument, load_texts
from m3e_rag.ingest.run import IngestInterrupted, IngestRun, InterruptFlag, sigint_deferred
from m3e_rag.ingest.sync import RemovedSource, SyncScope, remove_missing, sync_scope
from m3e_rag.types import Chunk, Document, Metadata

__all__ = ["Ingestor", "IngestReport", "INGEST_STEP_CHUNKS", "ProgressCallback", "chunk_metadata"]

#: Chunks embedded and written per locked step of an ingest (bounds the work lost to a crash).
INGEST_STEP_CHUNKS = 256

ProgressCallback = Callable[[int, int], None]


@dataclass
class IngestReport:
    """What an ingest did.

    Attributes:
        files_seen: files found under the given paths.
        files_skipped: files not ingested, each with the reason.
        documents: documents (files, pages, records or texts) loaded.
        chunks_added: chunks newly embedded and stored.
        chunks_unchanged: chunks already stored with the same content (not re-embedded).
        chunks_removed: stale chunks of re-ingested sources that were deleted (and the chunks this
            ingest had added for a file that kept changing while it was read), and with ``sync`` the
            chunks of ``sources_removed``.
        texts_embedded: texts sent to the model.
        seconds: wall time of the ingest.
        interrupted: Ctrl-C stopped the ingest after committing its current step (see
            :class:`~m3e_rag.ingest.run.IngestInterrupted`); what is counted here was committed.
        notes: files loaded with a caveat (invalid bytes replaced by U+FFFD; read a second time
            because they changed while being read), as {path, reason}.
        synced: the ingest ran with ``sync=True`` and completed its sync step.
        sources_removed: with ``sync``, the files gone from the folders given whose chunks were
            deleted, as {source, chunks}.
        sources_kept: with ``sync``, stored files under the folders given that were not ingested this
            time yet keep their chunks (skipped, or not confirmed gone), and folders moved during the
            ingest (nothing under them removed), as {path, reason}.
    """

    files_seen: int = 0
    files_skipped: list[SkippedFile] = field(default_factory=list)
    documents: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    texts_embedded: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[SkippedFile] = field(default_factory=list)
    synced: bool = False
    sources_removed: list[RemovedSource] = field(default_factory=list)
    sources_kept: list[SkippedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys named above (skipped files as {path, reason})."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def chunk_metadata(chunk: Chunk) -> Metadata:
    """What is stored beside a chunk: its metadata (None values left out), source, span, index and size."""
    meta: Metadata = {k: v for k, v in chunk.metadata.items() if v is not None}
    meta.update(
        source=chunk.source, start=chunk.start, end=chunk.end, chunk_index=chunk.index, n_tokens=chunk.n_tokens
    )
    return meta


def _inputs(
    paths: str | Path | Sequence[str | Path] | None,
    texts: Sequence[str] | None,
    documents: Sequence[Document | Any] | None,
    sources: Sequence[str] | None,
    metadatas: Sequence[Mapping[str, Any]] | None,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    follow_symlinks: bool,
    max_file_bytes: int | None,
    confine_to: Sequence[str | Path] | None = None,
    text_fields: tuple[str, str] = ("text", "text"),
) -> tuple[list[Document], FileLoader | None]:
    """The given texts and Documents, and a loader over ``paths`` (None without paths)."""
    given: list[Document] = []
    if texts is not None:
        given.extend(load_texts(texts, sources=sources, metadatas=metadatas))
    if documents is not None:
        from m3e_rag.ingest.documents import coerce_documents  # LangChain / LlamaIndex Documents too

        given.extend(coerce_documents(documents))
    loader: FileLoader | None = None
    if paths is not None:
        path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
        loader = FileLoader(
            path_list, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
            max_file_bytes=max_file_bytes, confine_to=confine_to, text_field=text_fields[0], text_column=text_fields[1],
        )
    return given, loader


def _fill_report(report: IngestReport, loader: FileLoader | None, run: IngestRun | None, started: float) -> None:
    """Copy what the loader and the run counted into the report (also when the ingest stops early)."""
    if loader is not None:
        report.files_seen = loader.files_seen
        report.files_skipped = list(loader.skipped)
        report.notes = list(loader.notes)
    report.seconds = time.perf_counter() - started
    if run is not None:
        report.files_skipped.extend(run.skipped)
        report.notes.extend(run.notes)
        report.documents = run.documents


class Ingestor:
    """Runs the ingests of one pipeline into its index, embedding with its encoder.

    Args:
        index: the store, its BM25 side and the chunker (see :class:`~m3e_rag.ingest.index_handle.IndexHandle`).
        encoder: the pipeline's encoder (its model loads on the first chunk).
    """

    def __init__(self, index: IndexHandle, encoder: TextEncoder) -> None:
        self._index = index
        self._encoder = encoder
        self._lexical: dict[str, Any] = {}  # id -> lexical weights from the forward pass that embedded it

    def ingest(
        self,
        paths: str | Path | Sequence[str | Path] | None = None,
        *,
        texts: Sequence[str] | None = None,
        documents: Sequence[Document | Any] | None = None,
        sources: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        follow_symlinks: bool = False,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        confine_to: Sequence[str | Path] | None = None,
        sync: bool = False,
        text_field: str = "text",
        text_column: str = "text",
    ) -> IngestReport:
        """Load, chunk, embed and store; see :meth:`m3e_rag.RAGPipeline.ingest` for the arguments and errors.

        ``confine_to``: folders every file must lie in once opened (see
        :class:`~m3e_rag.ingest.loaders.FileLoader`); the service passes its ``--ingest-root``.
        ``sync``: remove the chunks of files gone from the folders in ``paths`` (see :mod:`m3e_rag.ingest.sync`).
        """
        started = time.perf_counter()
        report = IngestReport()
        if paths is None and texts is None and documents is None:
            raise InputError("ingest() needs paths, texts or documents.")
        given, loader = _inputs(
            paths, texts, documents, sources, metadatas, include, exclude, follow_symlinks, max_file_bytes, confine_to,
            (text_field, text_column),
        )
        scope = sync_scope(loader, sync)  # folder identities taken before anything is read
        for n, doc in enumerate(given):  # before any file is read or anything written: keys like "$and", NaN
            check_metadata(doc.metadata, f"the metadata of document {n} ({doc.source!r:.80})")

        def stream() -> Iterator[tuple[Document | StreamedDocument, bool]]:
            if loader is not None:
                for doc in loader:
                    yield doc, True
            for doc in given:
                yield doc, False

        # Progress total: an estimate (the ingest streams), scaled by the share of input consumed.
        given_chars = sum(len(d.text) for d in given)
        input_size = (loader.estimate_bytes() if loader is not None and progress else 0) + given_chars

        def on_step(done: int, known: int) -> None:
            if progress:
                consumed = (loader.bytes_done if loader is not None else 0) + run_chars_done()
                estimate = round(done * input_size / consumed) if consumed else known
                progress(done, max(known, estimate))

        def run_chars_done() -> int:
            return run.given_chars_done if run is not None else 0

        def commit(
            pairs: list[tuple[str, Chunk]], finished: list[str], current: dict[str, set[str]], drop: list[str]
        ) -> set[str]:
            return self._step(pairs, finished, current, drop, report)

        run: IngestRun | None = None
        try:
            with sigint_deferred() as flag:
                run = IngestRun(self._index.chunker, commit, INGEST_STEP_CHUNKS, flag, on_step, watch=loader)
                run.run(stream())
                if scope is not None:
                    self._sync(scope, run, flag, loader, report)
        finally:
            _fill_report(report, loader, run, started)
        assert run is not None
        if progress:
            progress(run.chunks_done, run.chunks_done)
        if run.interrupted:
            report.interrupted = True
            raise IngestInterrupted(report)
        return report

    def _sync(
        self, scope: SyncScope, run: IngestRun, flag: InterruptFlag, loader: FileLoader | None, report: IngestReport
    ) -> None:
        """After a complete run, remove the chunks of the files in ``scope`` gone from disk; record it in the report.

        A run that stopped early, or a Ctrl-C after its last step, skips it (the run is marked interrupted).
        """
        if run.interrupted or flag.is_set:
            run.interrupted = True
            return
        skipped = [*(loader.skipped if loader is not None else []), *run.skipped]
        result = remove_missing(self._index, scope, {s.path: s.reason for s in skipped})
        report.synced = True
        report.sources_removed = result.removed
        report.sources_kept = result.kept
        report.chunks_removed += result.chunks

    def _step(
        self,
        pairs: list[tuple[str, Chunk]],
        finished: list[str],
        current: Mapping[str, set[str]],
        drop: list[str],
        report: IngestReport,
    ) -> set[str]:
        """Embed and store one step's (id, chunk) pairs; drop stale chunks of the sources it finishes.

        ``finished`` sources were read to their end: their stored chunks whose id is not in
        ``current[source]`` are stale. ``drop`` are ids to delete as well (what this ingest added for a
        file that kept changing). Existence is checked by id (cost O(step), not O(source)). Returns
        the ids newly stored.

        The new chunks are embedded before the write locks are taken, so searches (which wait for
        those locks to catch up with writers) wait for the writes only, not for the model; the
        existence check is repeated under the locks, where it decides.
        """
        store = self._index.store
        store.require_writable()  # before any embedding: a read-only index fails at once
        vectors = self._embed_missing(pairs, report)
        with self._index.writing():
            existing = {r.id: r.metadata for r in store.get(ids=[cid for cid, _ in pairs], include_text=False)}
            new: list[tuple[str, Chunk]] = []
            changed_ids: list[str] = []
            changed_meta: list[Metadata] = []
            stale: list[str] = list(drop)
            for cid, chunk in pairs:
                if cid in existing:
                    report.chunks_unchanged += 1
                    meta = chunk_metadata(chunk)
                    if any(existing[cid].get(k) != v for k, v in meta.items()):
                        changed_ids.append(cid)
                        changed_meta.append(meta)
                else:
                    new.append((cid, chunk))
            for source in finished:
                keep = current.get(source, set())
                stale.extend(cid for cid in store.ids_of_source(source) if cid not in keep)
            if new:
                # Another writer may have removed a chunk seen before the lock: embed it now.
                vectors.update(self._embed([(cid, c) for cid, c in new if cid not in vectors], report))
                store.upsert([StoreRecord(cid, c.text, vectors[cid], chunk_metadata(c)) for cid, c in new])
                report.chunks_added += len(new)
            if changed_ids:
                store.update_metadata(changed_ids, changed_meta)
            if stale:
                store.delete(ids=stale)
                report.chunks_removed += len(stale)
            lexical = [self._lexical.pop(cid) for cid, _ in new] if self._index.has_learned else None
            self._index.sparse_upsert([cid for cid, _ in new], [c.text for _, c in new], lexical)
            self._lexical.clear()
            self._index.sparse_delete(stale)
        return {cid for cid, _ in new}

    def _embed_missing(self, pairs: list[tuple[str, Chunk]], report: IngestReport) -> dict[str, Any]:
        """Vectors of the pairs whose id the store does not hold yet (read without the write locks)."""
        if not pairs:
            return {}
        held = {r.id for r in self._index.store.get(ids=[cid for cid, _ in pairs], include_text=False)}
        return self._embed([(cid, c) for cid, c in pairs if cid not in held], report)

    def _embed(self, pairs: list[tuple[str, Chunk]], report: IngestReport) -> dict[str, Any]:
        """Vectors of ``pairs`` by id, counted in the report."""
        if not pairs:
            return {}
        vectors, lexical = self._index.embed_documents([c.text for _, c in pairs])  # one pass, with a sparse head
        if lexical is not None:
            self._lexical.update((cid, lexical[i]) for i, (cid, _) in enumerate(pairs))
        report.texts_embedded += len(pairs)
        return {cid: vectors[i] for i, (cid, _) in enumerate(pairs)}
