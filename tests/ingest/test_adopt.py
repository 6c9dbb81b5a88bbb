"""Adopting Chroma collections written by langchain_chroma.Chroma and LlamaIndex's ChromaVectorStore (issue 20).

The foreign collections are written by the real frameworks (tests/support/foreign_chroma.py) with the
bilingual stand-in; adopting must change nothing but the collection's metadata, or copy an l2 collection
into a new cosine one, and refuse everything it cannot serve with a message naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError, ModelMismatchError, StoreError
from m3e_rag.index.chroma import ChromaStore
from m3e_rag.index.guard import META_PREFIX
from m3e_rag.ingest import adopt as adopt_module
from m3e_rag.ingest.adopt import MIN_SAMPLE_COSINE, AdoptReport, adopt_collection, embedded_text
from m3e_rag.pipeline import RAGPipeline
from tests.support.foreign_chroma import (
    CORPUS,
    LC_COLLECTION,
    LI_COLLECTION,
    QUERIES,
    langchain_folder,
    llamaindex_folder,
    same_records,
    snapshot,
)


@pytest.fixture(scope="module")
def e5(bilingual_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(bilingual_model_path)).load()


@pytest.fixture(scope="module")
def minilm(minilm_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(minilm_model_path)).load()


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(tiny_model_path)).load()


def adopt(folder: Path, encoder: M3EEncoder, collection: str = LC_COLLECTION, **kwargs: object) -> AdoptReport:
    return adopt_collection(folder, collection=collection, encoder=encoder, chunk_tokens=256, overlap_tokens=32,
                            **kwargs)  # type: ignore[arg-type]


def assert_found_in_every_mode(rag: RAGPipeline) -> None:
    for query, source in QUERIES:
        for mode in ("dense", "sparse", "hybrid"):
            hits = rag.search(query, k=2, mode=mode)  # type: ignore[arg-type]
            assert hits and hits[0].source == source, (query, mode, [h.source for h in hits])


@pytest.mark.slow
def test_langchain_cosine_collection_adopted_in_place(tmp_path: Path, e5: M3EEncoder,
                                                      bilingual_model_path: Path) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    before = snapshot(folder, LC_COLLECTION)
    calls: list[tuple[str, int, int]] = []
    report = adopt(folder, e5, progress=lambda *a: calls.append(a))
    assert (report.records, report.space, report.copied_to, report.collection) == (6, "cosine", None, LC_COLLECTION)
    assert report.model == e5.model_name and report.dim == 384 and report.bm25_built
    assert report.sample_size == 6 and report.sample_cosine > 0.999
    assert calls and calls[-1] == ("bm25", 6, 6)

    after = snapshot(folder, LC_COLLECTION)
    assert same_records(before, after)  # ids, texts, metadata and vector bytes untouched
    assert after["space"] == "cosine"
    assert after["metadata"]["owner"] == "team-a"  # the collection's own keys are kept
    assert after["metadata"][f"{META_PREFIX}model"] == e5.model_name and after["metadata"][f"{META_PREFIX}dim"] == 384

    rag = RAGPipeline(folder, encoder=e5, collection=LC_COLLECTION)
    assert_found_in_every_mode(rag)

    from langchain_m3e import M3EEmbeddings, M3EVectorStore

    store = M3EVectorStore(collection_name=LC_COLLECTION, persist_directory=str(folder),
                           embedding=M3EEmbeddings(model_name=str(bilingual_model_path)))
    for query, source in QUERIES:
        for mode in ("dense", "sparse", "hybrid"):
            docs = store.similarity_search(query, k=1, mode=mode)
            assert docs[0].metadata["source"] == source and docs[0].id is not None, (query, mode)
    assert same_records(before, snapshot(folder, LC_COLLECTION))  # searching wrote nothing either


@pytest.mark.slow
def test_llamaindex_collection_adopted_and_read_back_as_nodes(tmp_path: Path, e5: M3EEncoder,
                                                               bilingual_model_path: Path) -> None:
    folder = llamaindex_folder(tmp_path / "li", bilingual_model_path)
    before = snapshot(folder, LI_COLLECTION)
    report = adopt(folder, e5, collection=LI_COLLECTION)
    # LlamaIndex embedded "file_path: ...\n\ntext": rebuilt from _node_content, the vectors match exactly.
    assert report.sample_cosine > 0.999
    assert same_records(before, snapshot(folder, LI_COLLECTION))

    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.embeddings.m3e import M3EEmbedding
    from llama_index.vector_stores.m3e import M3EVectorStore

    store = M3EVectorStore(persist_dir=str(folder), collection_name=LI_COLLECTION,
                           embed_model=M3EEmbedding(model_name=str(bilingual_model_path)))
    for query, source in QUERIES:
        for mode in ("default", "sparse", "hybrid"):
            vector = list(map(float, e5.encode_query(query)))
            res = store.query(VectorStoreQuery(query_str=query, query_embedding=vector, similarity_top_k=1, mode=mode))
            node = res.nodes[0]
            assert node.metadata["file_path"] == f"/data/docs/{source}", (query, mode)  # the node, from _node_content
            assert node.node_id == res.ids[0] and node.get_content() == dict(CORPUS)[source]


def test_embedded_text_is_llamaindex_embed_text() -> None:
    from llama_index.core.schema import MetadataMode, TextNode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    nodes = [
        TextNode(text="正文", metadata={"file_path": "/a.md", "file_name": "a.md", "page": 3},
                 excluded_embed_metadata_keys=["file_name"]),
        TextNode(text="body", metadata={"k": "v"}, metadata_template="{key}={value}", metadata_separator=" | ",
                 text_template="[{metadata_str}] {content}"),
        TextNode(text="plain", metadata={"x": 1}, excluded_embed_metadata_keys=["x"]),
    ]
    for node in nodes:
        meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
        assert embedded_text(node.get_content(MetadataMode.NONE), meta) == node.get_content(MetadataMode.EMBED)
    assert embedded_text("text", {"source": "a"}) == "text"  # a LangChain record: its text
    assert embedded_text("text", {"_node_content": "not json"}) == "text"


def test_l2_collection_refused_naming_copy_to(tmp_path: Path, e5: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=False)  # langchain_chroma's default: Chroma's l2
    before = snapshot(folder, LC_COLLECTION)
    with pytest.raises(InputError, match=r"'l2' distance \(the default when no hnsw:space is set\).*--copy-to NEW"):
        adopt(folder, e5)
    after = snapshot(folder, LC_COLLECTION)
    assert same_records(before, after) and after["metadata"] == before["metadata"]
    assert not list(folder.glob("sparse_bm25*"))


def test_ip_collection_refused_naming_copy_to(tmp_path: Path, e5: M3EEncoder) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    texts = [text for _, text in CORPUS]
    client.create_collection("ip_docs", configuration={"hnsw": {"space": "ip"}}, embedding_function=None).add(
        ids=[str(i) for i in range(len(texts))], documents=texts, embeddings=e5.encode_documents(texts))
    with pytest.raises(InputError, match=r"uses Chroma's 'ip' distance; m3e-rag searches in cosine .*--copy-to NEW"):
        adopt(tmp_path / "db", e5, collection="ip_docs")


@pytest.mark.slow
def test_copy_to_makes_a_searchable_cosine_copy_and_leaves_the_original(tmp_path: Path, e5: M3EEncoder,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=False)
    before = snapshot(folder, LC_COLLECTION)
    calls: list[tuple[str, int, int]] = []
    written: dict[str, bytes] = {}
    real_upsert = ChromaStore.upsert

    def recording_upsert(self: ChromaStore, records: list) -> None:
        written.update({r.id: r.embedding.tobytes() for r in records})
        real_upsert(self, records)

    monkeypatch.setattr(ChromaStore, "upsert", recording_upsert)
    report = adopt(folder, e5, copy_to="lc_docs_cosine", progress=lambda *a: calls.append(a))
    assert (report.space, report.copied_to, report.collection, report.source) == (
        "l2", "lc_docs_cosine", "lc_docs_cosine", LC_COLLECTION)
    assert ("copy", 6, 6) in calls

    original = snapshot(folder, LC_COLLECTION)
    assert same_records(before, original) and original["metadata"] == before["metadata"] and original["space"] == "l2"
    assert [written[i] for i in before["ids"]] == before["vectors"]  # handed to Chroma byte for byte
    copy = snapshot(folder, "lc_docs_cosine")
    assert all(copy[key] == before[key] for key in ("ids", "documents", "metadatas"))
    # Read back, Chroma's cosine index may move a component by a rounding step (seen: 7e-9 once in 2,304, with
    # chromadb's own upsert too); the vectors are the same.
    assert np.allclose(np.frombuffer(b"".join(copy["vectors"]), np.float32),
                       np.frombuffer(b"".join(before["vectors"]), np.float32), rtol=0, atol=1e-7)
    assert copy["space"] == "cosine" and copy["metadata"][f"{META_PREFIX}model"] == e5.model_name

    assert_found_in_every_mode(RAGPipeline(folder, encoder=e5, collection="lc_docs_cosine"))


def test_copy_to_refuses_an_existing_collection(tmp_path: Path, e5: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=False)
    langchain_folder(folder, e5, cosine=True, name="taken")
    with pytest.raises(InputError, match="'taken' already exists.*new name"):
        adopt(folder, e5, copy_to="taken")
    with pytest.raises(InputError, match="new collection"):
        adopt(folder, e5, copy_to=LC_COLLECTION)


@pytest.mark.slow
def test_a_copy_that_fails_midway_is_dropped(tmp_path: Path, e5: M3EEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=False)
    before = snapshot(folder, LC_COLLECTION)
    monkeypatch.setattr(adopt_module, "COPY_PAGE", 2)
    real_upsert = ChromaStore.upsert
    written: list[int] = []

    def failing_upsert(self: ChromaStore, records: list) -> None:  # the second page fails
        if written:
            raise StoreError("disk full")
        written.append(len(records))
        real_upsert(self, records)

    monkeypatch.setattr(ChromaStore, "upsert", failing_upsert)
    with pytest.raises(StoreError, match="disk full"):
        adopt(folder, e5, copy_to="half_copy")
    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    assert [c.name for c in client.list_collections()] == [LC_COLLECTION]
    assert same_records(before, snapshot(folder, LC_COLLECTION))


@pytest.mark.slow
def test_another_model_of_the_same_dimension_is_refused(tmp_path: Path, e5: M3EEncoder, minilm: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    before = snapshot(folder, LC_COLLECTION)
    with pytest.raises(ModelMismatchError) as caught:
        adopt(folder, minilm)
    message = str(caught.value)
    assert "median cosine of" in message and "A different model built this index" in message
    median = float(message.split("median cosine of ")[1].split(" ")[0])
    assert median < 0.3 < MIN_SAMPLE_COSINE  # measured 0.05: unrelated spaces, far below the threshold
    assert snapshot(folder, LC_COLLECTION)["metadata"] == before["metadata"]


def test_another_dimension_is_refused_naming_both(tmp_path: Path, e5: M3EEncoder, tiny: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    with pytest.raises(ModelMismatchError, match=r"holds 384-d vectors, but model .* makes 64-d vectors"):
        adopt(folder, tiny)


def test_missing_collection_and_folder_without_chroma_are_refused(tmp_path: Path, e5: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    with pytest.raises(InputError, match=r"no collection 'nope' at .*\(collections there: lc_docs\)"):
        adopt(folder, e5, collection="nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match="no Chroma database"):
        adopt(empty, e5)
    assert not (empty / "chroma.sqlite3").exists()  # nothing was created there


def test_an_m3e_rag_collection_is_refused_as_already_adopted(tmp_path: Path, e5: M3EEncoder) -> None:
    rag = RAGPipeline(tmp_path / "idx", encoder=e5, collection="mine")
    rag.add_texts(["大熊猫吃竹子。"])
    with pytest.raises(InputError, match="already an m3e-rag collection .*nothing to adopt"):
        adopt(tmp_path / "idx", e5, collection="mine")


def test_an_empty_collection_is_refused(tmp_path: Path, e5: M3EEncoder) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False))
    client.create_collection("empty_one", metadata={"hnsw:space": "cosine"})
    with pytest.raises(InputError, match="holds no records: there is nothing to adopt"):
        adopt(tmp_path / "db", e5, collection="empty_one")


def test_opening_a_foreign_collection_names_the_adopt_command(tmp_path: Path, e5: M3EEncoder) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    rag = RAGPipeline(folder, encoder=e5, collection=LC_COLLECTION)
    with pytest.raises(ModelMismatchError) as caught:
        rag.search("大熊猫", k=1)
    message = str(caught.value)
    assert "langchain_chroma.Chroma or LlamaIndex's ChromaVectorStore" in message
    assert f"m3e-rag adopt --index {folder.resolve()} --collection {LC_COLLECTION} --model {e5.model_name}" in message
    # RAGPipeline.adopt(): the same pipeline, refused a moment ago, searches once adopted.
    report = rag.adopt()
    assert report.collection == LC_COLLECTION and report.copied_to is None
    assert rag.search("大熊猫吃竹子吗？", k=1, mode="hybrid")[0].source == "panda.md"


def test_doctor_and_a_given_client_name_the_way_to_adopt(tmp_path: Path, e5: M3EEncoder) -> None:
    from m3e_rag.index.doctor import diagnose

    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    finding = next(c for c in diagnose(folder, LC_COLLECTION).checks if c.name == "model")
    assert not finding.ok and f"m3e-rag adopt --index {folder} --collection {LC_COLLECTION}" in finding.detail
    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    rag = RAGPipeline(tmp_path / "unused", client=client, collection=LC_COLLECTION, encoder=e5)
    with pytest.raises(ModelMismatchError, match=r"RAGPipeline\(client=<this client>, .*\)\.adopt\(\)"):
        rag.search("大熊猫", k=1)
    assert rag.adopt().records == len(CORPUS)  # what the message says works on the same client
    assert rag.search("大熊猫吃竹子吗？", k=1, mode="hybrid")[0].source == "panda.md"


@pytest.mark.slow
@pytest.mark.server
def test_adopt_on_a_chroma_server(chroma_server: str, e5: M3EEncoder, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_chroma import Chroma

    from tests.support.foreign_chroma import EncoderEmbeddings

    monkeypatch.setenv("M3E_RAG_SPARSE_CACHE", str(tmp_path / "bm25-cache"))
    host, port = chroma_server.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    Chroma(collection_name="server_lc", embedding_function=EncoderEmbeddings(e5), client=client,
           collection_metadata={"hnsw:space": "cosine", "owner": "team-b"}).add_texts(
        [t for _, t in CORPUS], metadatas=[{"source": s} for s, _ in CORPUS], ids=[f"s-{i}" for i in range(6)])
    before = snapshot(chroma_server, "server_lc")
    report = adopt_collection(chroma_url=chroma_server, collection="server_lc", encoder=e5, chunk_tokens=256,
                              overlap_tokens=32)
    assert report.location == chroma_server and report.bm25_built
    after = snapshot(chroma_server, "server_lc")
    assert same_records(before, after) and after["metadata"]["owner"] == "team-b"
    assert_found_in_every_mode(RAGPipeline(tmp_path, chroma_url=chroma_server, encoder=e5, collection="server_lc"))
    assert json.dumps(report.to_dict())  # JSON-ready
    assert np.isfinite(report.sample_cosine)
