"""Crash and concurrency safety of ingest on one embedded index (real processes, real kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline

pytestmark = pytest.mark.slow

SENTENCES = [
    "大熊猫主要生活在四川的山区竹林中。", "长城东起山海关，西至嘉峪关。", "绿茶是不发酵茶，龙井最有名。",
    "The Eiffel Tower was finished in 1889.", "Python was first released in 1991.", "光合作用在叶绿体中进行。",
]


def make_corpus(folder: Path, files: int = 60, paragraphs: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        body = "\n\n".join(
            f"第{f}篇第{p}段。" + "".join(SENTENCES[(f + p + i) % len(SENTENCES)] for i in range(6))
            for p in range(paragraphs)
        )
        (folder / f"doc_{f:03d}.txt").write_text(body, encoding="utf-8")
    return folder


def ingest_cmd(corpus: Path, index: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "m3e_rag", "-v", "ingest", str(corpus), "--index", str(index),
            "--chunk-tokens", "48", "--overlap-tokens", "0", "--json", *extra]


def env_for(model: Path) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", M3E_MODEL=str(model))


def clean_count(tmp_path: Path, corpus: Path, model: Path) -> int:
    out = subprocess.run(ingest_cmd(corpus, tmp_path / "clean"), env=env_for(model), capture_output=True,
                         text=True, timeout=600, check=True)
    report = json.loads(out.stdout)
    assert report["chunks_added"] > 512  # several locked steps, so a kill can land between them
    return int(report["chunks_added"])


def check_index(index: Path, model: Path, expected: int) -> None:
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    rag = RAGPipeline(index, model_name=str(model), chunk_tokens=48, overlap_tokens=0)
    ids = rag.store.all_ids()
    assert len(ids) == len(set(ids)) == expected
    assert rag.store.count() == expected
    # The BM25 side agrees with the store (rebuilt if the crash left it stale) and searches work.
    assert set(rag.sparse_index.ids()) == set(ids)
    assert rag.search("大熊猫", k=3, mode="hybrid")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus both tests ingest (read only)."""
    return make_corpus(tmp_path_factory.mktemp("durability") / "corpus")


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_model_path: Path) -> int:
    """Chunks of one clean, uninterrupted ingest of ``corpus``: ingested once for both tests."""
    return clean_count(tmp_path_factory.mktemp("durability-clean"), corpus, tiny_model_path)


def test_kill_9_midway_then_rerun_equals_clean_ingest(
    tmp_path: Path, tiny_model_path: Path, corpus: Path, expected: int
) -> None:
    index = tmp_path / "killed"
    proc = subprocess.Popen(ingest_cmd(corpus, index), env=env_for(tiny_model_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    killed_at = None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if "ingest progress:" in line:
            done, total = map(int, line.rsplit(" ", 2)[-2].split("/"))
            if 0 < done < total:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = done
                break
        assert time.monotonic() < deadline, "ingest never reported progress"
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    rerun = subprocess.run(ingest_cmd(corpus, index), env=env_for(tiny_model_path), capture_output=True,
                           text=True, timeout=600, check=True)
    report = json.loads(rerun.stdout)
    assert report["chunks_unchanged"] >= killed_at  # what was committed before the kill is kept
    assert report["chunks_unchanged"] + report["chunks_added"] == expected
    check_index(index, tiny_model_path, expected)


def test_two_concurrent_ingests_equal_one_clean_ingest(
    tmp_path: Path, tiny_model_path: Path, corpus: Path, expected: int
) -> None:
    index = tmp_path / "shared"
    procs = [subprocess.Popen(ingest_cmd(corpus, index), env=env_for(tiny_model_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        reports.append(json.loads(out))
    # Together they embedded each chunk once or a little more, never lost one.
    assert sum(r["chunks_added"] for r in reports) == expected
    check_index(index, tiny_model_path, expected)
