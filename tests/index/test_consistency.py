"""Several processes, one index: a long-lived pipeline follows other writers; crashes and servers catch up.

Issue 12's row "a long-lived pipeline while another process writes: its count moves but dense/sparse
results do not; its own next write saves a stale BM25 file" re-run here, with the outcome asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3e_rag import RAGPipeline
from m3e_rag.index.chroma import ChromaStore, StoreRecord
from m3e_rag.index.sparse.folder import load_index

TEXTS = ["大熊猫主要吃竹子。", "长城东起山海关。", "Green tea is not fermented.", "光合作用在叶绿体中进行。"]
SOURCES = ["panda", "wall", "tea", "leaf"]
NEW_TEXT = "独角兽出没在雪山之巅。"

OTHER_PROCESS = r"""
import sys
from m3e_rag import RAGPipeline
rag = RAGPipeline(sys.argv[1], model_name=sys.argv[2])
rag.add_texts([sys.argv[3]], ids=["from-b"], metadatas=[{"source": "b"}])
print(rag.delete(source="wall"))
"""


def ids_of(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


@pytest.mark.slow
def test_a_long_lived_pipeline_follows_another_process(tmp_path: Path, tiny_model_path: Path) -> None:
    index = tmp_path / "idx"
    a = RAGPipeline(index, model_name=str(tiny_model_path))
    a.ingest(texts=TEXTS, sources=SOURCES)
    wall_ids = {h.id for h in a.search("长城", k=5, mode="sparse")}
    assert wall_ids and ids_of(a.search("独角兽", k=5, mode="sparse")) == []
    a.search("长城", k=5, mode="dense")  # A's HNSW is now in memory

    out = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(index), str(tiny_model_path), NEW_TEXT],
                         env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"  # B deleted the one "wall" chunk

    vector = a.encoder.encode_documents([NEW_TEXT])[0]  # B's stored vector: dense top-1 must be B's record
    assert ids_of(a.search("独角兽", k=1, mode="dense", query_vector=vector)) == ["from-b"]
    assert ids_of(a.search("独角兽", k=5, mode="sparse")) == ["from-b"]
    assert "from-b" in ids_of(a.search("独角兽", k=5, mode="hybrid", query_vector=vector))
    for mode in ("dense", "sparse", "hybrid"):
        assert not wall_ids & set(ids_of(a.search("长城", k=10, mode=mode)))  # B's delete is seen too

    a.add_texts(["A 之后写入的文本"], ids=["from-a"])  # A's own write must not save a stale BM25 side
    stored = set(a.store.all_ids())
    assert stored == set(a.sparse_index.ids()) == load_index(index / "sparse_bm25").ids()
    assert {"from-a", "from-b"} <= stored and not wall_ids & stored


def test_a_writer_that_died_after_chroma_is_caught_up_on_open(tmp_path: Path, tiny_model_path: Path) -> None:
    from chromadb.api.client import SharedSystemClient

    index = tmp_path / "idx"
    rag = RAGPipeline(index, model_name=str(tiny_model_path))
    rag.ingest(texts=TEXTS, sources=SOURCES)
    store = rag.store
    # What a writer killed between the Chroma write and the BM25 log leaves: generation bumped, record
    # stored, nothing logged.
    store.bump_generation()
    with store.write_lock():
        store.upsert([StoreRecord("orphan", NEW_TEXT, rag.encoder.encode_documents([NEW_TEXT])[0],
                                  {"source": "orphan"})])
    SharedSystemClient.clear_system_cache()
    again = RAGPipeline(index, model_name=str(tiny_model_path))
    assert ids_of(again.search("独角兽", k=5, mode="sparse")) == ["orphan"]
    assert set(again.sparse_index.ids()) == set(again.store.all_ids())
    assert load_index(index / "sparse_bm25").ids() == set(again.store.all_ids())  # and saved


@pytest.mark.server
@pytest.mark.slow
def test_server_bm25_side_is_cached_locally_and_caught_up_incrementally(
    chroma_server: str, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("M3E_RAG_SPARSE_CACHE", str(cache))
    collection = f"h4-{uuid.uuid4().hex[:8]}"

    def pipeline() -> RAGPipeline:
        return RAGPipeline(tmp_path / "unused", model_name=str(tiny_model_path), chroma_url=chroma_server,
                           collection=collection)

    first = pipeline()
    first.ingest(texts=TEXTS, sources=SOURCES)
    assert first.search("熊猫", k=1, mode="sparse")
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "CURRENT").exists()  # persisted locally, keyed by server+collection

    # A new process opens from the local cache: it reads no id list and no text from the server.
    second = pipeline()
    with monkeypatch.context() as m:
        m.setattr(ChromaStore, "all_ids", lambda self: pytest.fail("a rebuild read the whole collection"))
        m.setattr(ChromaStore, "iter_texts", lambda self, batch=0: pytest.fail("a rebuild read every text"))
        assert second.sparse_index.ids() == first.sparse_index.ids() and len(second.sparse_index) == len(TEXTS)
        assert ids_of(second.search("熊猫", k=1, mode="sparse")) == ids_of(first.search("熊猫", k=1, mode="sparse"))

    # Another machine (its own cache) writes to the server: only the changed ids' texts are fetched here.
    monkeypatch.setenv("M3E_RAG_SPARSE_CACHE", str(tmp_path / "other-machine"))
    other = pipeline()
    other.add_texts([NEW_TEXT], ids=["remote"], metadatas=[{"source": "remote"}])
    assert other.delete(source="wall") == 1
    monkeypatch.setenv("M3E_RAG_SPARSE_CACHE", str(cache))

    fetched: list[str] = []
    real_get = ChromaStore.get

    def recording_get(self: ChromaStore, ids: Any = None, *args: Any, **kwargs: Any) -> Any:
        fetched.extend(ids or ["<all>"])
        return real_get(self, ids, *args, **kwargs)

    monkeypatch.setattr(ChromaStore, "get", recording_get)
    assert ids_of(second.search("独角兽", k=5, mode="sparse")) == ["remote"]
    assert set(fetched) == {"remote"}  # the catch-up fetched the one new text (and the hit's record)
    assert ids_of(second.search("长城", k=5, mode="sparse")) == []
    assert set(second.sparse_index.ids()) == set(second.store.all_ids())
    # ... and saved it in the local cache: the next process starts from there.
    assert load_index(folders[0]).ids() == set(second.store.all_ids())
    assert np.isfinite([h.score for h in second.search("独角兽", k=2, mode="hybrid")]).all()
