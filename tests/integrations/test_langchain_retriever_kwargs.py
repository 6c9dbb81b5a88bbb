"""Retrievers honour k, search_kwargs, filters and modes (before: search_kwargs and top_k were silently ignored)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from langchain_m3e import M3EEmbeddings, M3ERetriever, M3EVectorStore
from m3e_rag.errors import InputError

TEXTS = [
    ("大熊猫主要吃竹子。", "panda"),
    ("熊猫宝宝很小。", "panda"),
    ("竹子长得很快。", "plant"),
    ("长城很长，有几千公里。", "wall"),
    ("西湖龙井是绿茶。", "tea"),
    ("熊猫也吃苹果。", "panda"),
]


@pytest.fixture(scope="module")
def store(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> M3EVectorStore:
    emb = M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})
    store = M3EVectorStore(embedding_function=emb, persist_directory=str(tmp_path_factory.mktemp("ret") / "db"))
    store.add_texts([t for t, _ in TEXTS], metadatas=[{"topic": k} for _, k in TEXTS], ids=[str(i) for i in range(6)])
    return store


def test_k_top_k_and_search_kwargs_are_honoured(store: M3EVectorStore) -> None:
    assert len(M3ERetriever(vectorstore=store, search_kwargs={"k": 2}).invoke("熊猫")) == 2
    assert len(M3ERetriever(vectorstore=store, top_k=1).invoke("熊猫")) == 1
    retriever = M3ERetriever(vectorstore=store, k=3)
    assert len(retriever.invoke("熊猫")) == 3
    assert len(retriever.invoke("熊猫", k=1)) == 1 and len(retriever.invoke("熊猫", top_k=2)) == 2
    assert len(asyncio.run(retriever.ainvoke("熊猫", k=1))) == 1
    with pytest.raises(InputError, match=r"k=3 conflicts with search_kwargs\['k'\]"):
        M3ERetriever(vectorstore=store, k=3, search_kwargs={"k": 2})


def test_retriever_filters_and_modes(store: M3EVectorStore) -> None:
    sparse = M3ERetriever(vectorstore=store, search_kwargs={"k": 5, "mode": "sparse", "filter": {"topic": "panda"}})
    assert {d.metadata["topic"] for d in sparse.invoke("熊猫")} == {"panda"}
    by_text = M3ERetriever(vectorstore=store, k=6, where_document={"$contains": "竹子"}, mode="hybrid")
    assert sorted(d.id for d in by_text.invoke("熊猫")) == ["0", "2"]
    assert [d.id for d in by_text.invoke("熊猫", where_document={"$contains": "龙井"})] == ["4"]


@pytest.mark.parametrize("search_type", ["similarity", "mmr", "similarity_score_threshold"])
def test_as_retriever_honours_search_kwargs(store: M3EVectorStore, search_type: str) -> None:
    search_kwargs: dict = {"k": 2, "filter": {"topic": "panda"}, "where_document": {"$contains": "吃"},
                           "mode": "hybrid"}
    if search_type == "mmr":
        search_kwargs |= {"fetch_k": 6, "lambda_mult": 0.3}
    if search_type == "similarity_score_threshold":
        search_kwargs |= {"score_threshold": 0.0}
    docs = store.as_retriever(search_type=search_type, search_kwargs=search_kwargs).invoke("熊猫")
    assert sorted(d.id for d in docs) == ["0", "5"]  # the only panda texts containing 吃
    one = store.as_retriever(search_type=search_type, search_kwargs=search_kwargs).invoke("熊猫", k=1)
    assert len(one) == 1


def test_as_retriever_moves_search_keywords_into_search_kwargs(store: M3EVectorStore) -> None:
    # LangChain's VectorStoreRetriever would silently ignore k=2 here.
    retriever = store.as_retriever(k=2, mode="sparse")
    assert retriever.search_kwargs == {"k": 2, "mode": "sparse"} and len(retriever.invoke("熊猫")) == 2
    with pytest.raises(InputError, match=r"search_type='similarity'\) search_kwargs.*\['lambda_mult'\]"):
        store.as_retriever(search_kwargs={"lambda_mult": 0.2})
