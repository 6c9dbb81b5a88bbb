"""Keeping an index in step with a folder: ``ingest(paths, sync=True)`` (issue 23).

Before: a file deleted from the folder kept its chunks through every re-ingest (searchable, counted by
``info``). Now ``sync=True`` removes the chunks of files confirmed gone under the folders given, from
Chroma and BM25, and nothing else: not outside the roots, not a file skipped this run, not texts, not
files outside this call's patterns, not after Ctrl-C, and nothing at all by default.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError
from m3e_rag.ingest.run import IngestInterrupted, IngestRun
from m3e_rag.types import Document

#: One distinct word per file, so a sparse (BM25) search tells which file's chunks are still there.
WORDS = {"a.txt": "zebracorn", "b.md": "quokkafish", "sub/c.txt": "narwhalox"}


def _rag(tmp_path: Path, model: Path) -> RAGPipeline:
    return RAGPipeline(tmp_path / "idx", model_name=str(model))


def _folder(root: Path, files: dict[str, str] = WORDS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, word in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"The word {word} appears in this file only. 熊猫吃竹子。", encoding="utf-8")
    return root


def _chunks(rag: RAGPipeline, path: Path | str) -> int:
    return len(rag.get_page(where={"source": Path(path).absolute().as_posix() if isinstance(path, Path) else path}))


def _sparse_sources(rag: RAGPipeline, word: str) -> set[str]:
    return {Path(h.source or "").name for h in rag.search(word, k=10, mode="sparse")}


def test_sync_removes_a_deleted_file_from_chroma_and_bm25_and_nothing_else(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    other = _folder(tmp_path / "other", {"o.txt": "platypod"})
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest([docs, other])
    rag.ingest(texts=["A text named like a file under the root: wombatine."], sources=[str(docs / "t.txt")])
    assert _sparse_sources(rag, "zebracorn") == {"a.txt"}
    (docs / "a.txt").unlink()
    (other / "o.txt").unlink()  # gone too, but outside the roots of the next call

    report = rag.ingest(docs, sync=True)

    assert report.synced
    assert [(Path(r.source).name, r.chunks) for r in report.sources_removed] == [("a.txt", 1)]
    assert report.chunks_removed == 1 and report.sources_kept == []
    assert _chunks(rag, docs / "a.txt") == 0
    assert _sparse_sources(rag, "zebracorn") == set()  # BM25 no longer finds it
    assert _sparse_sources(rag, "quokkafish") == {"b.md"} and _chunks(rag, docs / "sub" / "c.txt") == 1
    assert _chunks(rag, other / "o.txt") == 1 and _sparse_sources(rag, "platypod") == {"o.txt"}
    assert _chunks(rag, str(docs / "t.txt")) == 1  # a text, not a file: never removed by sync
    assert rag.stats()["sources"] == 4


def test_by_default_an_ingest_removes_nothing(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    (docs / "a.txt").unlink()
    report = rag.ingest(docs)
    assert not report.synced and report.sources_removed == [] and report.chunks_removed == 0
    assert _chunks(rag, docs / "a.txt") == 1 and _sparse_sources(rag, "zebracorn") == {"a.txt"}


def test_files_skipped_this_run_keep_their_chunks_and_are_reported(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs", {**WORDS, "big.txt": "elephantine " * 200})
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    before = _chunks(rag, docs / "big.txt")
    (docs / "b.md").write_bytes(bytes(range(256)) * 2)  # now binary: skipped when read
    report = rag.ingest(docs, sync=True, max_file_bytes=1000)  # big.txt is over the limit now

    skipped = {Path(s.path).name for s in report.files_skipped}
    assert skipped == {"big.txt", "b.md"}
    assert report.sources_removed == [] and report.chunks_removed == 0
    assert _chunks(rag, docs / "big.txt") == before > 0 and _chunks(rag, docs / "b.md") == 1
    kept = {Path(k.path).name: k.reason for k in report.sources_kept}
    assert set(kept) == {"big.txt", "b.md"}
    assert "over the limit" in kept["big.txt"] and "kept" in kept["big.txt"] and "binary" in kept["b.md"]


def test_a_file_root_covers_only_that_file(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    (docs / "b.md").unlink()
    report = rag.ingest(docs / "a.txt", sync=True)
    assert report.synced and report.sources_removed == []
    assert _chunks(rag, docs / "b.md") == 1


def test_patterns_bound_what_a_sync_may_remove(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs", {**WORDS, "skip/d.txt": "axolotlian"})
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    for rel in ("a.txt", "b.md", "skip/d.txt"):
        (docs / rel).unlink()

    only_md = rag.ingest(docs, include=["*.md"], sync=True)
    assert [Path(r.source).name for r in only_md.sources_removed] == ["b.md"]
    assert _chunks(rag, docs / "a.txt") == 1  # gone, but outside this call's patterns: kept

    no_skip = rag.ingest(docs, exclude=["skip"], sync=True)
    assert [Path(r.source).name for r in no_skip.sources_removed] == ["a.txt"]
    assert _chunks(rag, docs / "skip" / "d.txt") == 1  # under an excluded folder: kept

    everything = rag.ingest(docs, sync=True)
    assert [Path(r.source).name for r in everything.sources_removed] == ["d.txt"]


def test_roots_compare_resolved_through_links_and_relative_paths(tmp_path, tiny_model_path, monkeypatch):
    real = _folder(tmp_path / "real" / "docs")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(link)  # stored under the link's spelling
    assert _chunks(rag, link / "a.txt") == 1
    (real / "a.txt").unlink()
    monkeypatch.chdir(tmp_path / "real")
    report = rag.ingest("docs", sync=True)  # the same folder, relative and resolved
    assert [r.source for r in report.sources_removed] == [(link / "a.txt").as_posix()]
    assert _chunks(rag, link / "a.txt") == 0 and _chunks(rag, link / "b.md") == 1


def test_a_file_reached_through_a_followed_link_is_under_the_root_as_walked(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    outside = _folder(tmp_path / "outside", {"x.txt": "dugongish"})
    (docs / "ext").symlink_to(outside, target_is_directory=True)
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs, follow_symlinks=True)
    assert _chunks(rag, docs / "ext" / "x.txt") == 1
    (outside / "x.txt").unlink()
    report = rag.ingest(docs, follow_symlinks=True, sync=True)
    assert [r.source for r in report.sources_removed] == [(docs / "ext" / "x.txt").as_posix()]


def test_documents_with_a_path_as_source_are_never_removed(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    gone = (docs / "gone.txt").as_posix()
    rag.ingest(documents=[Document(text="A framework document: capybarra.", source=gone,
                                   metadata={"file_name": "gone.txt", "file_type": "text/plain"})])
    report = rag.ingest(docs, sync=True)
    assert report.sources_removed == [] and _chunks(rag, gone) == 1


def test_a_folder_replaced_during_the_ingest_removes_nothing_under_it(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)

    def swap(done: int, known: int) -> None:  # as if the disk were unmounted: an empty folder in its place
        if (docs / "a.txt").exists():
            docs.rename(tmp_path / "moved")
            docs.mkdir()

    report = rag.ingest(docs, sync=True, progress=swap)
    assert report.sources_removed == [] and rag.stats()["chunks"] == 3
    [moved] = report.sources_kept
    assert moved.path == docs.as_posix() and "moved, removed or replaced" in moved.reason


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """Python's own SIGINT handler (ingest defers Ctrl-C only under it), the previous one restored."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint_handler")
def test_an_interrupted_ingest_removes_nothing(tmp_path, tiny_model_path):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    (docs / "a.txt").unlink()
    (docs / "new.txt").write_text("A new file: pangolino.", encoding="utf-8")

    calls: list[int] = []

    def ctrl_c_once(done: int, known: int) -> None:  # as the last step commits, before the sync
        calls.append(done)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(IngestInterrupted) as info:
        rag.ingest(docs, sync=True, progress=ctrl_c_once)
    assert info.value.report.interrupted and not info.value.report.synced
    assert _chunks(rag, docs / "a.txt") == 1 and _chunks(rag, docs / "new.txt") == 1

    done = rag.ingest(docs, sync=True)  # the same call again completes it
    assert [Path(r.source).name for r in done.sources_removed] == ["a.txt"]


@pytest.mark.usefixtures("python_sigint_handler")
def test_a_ctrl_c_between_the_last_step_and_the_sync_removes_nothing(tmp_path, tiny_model_path, monkeypatch):
    docs = _folder(tmp_path / "docs")
    rag = _rag(tmp_path, tiny_model_path)
    rag.ingest(docs)
    (docs / "a.txt").unlink()
    real_run = IngestRun.run

    def run_then_ctrl_c(self: IngestRun, items: Any) -> None:
        real_run(self, items)
        os.kill(os.getpid(), signal.SIGINT)  # the run is done; the sync has not started

    monkeypatch.setattr(IngestRun, "run", run_then_ctrl_c)
    with pytest.raises(IngestInterrupted) as info:
        rag.ingest(docs, sync=True)
    assert info.value.report.interrupted and not info.value.report.synced
    assert _chunks(rag, docs / "a.txt") == 1


def test_sync_is_refused_without_paths_or_as_a_non_bool(tmp_path, tiny_model_path):
    rag = _rag(tmp_path, tiny_model_path)
    with pytest.raises(InputError, match="sync=True needs paths"):
        rag.ingest(texts=["熊猫"], sync=True)
    with pytest.raises(InputError, match="sync must be True or False"):
        rag.ingest(_folder(tmp_path / "docs"), sync="yes")  # type: ignore[arg-type]
    assert not (tmp_path / "idx").exists()  # refused before anything was written
