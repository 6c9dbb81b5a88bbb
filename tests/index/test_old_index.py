"""An index folder written by m3e-rag 0.1.0 before the package moved (issue 19) opens and answers as before.

``tests/data/index-0.1.0`` was written by ``tests/data/make_old_index.py`` on the flat layout (e7d6006): three
bilingual files, the tiny stand-in recorded as ``/tmp/m3e-rag-old-index-model``. The test puts its own build of
that stand-in there and the documents at ``/tmp/m3e-rag-old-index-docs`` (where they were ingested from), copies the
folder (opening may write), and reads it through the public API and the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli import main as cli_main
from tests.support import standins

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "index-0.1.0"
MODEL_COPY = Path("/tmp/m3e-rag-old-index-model")
DOCS = Path("/tmp/m3e-rag-old-index-docs")


@pytest.fixture
def old_index(tmp_path: Path) -> Path:
    tiny = standins.tiny_m3e()
    if not (MODEL_COPY / "config.json").is_file() or standins.read_stamp(MODEL_COPY) != standins.read_stamp(tiny):
        shutil.rmtree(MODEL_COPY, ignore_errors=True)
        shutil.copytree(tiny, MODEL_COPY)
    shutil.rmtree(DOCS, ignore_errors=True)
    shutil.copytree(FIXTURE.parent / "old-index-docs", DOCS)
    folder = tmp_path / "index"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_old_index_opens_and_searches_in_every_mode(old_index: Path) -> None:
    pipe = RAGPipeline(old_index, model_name=str(MODEL_COPY), collection="old_index")
    assert pipe.store.count() == 3
    bamboo = (DOCS / "bamboo.md").read_text(encoding="utf-8")
    # Dense: the stored vector of a chunk is nearest to the same text embedded again (random weights, no semantics).
    [chunk] = [c for c in pipe.get(pipe.store.all_ids()) if c.source and c.source.endswith("tea.txt")]
    assert pipe.search(chunk.text, k=1, mode="dense")[0].id == chunk.id
    # Sparse and hybrid read the BM25 folder written by 0.1.0.
    assert Path(pipe.search("熊猫", k=1, mode="sparse")[0].source or "").name == "bamboo.md"
    assert Path(pipe.search("Rust safety", k=1, mode="hybrid")[0].source or "").name == "rust.txt"
    assert "熊猫" in bamboo


def test_old_index_unchanged_files_embed_nothing_and_cli_reads_it(
    old_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = RAGPipeline(old_index, model_name=str(MODEL_COPY), collection="old_index")
    report = pipe.ingest([DOCS / name for name in ("bamboo.md", "rust.txt", "tea.txt")])
    assert (report.chunks_added, report.texts_embedded) == (0, 0)
    assert report.chunks_unchanged == 3
    assert cli_main(["info", "--index", str(old_index), "--collection", "old_index", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chunks"] == 3 and info["sources"] == 3 and info["model"] == str(MODEL_COPY)
    assert cli_main(["doctor", "--index", str(old_index), "--collection", "old_index", "--json"]) == 0
    doctor = json.loads(capsys.readouterr().out)
    assert doctor["healthy"] is True
    # The BM25 folder of a non-default collection is sparse_bm25-<collection>; doctor checks that one.
    [bm25] = [c for c in doctor["checks"] if c["name"] == "bm25"]
    assert bm25["ok"] and not bm25["detail"].startswith("no "), bm25
