"""M3EVectorStore: LlamaIndex's vector-store contract over m3e-rag's index (issue 8, item 5).

Tiny model (random weights): every assertion is about plumbing (ids, filters, spans, modes,
vectors honoured), never about semantics. BM25 assertions use exact word matches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.m3e import M3EEmbedding
from llama_index.vector_stores.m3e import M3EVectorStore
from llama_index.vector_stores.m3e.filters import to_chroma_filters

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.errors import InputError

DOCS = [
    ("panda", "大熊猫主要吃竹子。它们每天花十几个小时进食。", {"topic": "animal", "year": 2020}),
    ("eiffel", "埃菲尔铁塔位于巴黎，建于1889年。", {"topic": "building", "year": 1889}),
    ("wall", "长城是中国古代的军事防御工程。长城很长。", {"topic": "building", "year": 2000}),
    ("tea", "绿茶用八十度的水冲泡。", {"topic": "drink", "year": 2021}),
]


def f(key: str, value: object, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbedding:
    return M3EEmbedding(model_name=str(tiny_model_path))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, emb: M3EEmbedding) -> tuple[VectorStoreIndex, M3EVectorStore]:
    folder = tmp_path_factory.mktemp("li-vs") / "db"
    store = M3EVectorStore(persist_dir=str(folder), collection_name="kb_li", embed_model=emb)
    docs = [Document(text=t, metadata=m, doc_id=d) for d, t, m in DOCS]
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=emb
    )
    return index, store


def ids_of(nodes: list) -> list[str]:  # type: ignore[type-arg]
    return [n.node.ref_doc_id for n in nodes]


def test_from_documents_stores_nodes_with_ref_doc_ids_and_spans(built: tuple[VectorStoreIndex, M3EVectorStore]) -> None:
    index, store = built
    assert store.stores_text and store.pipeline.store.count() == len(DOCS)
    nodes = index.as_retriever(similarity_top_k=4).retrieve("长城")
    assert sorted(ids_of(nodes)) == sorted(d for d, _, _ in DOCS)
    for hit in nodes:
        node = hit.node
        assert isinstance(node, TextNode)
        text = dict((d, t) for d, t, _ in DOCS)[node.ref_doc_id]
        assert node.relationships[NodeRelationship.SOURCE].node_id == node.ref_doc_id
        assert text[node.start_char_idx : node.end_char_idx] == node.get_content() == text
        assert not any(k.startswith("_") for k in node.metadata)


def test_from_vector_store_reopens_the_same_index(built: tuple[VectorStoreIndex, M3EVectorStore],
                                                  emb: M3EEmbedding) -> None:
    _, store = built
    reopened = M3EVectorStore(persist_dir=store.persist_dir, collection_name="kb_li")  # model read from the index
    assert reopened.model_name == emb.model_name
    index = VectorStoreIndex.from_vector_store(reopened, embed_model=emb)
    assert len(index.as_retriever(similarity_top_k=10).retrieve("茶")) == len(DOCS)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (MetadataFilters(filters=[f("topic", "building")]), {"eiffel", "wall"}),
        (MetadataFilters(filters=[f("topic", "building", FilterOperator.NE)]), {"panda", "tea"}),
        (MetadataFilters(filters=[f("year", 2000, FilterOperator.GT)]), {"panda", "tea"}),
        (MetadataFilters(filters=[f("year", 2000, FilterOperator.GTE)]), {"panda", "tea", "wall"}),
        (MetadataFilters(filters=[f("year", 2000, FilterOperator.LT)]), {"eiffel"}),
        (MetadataFilters(filters=[f("year", 2000, FilterOperator.LTE)]), {"eiffel", "wall"}),
        (MetadataFilters(filters=[f("topic", ["drink", "animal"], FilterOperator.IN)]), {"panda", "tea"}),
        (MetadataFilters(filters=[f("topic", ["drink", "animal"], FilterOperator.NIN)]), {"eiffel", "wall"}),
        (MetadataFilters(filters=[f("topic", "building"), f("year", 1900, FilterOperator.GT)]), {"wall"}),
        (MetadataFilters(filters=[f("topic", "drink"), f("year", 1889)], condition=FilterCondition.OR),
         {"tea", "eiffel"}),
        (MetadataFilters(filters=[f("topic", "building"), MetadataFilters(
            filters=[f("year", 1889), f("year", 2020)], condition=FilterCondition.OR)]), {"eiffel"}),
        (MetadataFilters(filters=[f("topic", "building")], condition=FilterCondition.NOT), {"panda", "tea"}),
        (MetadataFilters(filters=[f("text", "长城", FilterOperator.TEXT_MATCH)]), {"wall"}),
        (MetadataFilters(filters=[f("text", "长城", FilterOperator.TEXT_MATCH)], condition=FilterCondition.NOT),
         {"panda", "eiffel", "tea"}),
        (MetadataFilters(filters=[f("topic", "building"), f("text", "巴黎", FilterOperator.TEXT_MATCH)]), {"eiffel"}),
    ],
    ids=["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "and", "or", "nested", "not", "text_match",
         "not_text_match", "and_text_match"],
)
def test_metadata_filters_restrict_every_mode(built: tuple[VectorStoreIndex, M3EVectorStore],
                                              filters: MetadataFilters, expected: set[str]) -> None:
    index, _ = built
    for mode in ("default", "sparse", "hybrid", "mmr"):
        # The query shares a word with every text, so BM25 could rank all four when unfiltered.
        hits = index.as_retriever(similarity_top_k=4, filters=filters, vector_store_query_mode=mode).retrieve(
            "长城 竹子 巴黎 绿茶"
        )
        assert set(ids_of(hits)) == expected, mode


@pytest.mark.parametrize(
    ("op", "key", "value", "match"),
    [
        (FilterOperator.IS_EMPTY, "topic", None, "IS_EMPTY"),
        (FilterOperator.CONTAINS, "tags", ["a", "b"], "CONTAINS on 'tags' takes one value"),
        (FilterOperator.TEXT_MATCH, "topic", "a", "TEXT_MATCH on metadata key 'topic'"),
    ],
)
def test_operators_chroma_cannot_express_raise_naming_them(op: FilterOperator, key: str, value: object,
                                                           match: str) -> None:
    with pytest.raises(InputError, match=match):
        to_chroma_filters(MetadataFilters(filters=[f(key, value, op)]))


@pytest.mark.parametrize(
    ("op", "value", "condition", "expected"),
    [
        (FilterOperator.CONTAINS, "zh", FilterCondition.AND, {"a", "b"}),
        (FilterOperator.ANY, ["en", "fr"], FilterCondition.AND, {"b", "c"}),
        (FilterOperator.ALL, ["zh", "en"], FilterCondition.AND, {"b"}),
        (FilterOperator.CONTAINS, "zh", FilterCondition.NOT, {"c", "d"}),
        (FilterOperator.ANY, ["en", "fr"], FilterCondition.NOT, {"a", "d"}),
        (FilterOperator.ALL, ["zh", "en"], FilterCondition.NOT, {"a", "c", "d"}),
    ],
)
def test_list_metadata_contains_any_all(tmp_path_factory: pytest.TempPathFactory, emb: M3EEmbedding,
                                        op: FilterOperator, value: object, condition: FilterCondition,
                                        expected: set[str]) -> None:
    store = M3EVectorStore(persist_dir=str(tmp_path_factory.mktemp("lists") / "db"), embed_model=emb)
    tags = {"a": ["zh"], "b": ["zh", "en"], "c": ["fr"], "d": None}
    store.add([TextNode(text=f"文本{k}", id_=k, metadata={"tags": v} if v else {}) for k, v in tags.items()])
    found = store.get_nodes(filters=MetadataFilters(filters=[f("tags", value, op)], condition=condition))
    assert {n.node_id for n in found} == expected
    hits = store.query(VectorStoreQuery(query_str="文本", similarity_top_k=4, mode=VectorStoreQueryMode.HYBRID,
                                        filters=MetadataFilters(filters=[f("tags", value, op)], condition=condition)))
    assert set(hits.ids or []) == expected


def test_filter_translation_and_unexpressible_combinations() -> None:
    assert to_chroma_filters(MetadataFilters(filters=[f("a", 1), f("b", [1, 2], FilterOperator.IN)],
                                             condition=FilterCondition.OR)) == (
        {"$or": [{"a": {"$eq": 1}}, {"b": {"$in": [1, 2]}}]}, None)
    where, doc = to_chroma_filters(MetadataFilters(filters=[f("text", "Ab", FilterOperator.TEXT_MATCH_INSENSITIVE)]))
    assert where is None and doc == {"$regex": "(?i)Ab"}
    with pytest.raises(InputError, match="cannot OR a text match"):
        to_chroma_filters(MetadataFilters(filters=[f("a", 1), f("text", "x", FilterOperator.TEXT_MATCH)],
                                          condition=FilterCondition.OR))
    with pytest.raises(InputError, match="NOT over GT"):
        to_chroma_filters(MetadataFilters(filters=[f("a", 1, FilterOperator.GT)], condition=FilterCondition.NOT))


def test_not_is_and_of_negations() -> None:
    where, _ = to_chroma_filters(MetadataFilters(filters=[f("a", 1), f("b", [1, 2], FilterOperator.IN)],
                                                 condition=FilterCondition.NOT))
    assert where == {"$and": [{"a": {"$ne": 1}}, {"b": {"$nin": [1, 2]}}]}


def test_query_embedding_is_honoured(built: tuple[VectorStoreIndex, M3EVectorStore], emb: M3EEmbedding) -> None:
    _, store = built
    tea = store.get_nodes(filters=MetadataFilters(filters=[f("topic", "drink")]))[0]
    # the tea node's stored vector; the query text says otherwise
    target = store.pipeline.store.get(ids=[tea.node_id], include_embeddings=True)[0].metadata["_embedding"].tolist()
    for query_str in ("长城", None):
        result = store.query(VectorStoreQuery(query_embedding=target, query_str=query_str, similarity_top_k=1))
        assert [n.ref_doc_id for n in result.nodes or []] == ["tea"]
        assert result.similarities and result.similarities[0] == pytest.approx(1.0, abs=1e-4)


def test_sparse_mode_is_bm25_and_doc_ids_restrict(built: tuple[VectorStoreIndex, M3EVectorStore]) -> None:
    _, store = built
    res = store.query(VectorStoreQuery(query_str="长城", similarity_top_k=4, mode=VectorStoreQueryMode.SPARSE))
    assert [n.ref_doc_id for n in res.nodes or []] == ["wall"]
    res = store.query(VectorStoreQuery(query_str="长城 绿茶", similarity_top_k=4, mode=VectorStoreQueryMode.HYBRID,
                                       doc_ids=["tea", "panda"]))
    assert {n.ref_doc_id for n in res.nodes or []} == {"tea", "panda"}
    res = store.query(VectorStoreQuery(query_str="长城 绿茶", similarity_top_k=4, mode=VectorStoreQueryMode.HYBRID,
                                       hybrid_top_k=1))
    assert len(res.nodes or []) == 1


@pytest.mark.parametrize(
    ("query", "kwargs", "match"),
    [
        (VectorStoreQuery(query_str="x", alpha=0.5), {}, "alpha applies to .*hybrid"),
        (VectorStoreQuery(query_str="x", alpha=2.0, mode=VectorStoreQueryMode.HYBRID), {}, "alpha must be"),
        (VectorStoreQuery(query_str="x", node_ids=["a"]), {}, "node_ids"),
        (VectorStoreQuery(query_str="x", sparse_top_k=3), {}, "sparse_top_k"),
        (VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.SVM), {}, "svm"),
        (VectorStoreQuery(query_str="x"), {"bogus": 1}, "'bogus'.*Accepted: fetch_k"),
        (VectorStoreQuery(query_str="x"), {"mmr_threshold": 0.3}, "mmr_threshold applies"),
        (VectorStoreQuery(query_embedding=[0.1] * 7, query_str="x"), {}, "7 dimensions.*64-d"),
        # A vector but no text in sparse mode. (No query at all is a filtered fetch now, as in ChromaVectorStore:
        # tests/integrations/test_llamaindex_chroma_behaviour.py.)
        (VectorStoreQuery(query_embedding=[0.1] * 64, mode=VectorStoreQueryMode.SPARSE), {}, "needs query_str"),
    ],
    ids=["alpha", "alpha_range", "node_ids", "sparse_top_k", "svm", "unknown", "mmr_threshold", "dim", "no_query"],
)
def test_query_refuses_what_it_cannot_honour(built: tuple[VectorStoreIndex, M3EVectorStore], query: VectorStoreQuery,
                                            kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        built[1].query(query, **kwargs)


def test_alpha_weighs_vectors_against_bm25(built: tuple[VectorStoreIndex, M3EVectorStore]) -> None:
    index, _ = built

    def ranked(**kwargs: object) -> list[str]:
        return ids_of(index.as_retriever(similarity_top_k=4, **kwargs).retrieve("长城 巴黎"))

    assert ranked(vector_store_query_mode="hybrid", alpha=1.0) == ranked()  # vectors only
    bm25_only = ranked(vector_store_query_mode="hybrid", alpha=0.0)
    assert set(bm25_only[:2]) == {"wall", "eiffel"}  # the two texts with the query's words lead


def test_mmr_threshold_is_lambda(built: tuple[VectorStoreIndex, M3EVectorStore]) -> None:
    index, _ = built
    relevance_only = index.as_retriever(similarity_top_k=4, vector_store_query_mode="mmr",
                                        vector_store_kwargs={"mmr_threshold": 1.0}).retrieve("长城")
    plain = index.as_retriever(similarity_top_k=4).retrieve("长城")
    assert ids_of(relevance_only) == ids_of(plain)


def test_insert_delete_and_clear(tmp_path: Path, emb: M3EEmbedding) -> None:
    store = M3EVectorStore(persist_dir=str(tmp_path / "db"), embed_model=emb)
    index = VectorStoreIndex.from_vector_store(store, embed_model=emb)
    for d, t, m in DOCS:
        index.insert(Document(text=t, metadata=m, doc_id=d))
    index.delete_ref_doc("panda")
    assert {n.ref_doc_id for n in store.get_nodes()} == {"eiffel", "wall", "tea"}
    store.delete_nodes(filters=MetadataFilters(filters=[f("topic", "drink")]))
    assert {n.ref_doc_id for n in store.get_nodes()} == {"eiffel", "wall"}
    wall = store.get_nodes(filters=MetadataFilters(filters=[f("year", 2000)]))[0]
    store.delete_nodes(node_ids=[wall.node_id])
    assert [n.ref_doc_id for n in store.get_nodes()] == ["eiffel"]
    # BM25 forgot the deleted texts as well.
    assert store.pipeline.search("长城", k=4, mode="sparse") == []
    with pytest.raises(InputError, match="clear"):
        store.delete_nodes()
    store.clear()
    assert store.get_nodes() == [] and store.pipeline.store.count() == 0


def test_nodes_without_embeddings_are_embedded_and_bad_ones_refused(tmp_path: Path, emb: M3EEmbedding) -> None:
    store = M3EVectorStore(persist_dir=str(tmp_path / "db"), embed_model=emb)
    node = TextNode(text="没有向量的节点。", id_="n1")
    assert store.add([node]) == ["n1"]
    stored = store.pipeline.store.get(ids=["n1"], include_embeddings=True)[0].metadata["_embedding"]
    np.testing.assert_allclose(stored, emb.get_text_embedding("没有向量的节点。"), atol=1e-5)
    with pytest.raises(InputError, match="384-d embedding.*64-d"):
        store.add([TextNode(text="x", embedding=[0.0] * 384)])
    with pytest.raises(InputError, match="NaN"):
        store.add([TextNode(text="x", embedding=[float("nan")] * 64)])
    with pytest.raises(InputError, match=r"'nested'\]? is dict"):
        store.add([TextNode(text="x", metadata={"nested": {"a": 1}}, embedding=[0.1] * 64)])
    assert [n.node_id for n in store.get_nodes()] == ["n1"]  # nothing else got in


def test_constructor_refusals(tmp_path: Path, tiny_model_path: Path) -> None:
    with pytest.raises(InputError, match="needs where the index lives"):
        M3EVectorStore()
    with pytest.raises(InputError, match="'chroma_collection'.*opens its own collection"):
        M3EVectorStore(chroma_collection=object())
    with pytest.raises(InputError, match="'bogus'.*Accepted: backend"):
        M3EVectorStore(persist_dir=str(tmp_path), bogus=1)
    with pytest.raises(InputError, match="drop persist_dir"):
        M3EVectorStore(RAGPipeline(tmp_path / "a", model_name=str(tiny_model_path)), persist_dir=str(tmp_path))


def test_written_by_llamaindex_searchable_by_the_cli(built: tuple[VectorStoreIndex, M3EVectorStore],
                                                     tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, store = built
    code = main(["search", "长城", "--index", str(store.persist_dir), "--collection", "kb_li", "--mode", "sparse",
                 "--model", str(tiny_model_path), "--json"])
    assert code == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["text"] for h in hits] == [DOCS[2][1]]
    meta = hits[0]["metadata"]
    assert meta["source"] == "wall" and meta["ref_doc_id"] == "wall" and meta["start"] == 0
    assert not any(k.startswith("_") for k in meta)  # LlamaIndex's _node_content stays private


def test_written_by_cli_ingest_queryable_through_llamaindex(tmp_path: Path, tiny_model_path: Path,
                                                            emb: M3EEmbedding) -> None:
    data = tmp_path / "data"
    data.mkdir()
    gbk = "长城是中国古代的军事防御工程。\n" * 3 + "大熊猫吃竹子。"
    (data / "gbk.txt").write_bytes(gbk.encode("gbk"))
    (data / "en.md").write_text("# Tower\n\nThe Eiffel Tower is in Paris.", encoding="utf-8")
    index_dir = tmp_path / "idx"
    assert main(["ingest", str(data), "--index", str(index_dir), "--model", str(tiny_model_path),
                 "--chunk-tokens", "16", "--overlap-tokens", "0"]) == 0
    index = VectorStoreIndex.from_vector_store(M3EVectorStore(persist_dir=str(index_dir)), embed_model=emb)
    hits = index.as_retriever(similarity_top_k=10).retrieve("长城")
    texts = {"gbk.txt": gbk, "en.md": (data / "en.md").read_text(encoding="utf-8")}
    assert len(hits) >= 3
    for hit in hits:
        node = hit.node
        name = Path(node.ref_doc_id or "").name
        assert node.ref_doc_id == node.metadata["source"] and name in texts
        assert texts[name][node.start_char_idx : node.end_char_idx] == node.get_content()
    sparse = index.as_retriever(similarity_top_k=1, vector_store_query_mode="sparse").retrieve("竹子")
    assert "竹子" in sparse[0].node.get_content()
    # delete by ref_doc_id removes an ingested file's chunks too
    index.vector_store.delete(str((data / "gbk.txt").resolve().as_posix()))
    assert {Path(h.node.ref_doc_id or "").name for h in index.as_retriever(similarity_top_k=10).retrieve("x")} == {
        "en.md"}


def test_llamaindex_documents_through_the_m3e_chunker(tmp_path: Path, emb: M3EEmbedding) -> None:
    """RAGPipeline.ingest(documents=[llama Document]) chunks with m3e-rag's chunker, readable here by ref_doc_id."""
    store = M3EVectorStore(persist_dir=str(tmp_path / "db"), embed_model=emb)
    text = "长城是中国古代的军事防御工程。" * 20
    store.pipeline.ingest(documents=[Document(text=text, doc_id="wall", metadata={"topic": "building"})])
    nodes = store.get_nodes()
    assert len(nodes) > 1 and {n.ref_doc_id for n in nodes} == {"wall"}
    assert all(text[n.start_char_idx : n.end_char_idx] == n.get_content() for n in nodes)  # type: ignore[attr-defined]
    store.delete("wall")
    assert store.get_nodes() == []


@pytest.mark.server
def test_a_chroma_server_with_headers(chroma_server: str, emb: M3EEmbedding) -> None:
    from urllib.parse import urlparse

    url = urlparse(chroma_server)
    store = M3EVectorStore(host=url.hostname, port=url.port, headers={"X-Chroma-Token": "t"},
                           collection_name="li_server", embed_model=emb)
    assert store.chroma_url == chroma_server and store.pipeline.store._headers["X-Chroma-Token"] == "t"
    index = VectorStoreIndex.from_documents([Document(text=t, doc_id=d) for d, t, _ in DOCS],
                                            storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=emb)
    hits = index.as_retriever(similarity_top_k=1, vector_store_query_mode="sparse").retrieve("长城")
    assert hits[0].node.ref_doc_id == "wall"
    store.clear()


async def test_async_retrieve_and_insert(built: tuple[VectorStoreIndex, M3EVectorStore]) -> None:
    index, store = built
    hits = await index.as_retriever(similarity_top_k=1, vector_store_query_mode="sparse").aretrieve("长城")
    assert [h.node.ref_doc_id for h in hits] == ["wall"]
    ids = await store.async_add([TextNode(text="异步写入的节点。", id_="async-1")])
    assert ids == ["async-1"]
    await store.adelete_nodes(["async-1"])
    assert store.get_nodes(node_ids=["async-1"]) == []
