"""End to end against a real Chroma server (`chroma run` on 127.0.0.1, started by conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import ModelMismatchError, StoreError

pytestmark = pytest.mark.server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_pipeline_on_a_chroma_server(chroma_server: str, bilingual_model_path: Path) -> None:
    rag = RAGPipeline(chroma_url=chroma_server, collection="e2e_docs", model_name=str(bilingual_model_path))
    report = rag.ingest(EXAMPLES)
    assert report.chunks_added > 0 and report.files_skipped == []
    assert rag.ingest(EXAMPLES).texts_embedded == 0

    # A second client (as another machine would) sees the same chunks, and builds its BM25 side
    # from the server's chunks.
    other = RAGPipeline(chroma_url=chroma_server, collection="e2e_docs", model_name=str(bilingual_model_path))
    assert other.store.count() == report.chunks_added
    for mode in ("dense", "sparse", "hybrid"):
        top = other.search("大熊猫吃什么？", k=1, mode=mode)[0]
        assert top.source is not None and top.source.endswith("giant_panda_gbk.txt"), mode
        assert "竹子" in top.text
    assert other.delete(source=str(EXAMPLES / "giant_panda_gbk.txt")) > 0
    assert all(not (h.source or "").endswith("giant_panda_gbk.txt") for h in other.search("大熊猫", k=10))


def test_server_refuses_another_model(chroma_server: str, tiny_model_path: Path, bilingual_model_path: Path) -> None:
    RAGPipeline(chroma_url=chroma_server, collection="e2e_guard", model_name=str(tiny_model_path)).ingest(
        texts=["熊猫"], sources=["p"]
    )
    wrong = RAGPipeline(chroma_url=chroma_server, collection="e2e_guard", model_name=str(bilingual_model_path))
    with pytest.raises(ModelMismatchError, match="was built with model"):
        wrong.search("熊猫")
    right = RAGPipeline(chroma_url=chroma_server, collection="e2e_guard", model_name=str(tiny_model_path))
    assert right.store.count() == 1


def test_unreachable_server_says_how_to_start_one(tiny_model_path: Path) -> None:
    rag = RAGPipeline(chroma_url="http://127.0.0.1:9", model_name=str(tiny_model_path))
    with pytest.raises(StoreError, match="chroma run --path DIR --host 127.0.0.1"):
        rag.search("熊猫")


def test_cli_against_the_server(chroma_server: str, tiny_model_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", M3E_MODEL=str(tiny_model_path))
    base = [sys.executable, "-m", "m3e_rag"]
    common = ["--chroma-url", chroma_server, "--collection", "e2e_cli", "--json"]
    out = subprocess.run([*base, "ingest", str(EXAMPLES), *common], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert json.loads(out.stdout)["chunks_added"] > 0
    out = subprocess.run([*base, "search", "Eiffel", "-k", "2", "--mode", "sparse", *common], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    hits = json.loads(out.stdout)
    assert hits and hits[0]["metadata"]["source"].endswith("eiffel_tower.md")
