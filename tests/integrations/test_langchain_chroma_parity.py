"""langchain_chroma.Chroma's own tests, ported to M3EVectorStore (a drop-in for Chroma).

Source: langchain-ai/langchain, libs/partners/chroma/tests/integration_tests/test_vectorstores.py.
Those tests use fake embeddings; here the embedding is fixed (the tiny M3E stand-in, random weights),
so a query equal to a stored text is its exact nearest neighbour (cosine 1, distance 0) and every
assertion on that holds as in Chroma. Where a Chroma test relies on a fake embedding's exact scores
for *different* texts, the port says so in a comment and asserts what holds for any embedding.
Tests that need Chroma's async client, Chroma Cloud or l2/ip spaces are left out (M3EVectorStore
runs async through LangChain's executor defaults and always uses cosine space; both are tested below).
"""

from __future__ import annotations

from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from langchain_core.documents import Document

from langchain_m3e import M3EEmbeddings, M3EVectorStore
from m3e_rag.errors import InputError, StoreError


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbeddings:
    return M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})


@pytest.fixture()
def client() -> chromadb.ClientAPI:
    SharedSystemClient.clear_system_cache()
    return chromadb.EphemeralClient()


def _plain(docs: list[Document]) -> list[tuple[str, dict]]:
    """Documents without their ids: Chroma's tests compare content and metadata."""
    return [(d.page_content, d.metadata) for d in docs]


def test_chroma(emb: M3EEmbeddings) -> None:
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=["foo", "bar", "baz"], embedding=emb)
    output = docsearch.similarity_search("foo", k=1)
    docsearch.delete_collection()
    assert _plain(output) == [("foo", {})]


async def test_chroma_async(emb: M3EEmbeddings) -> None:
    docsearch = await M3EVectorStore.afrom_texts(collection_name="test_collection", texts=["foo", "bar", "baz"],
                                                 embedding=emb)
    output = await docsearch.asimilarity_search("foo", k=1)
    await docsearch.adelete_collection()
    assert _plain(output) == [("foo", {})]


def test_chroma_with_metadatas_with_scores(emb: M3EEmbeddings) -> None:
    texts = ["foo", "bar", "baz"]
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=texts, embedding=emb,
                                          metadatas=[{"page": str(i)} for i in range(3)])
    output = docsearch.similarity_search_with_score("foo", k=1)
    docsearch.delete_collection()
    assert _plain([output[0][0]]) == [("foo", {"page": "0"})]
    assert output[0][1] == pytest.approx(0.0, abs=1e-5)  # a distance, as in Chroma


def test_chroma_with_metadatas_with_scores_using_vector(emb: M3EEmbeddings) -> None:
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=["foo", "bar", "baz"],
                                          embedding=emb, metadatas=[{"page": str(i)} for i in range(3)])
    output = docsearch.similarity_search_by_vector_with_relevance_scores(embedding=emb.embed_query("foo"), k=1)
    docsearch.delete_collection()
    assert _plain([output[0][0]]) == [("foo", {"page": "0"})]
    assert output[0][1] == pytest.approx(0.0, abs=1e-5)  # Chroma returns a distance here despite the name


def test_chroma_search_filter_with_scores(emb: M3EEmbeddings) -> None:
    texts = ["far", "bar", "baz"]
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=texts, embedding=emb,
                                          metadatas=[{"first_letter": t[0]} for t in texts])
    output1 = docsearch.similarity_search_with_score("far", k=1, filter={"first_letter": "f"})
    output2 = docsearch.similarity_search_with_score("far", k=1, filter={"first_letter": "b"})
    docsearch.delete_collection()
    assert _plain([output1[0][0]]) == [("far", {"first_letter": "f"})]
    assert output1[0][1] == pytest.approx(0.0, abs=1e-5)
    # Adapted: Chroma's fake embedding puts "bar" at distance exactly 1.0; with a real model only the
    # filter's effect holds for sure: a "b" text, at a positive distance.
    assert output2[0][0].metadata == {"first_letter": "b"} and output2[0][1] > 1e-4


def test_chroma_with_persistence(emb: M3EEmbeddings, tmp_path: Path) -> None:
    persist = str(tmp_path / "persist_dir")
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=["foo", "bar", "baz"],
                                          embedding=emb, persist_directory=persist)
    assert _plain(docsearch.similarity_search("foo", k=1)) == [("foo", {})]
    SharedSystemClient.clear_system_cache()
    reopened = M3EVectorStore(collection_name="test_collection", embedding_function=emb, persist_directory=persist)
    assert _plain(reopened.similarity_search("foo", k=1)) == [("foo", {})]
    reopened.delete_collection()


def test_chroma_mmr_and_mmr_by_vector(emb: M3EEmbeddings) -> None:
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=["foo", "bar", "baz"],
                                          embedding=emb)
    assert _plain(docsearch.max_marginal_relevance_search("foo", k=1)) == [("foo", {})]
    by_vector = docsearch.max_marginal_relevance_search_by_vector(emb.embed_query("foo"), k=1)
    assert _plain(by_vector) == [("foo", {})]
    docsearch.delete_collection()


def test_chroma_with_include_parameter(emb: M3EEmbeddings) -> None:
    docsearch = M3EVectorStore.from_texts(collection_name="test_collection", texts=["foo", "bar", "baz"],
                                          embedding=emb)
    output1 = docsearch.get(include=["embeddings"])
    output2 = docsearch.get()
    docsearch.delete_collection()
    assert output1["embeddings"] is not None and len(output1["embeddings"]) == 3
    assert output2["embeddings"] is None and sorted(output2["documents"]) == ["bar", "baz", "foo"]


def test_chroma_update_document(emb: M3EEmbeddings) -> None:
    original_doc = Document(page_content="foo", metadata={"page": "0"})
    docsearch = M3EVectorStore.from_documents(collection_name="test_collection", documents=[original_doc],
                                              embedding=emb, ids=["doc1"])
    old_embedding = docsearch.get(ids=["doc1"], include=["embeddings"])["embeddings"][0]
    updated_doc = Document(page_content="updated foo", metadata={"page": "0"})
    docsearch.update_document(document_id="doc1", document=updated_doc)
    output = docsearch.similarity_search("updated foo", k=1)
    new_embedding = docsearch.get(ids=["doc1"], include=["embeddings"])["embeddings"][0]
    docsearch.delete_collection()
    assert _plain(output) == [("updated foo", {"page": "0"})]
    assert np.allclose(new_embedding, emb.embed_documents(["updated foo"])[0], atol=1e-6)
    assert not np.allclose(new_embedding, old_embedding, atol=1e-3)


def test_chroma_with_relevance_score_custom_normalization_fn(emb: M3EEmbeddings) -> None:
    # Adapted: Chroma's test also passes collection_metadata={"hnsw:space": "l2"}; m3e-rag indexes are
    # always cosine space, so that is refused (tested below) and the custom function is tested alone.
    docsearch = M3EVectorStore.from_texts(collection_name="test1_collection", texts=["foo", "bar", "baz"],
                                          embedding=emb, metadatas=[{"page": str(i)} for i in range(3)],
                                          relevance_score_fn=lambda d: d * 0)
    output = docsearch.similarity_search_with_relevance_scores("foo", k=3)
    docsearch.delete_collection()
    assert [s for _, s in output] == [0.0, 0.0, 0.0] and output[0][0].page_content == "foo"
    with pytest.raises(InputError, match="always cosine space"):
        M3EVectorStore(embedding_function=emb, collection_metadata={"hnsw:space": "l2"}).get()


def test_init_from_client_and_client_settings(emb: M3EEmbeddings, client: chromadb.ClientAPI) -> None:
    store = M3EVectorStore(client=client, embedding_function=emb)
    store.add_texts(["foo"])
    assert client.get_collection(store.pipeline.collection).count() == 1
    SharedSystemClient.clear_system_cache()  # one in-memory Chroma per process and settings, as in Chroma
    M3EVectorStore(embedding_function=emb, client_settings=chromadb.config.Settings(anonymized_telemetry=False)).get()


def test_chroma_add_documents_no_and_mixed_metadata(emb: M3EEmbeddings) -> None:
    db = M3EVectorStore(embedding_function=emb)
    db.add_documents([Document(page_content="foo")])
    db.delete_collection()
    db = M3EVectorStore(embedding_function=emb, collection_name="mixed")
    docs = [Document(page_content="foo"), Document(page_content="bar", metadata={"baz": 1})]
    actual_ids = db.add_documents(docs, ids=["0", "1"])
    search = db.similarity_search("foo bar")
    db.delete_collection()
    assert actual_ids == ["0", "1"]
    assert sorted(_plain(search)) == sorted(_plain(docs))


def test_collection_none_after_delete_and_reset(emb: M3EEmbeddings, client: chromadb.ClientAPI) -> None:
    vectorstore = M3EVectorStore(client=client, collection_name="test_collection", embedding_function=emb)
    vectorstore.add_documents([Document(page_content="foo")])
    vectorstore.delete_collection()
    with pytest.raises(Exception, match="does not exist"):
        client.get_collection("test_collection")
    with pytest.raises(StoreError, match="reset_collection"):
        vectorstore.similarity_search("foo")
    vectorstore.reset_collection()
    assert client.get_collection("test_collection").count() == 0
    vectorstore.add_documents([Document(page_content="foo")])
    vectorstore.reset_collection()  # Chroma's test_reset_collection: same name, empty, still usable
    assert client.get_collection("test_collection").count() == 0 and vectorstore.get()["ids"] == []


def test_delete_where_clause(emb: M3EEmbeddings) -> None:
    vectorstore = M3EVectorStore(collection_name="test_collection", embedding_function=emb)
    vectorstore.add_documents([Document(page_content="foo", metadata={"test": "bar"}),
                               Document(page_content="bar", metadata={"test": "foo"})])
    vectorstore.delete(where={"test": "bar"})
    assert vectorstore.get()["documents"] == ["bar"]
    vectorstore.delete(where_document={"$contains": "ba"})
    assert vectorstore.get()["ids"] == []


# ------------------------------------------------------------------ beyond Chroma's own tests
def test_where_document_paging_and_large_updates(emb: M3EEmbeddings) -> None:
    store = M3EVectorStore(embedding_function=emb, collection_name="paging")
    ids = store.add_texts([f"第{i}段：熊猫" if i % 2 else f"第{i}段：长城" for i in range(10)],
                          metadatas=[{"i": i} for i in range(10)])
    assert {d.page_content for d in store.similarity_search("熊猫", k=10, where_document={"$contains": "长城"})} == {
        f"第{i}段：长城" for i in range(0, 10, 2)}
    vec = emb.embed_query("熊猫")
    hits = store.similarity_search_by_vector(vec, k=10, filter={"i": {"$gte": 5}}, where_document={"$contains": "熊猫"})
    assert sorted(d.metadata["i"] for d in hits) == [5, 7, 9]
    mmr = store.max_marginal_relevance_search_by_vector(vec, k=2, fetch_k=10, where_document={"$contains": "长城"})
    assert len(mmr) == 2 and all("长城" in d.page_content for d in mmr)
    page = store.get(limit=3, offset=2)
    assert len(page["ids"]) == 3 and page["ids"] == store.get()["ids"][2:5]
    assert store.get(where={"i": 3}, include=["metadatas"])["metadatas"] == [{"i": 3}]
    store.update_documents(ids[:2], [Document(page_content="新的一段", metadata={"i": 100})] * 2)
    assert store.get(ids=ids[:2])["documents"] == ["新的一段", "新的一段"]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_relevance_scores_are_in_0_1_in_every_mode(emb: M3EEmbeddings, mode: str) -> None:
    store = M3EVectorStore(embedding_function=emb, collection_name=f"rel-{mode}")
    store.add_texts(["熊猫吃竹子", "熊猫爱睡觉", "竹子长得快", "长城很长", "熊猫 熊猫 熊猫"])
    rel = store.similarity_search_with_relevance_scores("熊猫", k=5, mode=mode)
    assert rel and all(0.0 <= s <= 1.0 for _, s in rel)
    assert [s for _, s in rel] == sorted((s for _, s in rel), reverse=True)
    dist = store.similarity_search_with_score("熊猫", k=5, mode=mode)
    assert [round(1 - d, 6) for _, d in dist] == [round(s, 6) for _, s in rel]
    kept = store.as_retriever(search_type="similarity_score_threshold",
                              search_kwargs={"score_threshold": rel[1][1], "k": 5, "mode": mode}).invoke("熊猫")
    assert len(kept) >= 2 and all(d.id in {doc.id for doc, s in rel if s >= rel[1][1]} for d in kept)


def test_nested_metadata_raises_like_chroma_and_stores_nothing(emb: M3EEmbeddings) -> None:
    store = M3EVectorStore(embedding_function=emb, collection_name="nested")
    store.add_texts(["kept"])
    with pytest.raises(InputError, match=r"'author'.*Chroma stores only str, int, float, bool"):
        store.add_texts(["a", "b"], metadatas=[{"ok": 1}, {"author": {"name": "x"}}])
    assert store.get()["documents"] == ["kept"]
    store.add_texts(["tags"], metadatas=[{"tags": ["a", "b"]}])  # a flat list of one type is fine in Chroma 1.x
    assert store.get(where_document={"$contains": "tags"})["metadatas"] == [{"tags": ["a", "b"]}]


def test_chroma_names_are_checked(emb: M3EEmbeddings, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="only one of persist_directory, host and client"):
        M3EVectorStore(embedding_function=emb, persist_directory=str(tmp_path), host="127.0.0.1")
    with pytest.raises(InputError, match="chroma_cloud_api_key"):
        M3EVectorStore(embedding_function=emb, chroma_cloud_api_key="ck-1")
    with pytest.raises(InputError, match="give host= too"):
        M3EVectorStore(embedding_function=emb, headers={"Authorization": "Bearer x"})
    with pytest.raises(InputError, match="collection_name='a' and collection='b'"):
        M3EVectorStore(embedding_function=emb, collection_name="a", collection="b")


@pytest.mark.server
def test_server_with_headers(emb: M3EEmbeddings, chroma_server: str) -> None:
    host, port = chroma_server.rsplit("//", 1)[1].split(":")
    store = M3EVectorStore(collection_name="with_headers", embedding_function=emb, host=host, port=int(port),
                           headers={"X-Chroma-Token": "not-checked-by-this-server"})
    store.reset_collection()
    store.add_texts(["foo", "bar"])
    assert _plain(store.similarity_search("foo", k=1)) == [("foo", {})]
    store.delete_collection()
