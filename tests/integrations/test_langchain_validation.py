"""M3EVectorStore validates like the engine, and takes Chroma's constructor options with Chroma's meaning.

Issue 24's row: a string where a list is expected, NaN thresholds and NaN/inf metadata values are
refused by name (nothing stored). Issue 20's rows: ``batch_size`` as LangChain's machinery passes it,
``create_collection_if_not_exists=False``, ``collection_metadata={"hnsw:space": "l2"}`` (refused, with
the reason and the way to Chroma's l2 numbers), and ``similarity_search_with_vectors``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from langchain_core.documents import Document

from langchain_m3e import M3EEmbeddings, M3ERetriever, M3EVectorStore
from m3e_rag.errors import InputError, StoreError
from m3e_rag.index.integrity import collection_id
from m3e_rag.index.sparse.sync import SPARSE_CACHE_ENV

TEXTS = ["大熊猫主要吃竹子。", "长城很长。", "西湖龙井是绿茶。"]


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbeddings:
    return M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})


@pytest.fixture()
def store(emb: M3EEmbeddings, tmp_path: Path) -> M3EVectorStore:
    store = M3EVectorStore(collection_name="validation", embedding_function=emb, persist_directory=tmp_path / "db")
    store.add_texts(TEXTS, ids=["panda", "wall", "tea"])
    return store


# ------------------------------------------------------------------ issue 24: refused by name, nothing stored
@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_string_for_texts_is_refused(store: M3EVectorStore, batch_size: int | None) -> None:
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    with pytest.raises(InputError, match=r"texts must be a list, got the single string 'hello'"):
        store.add_texts("hello", **kwargs)
    assert sorted(store.get()["ids"]) == ["panda", "tea", "wall"]


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -math.inf])
async def test_a_threshold_that_is_not_finite_is_refused(store: M3EVectorStore, threshold: float) -> None:
    with pytest.raises(InputError, match="score_threshold must be a finite number"):
        store.similarity_search_with_relevance_scores("熊猫", k=2, score_threshold=threshold)
    with pytest.raises(InputError, match="score_threshold must be a finite number"):
        await store.asimilarity_search_with_relevance_scores("熊猫", k=2, score_threshold=threshold)
    with pytest.raises(InputError, match="score_threshold must be a finite number"):
        store.as_retriever(search_type="similarity_score_threshold", search_kwargs={"score_threshold": threshold})
    with pytest.raises(InputError, match="score_threshold must be a finite number"):
        M3ERetriever(vectorstore=store, score_threshold=threshold)
    with pytest.raises(InputError, match="score_threshold must be a finite number"):
        M3ERetriever(vectorstore=store).invoke("熊猫", score_threshold=threshold)
    # a finite threshold still filters as before
    kept = store.similarity_search_with_relevance_scores("大熊猫主要吃竹子。", k=3, score_threshold=0.99)
    assert [d.id for d, _ in kept] == ["panda"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan]], ids=["nan", "inf", "-inf", "list"])
def test_metadata_that_is_not_finite_is_refused(store: M3EVectorStore, value: Any) -> None:
    with pytest.raises(InputError, match=r"'x'.*finite"):
        store.add_texts(["新的一段。"], metadatas=[{"x": value, "ok": 1}], ids=["new"])
    with pytest.raises(InputError, match=r"'x'.*finite"):
        store.add_documents([Document(page_content="新的一段。", metadata={"x": value})], ids=["new"])
    with pytest.raises(InputError, match=r"'x'.*finite"):
        store.update_document("panda", Document(page_content="改过的。", metadata={"x": value}))
    if not isinstance(value, list):  # ingest refuses list values of its own
        with pytest.raises(InputError, match=r"'x'.*finite"):
            store.pipeline.ingest(texts=["新的一段。"], sources=["new.txt"], metadatas=[{"x": value}])
    assert sorted(store.get()["ids"]) == ["panda", "tea", "wall"]
    assert store.get(ids=["panda"])["documents"] == [TEXTS[0]]


# ------------------------------------------------------------------ batch_size, as LangChain's index() passes it
def test_batch_size_writes_in_steps(store: M3EVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    add_texts = store.pipeline.add_texts

    def spy(texts: Any, metadatas: Any = None, ids: Any = None, embeddings: Any = None) -> list[str]:
        sizes.append(len(texts))
        return add_texts(texts, metadatas, ids, embeddings)

    monkeypatch.setattr(store.pipeline, "add_texts", spy)
    docs = [Document(page_content=f"第{i}段。", metadata={"n": i}, id=f"d{i}") for i in range(5)]
    assert store.add_documents(docs, batch_size=2) == [f"d{i}" for i in range(5)]
    assert sizes == [2, 2, 1]
    assert store.get(ids=["d4"])["metadatas"] == [{"n": 4}]
    sizes.clear()
    ids = store.add_texts((f"第{i}句。" for i in range(3)), batch_size=1)  # a generator, as Iterable[str] allows
    assert sizes == [1, 1, 1] and len(store.get_by_ids(ids)) == 3


def test_a_call_split_in_steps_is_checked_whole_first(store: M3EVectorStore) -> None:
    before = sorted(store.get()["ids"])
    with pytest.raises(InputError, match=r"Duplicate ids in one call: \['x'\]"):
        store.add_texts(["一", "二", "三"], ids=["x", "y", "x"], batch_size=2)
    with pytest.raises(InputError, match="Got 2 metadatas for 3 texts"):
        store.add_texts(["一", "二", "三"], metadatas=[{}, {}], batch_size=2)
    with pytest.raises(InputError, match="metadatas must be a list"):
        store.add_texts(["一", "二", "三"], metadatas={"a": 1}, batch_size=2)  # type: ignore[arg-type]
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            store.add_documents([Document(page_content="一")], batch_size=bad)
    with pytest.raises(InputError, match=r"unexpected \(extra\) argument\(s\) \['bogus_option'\]"):
        store.add_documents([Document(page_content="一")], batch_size=2, bogus_option=1)
    assert sorted(store.get()["ids"]) == before


# ------------------------------------------------------------------ create_collection_if_not_exists=False
def test_open_existing_only_in_a_folder(emb: M3EEmbeddings, store: M3EVectorStore, tmp_path: Path) -> None:
    existing = M3EVectorStore(collection_name="validation", embedding_function=emb, persist_directory=tmp_path / "db",
                              create_collection_if_not_exists=False)
    assert sorted(existing.get()["ids"]) == ["panda", "tea", "wall"]
    with pytest.raises(StoreError, match="Collection 'other' does not exist at .*create_collection_if_not_exists"):
        M3EVectorStore(collection_name="other", embedding_function=emb, persist_directory=tmp_path / "db",
                       create_collection_if_not_exists=False)
    assert collection_id(tmp_path / "db", "other") is None
    with pytest.raises(StoreError, match="does not exist"):
        M3EVectorStore(embedding_function=emb, persist_directory=tmp_path / "none",
                       create_collection_if_not_exists=False)
    assert not (tmp_path / "none").exists()  # nothing was created
    for bad in (None, 0, "no"):
        with pytest.raises(InputError, match="create_collection_if_not_exists must be True or False"):
            M3EVectorStore(embedding_function=emb, persist_directory=tmp_path / "db",
                           create_collection_if_not_exists=bad)  # type: ignore[arg-type]


def test_open_existing_only_with_a_client(emb: M3EEmbeddings) -> None:
    SharedSystemClient.clear_system_cache()
    client = chromadb.EphemeralClient()
    with pytest.raises(StoreError, match="Collection 'kept' does not exist at the given Chroma client"):
        M3EVectorStore(client=client, collection_name="kept", embedding_function=emb,
                       create_collection_if_not_exists=False)
    M3EVectorStore(client=client, collection_name="kept", embedding_function=emb).add_texts(["foo"], ids=["f"])
    again = M3EVectorStore(client=client, collection_name="kept", embedding_function=emb,
                           create_collection_if_not_exists=False)
    assert again.get()["ids"] == ["f"]


@pytest.mark.server
def test_open_existing_only_on_a_server(
    emb: M3EEmbeddings, chroma_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SPARSE_CACHE_ENV, str(tmp_path / "bm25"))
    host, port = chroma_server.rsplit("//", 1)[1].split(":")
    where = {"host": host, "port": int(port), "collection_name": "open_existing_only", "embedding_function": emb}
    with pytest.raises(StoreError, match=f"does not exist at {chroma_server}"):
        M3EVectorStore(**where, create_collection_if_not_exists=False)
    M3EVectorStore(**where).add_texts(["foo"], ids=["f"])
    try:
        assert M3EVectorStore(**where, create_collection_if_not_exists=False).get()["ids"] == ["f"]
    finally:
        M3EVectorStore(**where).delete_collection()


# ------------------------------------------------------------------ collection_metadata hnsw:space
@pytest.mark.parametrize("space", ["l2", "ip"])
def test_other_spaces_are_refused_at_construction_with_the_reason(
    emb: M3EEmbeddings, tmp_path: Path, space: str
) -> None:
    with pytest.raises(InputError, match=rf"'hnsw:space': '{space}'.*always cosine space.*relevance_score_fn"):
        M3EVectorStore(embedding_function=emb, persist_directory=tmp_path / "db",
                       collection_metadata={"hnsw:space": space})
    assert not (tmp_path / "db").exists()
    with pytest.raises(InputError, match="reserved for m3e-rag"):  # the engine's checks, now at construction
        M3EVectorStore(embedding_function=emb, persist_directory=tmp_path / "db",
                       collection_metadata={"m3e_rag:model": "x"})
    ok = M3EVectorStore(embedding_function=emb, persist_directory=tmp_path / "db",
                        collection_metadata={"hnsw:space": "cosine", "team": "kb"})
    ok.add_texts(["foo"])
    assert ok.pipeline.store._collection.metadata["team"] == "kb"


def test_the_named_relevance_function_gives_chromas_l2_numbers(store: M3EVectorStore, emb: M3EEmbeddings) -> None:
    """The refusal's advice holds: relevance_score_fn=1 - sqrt(2) * d equals Chroma's l2 relevance, same order."""
    SharedSystemClient.clear_system_cache()
    l2 = chromadb.EphemeralClient().create_collection("l2_space", configuration={"hnsw": {"space": "l2"}})
    stored = store.get(include=["embeddings", "documents"])
    l2.add(ids=stored["ids"], embeddings=stored["embeddings"], documents=stored["documents"])
    query = "熊猫吃什么？"
    chroma = l2.query(query_embeddings=[emb.embed_query(query)], n_results=3)
    chroma_rel = [1.0 - d / math.sqrt(2) for d in chroma["distances"][0]]  # langchain_chroma's l2 relevance
    as_l2 = M3EVectorStore(pipeline=store.pipeline, relevance_score_fn=lambda d: 1 - math.sqrt(2) * d)
    ours = as_l2.similarity_search_with_relevance_scores(query, k=3)
    assert [d.id for d, _ in ours] == chroma["ids"][0]
    assert [s for _, s in ours] == pytest.approx(chroma_rel, abs=1e-4)


# ------------------------------------------------------------------ similarity_search_with_vectors
def test_similarity_search_with_vectors(store: M3EVectorStore, emb: M3EEmbeddings) -> None:
    hits = store.similarity_search_with_vectors(TEXTS[1], k=2)
    assert [d.id for d, _ in hits] == [d.id for d in store.similarity_search(TEXTS[1], k=2)]
    assert hits[0][0] == Document(page_content=TEXTS[1], metadata={}, id="wall")
    stored = store.get(ids=[d.id for d, _ in hits], include=["embeddings"])
    rows = dict(zip(stored["ids"], stored["embeddings"], strict=True))
    for doc, vector in hits:
        assert isinstance(vector, np.ndarray) and vector.shape == (len(emb.embed_query("x")),)
        assert np.allclose(vector, rows[doc.id])
    assert np.allclose(hits[0][1], emb.embed_documents([TEXTS[1]])[0], atol=1e-5)
    only_tea = store.similarity_search_with_vectors("熊猫", k=3, filter={"missing": 1})
    assert only_tea == []
    assert [d.id for d, _ in store.similarity_search_with_vectors("绿茶", k=3, where_document={"$contains": "龙井"})] \
        == ["tea"]
    with pytest.raises(InputError, match="bogus_option"):
        store.similarity_search_with_vectors("熊猫", bogus_option=1)


@pytest.mark.parametrize("batch_size", [None, 1])
@pytest.mark.parametrize("texts", [{"a": 1, "b": 2}, 5], ids=["dict", "number"])
def test_texts_that_are_not_a_list_are_refused_by_the_engine(
    store: M3EVectorStore, texts: Any, batch_size: int | None
) -> None:
    with pytest.raises(InputError, match="texts must be a list"):
        store.add_texts(texts, batch_size=batch_size)
    assert sorted(store.get()["ids"]) == ["panda", "tea", "wall"]
