"""Any LangChain Embeddings / LlamaIndex BaseEmbedding behind the stores: recorded, refused when swapped, hybrid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, FakeEmbeddings
from langchain_core.indexing import InMemoryRecordManager, index

from m3e_rag import M3EEncoder, ModelLoadError, ModelMismatchError, RAGPipeline

REPO = Path(__file__).resolve().parents[2]

TEXTS = ["大熊猫主要吃竹子，也吃少量水果。", "The Great Wall is a series of fortifications.", "北京是中国的首都。"]


def test_langchain_store_over_fake_embeddings_records_them_and_refuses_others(tmp_path: Path) -> None:
    from langchain_m3e import M3EVectorStore

    emb = DeterministicFakeEmbedding(size=16)
    store = M3EVectorStore.from_texts(TEXTS, emb, persist_directory=str(tmp_path), collection_name="docs",
                                      metadatas=[{"n": i} for i in range(3)])
    assert store.embeddings is emb
    # the vectors are the embeddings' own, stored unchanged
    rows = store.similarity_search_with_vectors(TEXTS[2], k=1)
    assert rows[0][0].page_content == TEXTS[2]
    assert rows[0][1] == pytest.approx(emb.embed_query(TEXTS[2]), abs=1e-6)
    # BM25 works whatever the embeddings: the Chinese keyword finds its passage in sparse and hybrid modes
    assert store.similarity_search("竹子", k=1, mode="sparse")[0].page_content == TEXTS[0]
    assert TEXTS[0] in [d.page_content for d in store.similarity_search("竹子", k=3, mode="hybrid")]
    recorded = store.pipeline.stats()["model"]
    assert recorded == "langchain:langchain_core.embeddings.fake.DeterministicFakeEmbedding"
    # the same embeddings open it again; another Embeddings (or M3E's model) is refused, nothing changed
    again = M3EVectorStore(persist_directory=str(tmp_path), collection_name="docs",
                           embedding_function=DeterministicFakeEmbedding(size=16))
    assert again.similarity_search(TEXTS[1], k=1)[0].page_content == TEXTS[1]
    other = M3EVectorStore(persist_directory=str(tmp_path), collection_name="docs",
                           embedding_function=FakeEmbeddings(size=16))
    with pytest.raises(ModelMismatchError, match="DeterministicFakeEmbedding"):
        other.add_texts(["x"])
    assert again.pipeline.store.count() == 3


def test_files_are_chunked_within_the_approximate_budget_and_langchain_index_syncs(tmp_path: Path) -> None:
    from langchain_core.documents import Document

    from langchain_m3e import M3EVectorStore

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("熊猫。" * 200 + "\n\n" + "bamboo forest " * 200, encoding="utf-8")
    store = M3EVectorStore(persist_directory=str(tmp_path / "db"),
                           embedding_function=DeterministicFakeEmbedding(size=8), chunk_tokens=64, overlap_tokens=8)
    report = store.ingest([folder])
    assert report.chunks_added > 4
    budget = store.pipeline.encoder.count_tokens
    chunks = store.pipeline.get_page()
    assert all(budget([c.text])[0] - 2 <= 64 for c in chunks)
    # LangChain's indexing API over the same store: re-run skips, a removed document is deleted
    manager = InMemoryRecordManager("ns")
    manager.create_schema()
    docs = [Document(page_content=t, metadata={"source": f"s{i}"}) for i, t in enumerate(TEXTS)]
    options = {"cleanup": "full", "source_id_key": "source", "key_encoder": "sha256"}
    assert index(docs, manager, store, **options)["num_added"] == 3
    assert index(docs, manager, store, **options)["num_skipped"] == 3
    # (full cleanup deletes what the record manager wrote: the ingested file's chunks are not its to delete)
    assert index(docs[:2], manager, store, **options)["num_deleted"] == 1
    assert store.pipeline.store.count() == len(chunks) + 2


def test_llamaindex_store_over_mock_embedding_and_reopening_without_it(tmp_path: Path) -> None:
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.vector_stores.m3e import M3EVectorStore

    emb = MockEmbedding(embed_dim=8)
    store = M3EVectorStore(persist_dir=str(tmp_path), collection_name="docs", embed_model=emb)
    built = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=emb,
                                            storage_context=StorageContext.from_defaults(vector_store=store))
    hits = built.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid").retrieve("竹子")
    assert hits[0].node.get_content() == TEXTS[0]
    assert store.pipeline.stats()["model"].startswith("llamaindex:llama_index.core.embeddings.mock_embed_model.")
    with pytest.raises(ModelLoadError, match="names framework embeddings"):
        M3EVectorStore(persist_dir=str(tmp_path), collection_name="docs").pipeline.search("竹子", mode="dense")
    with pytest.raises(ModelLoadError, match="embed_model=") as info:
        M3EEncoder(store.pipeline.stats()["model"]).load()
    assert "LangChain or LlamaIndex" in str(info.value)


@pytest.mark.slow
def test_sparse_search_never_loads_the_model_weights(tmp_path: Path, bilingual_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(bilingual_model_path))
    rag.ingest(texts=TEXTS, sources=["panda", "wall", "beijing"])
    script = (
        "import json\n"
        "from m3e_rag import RAGPipeline\n"
        f"rag = RAGPipeline({str(tmp_path / 'idx')!r}, model_name={str(bilingual_model_path)!r})\n"
        "hits = rag.search('竹子', k=1, mode='sparse')\n"
        "print(json.dumps({'source': hits[0].source, 'loaded': rag.encoder.is_loaded}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'integrations'}"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"source": "panda", "loaded": False}  # found by BM25, the weights never loaded
