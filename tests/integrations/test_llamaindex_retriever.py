"""The LlamaIndex M3ERetriever: NodeWithScore results, filters, modes, async, query engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore
from llama_index.retrievers.m3e import M3ERetriever

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


@pytest.fixture()
def rag(tmp_path: Path, bilingual_model_path: Path) -> RAGPipeline:
    pipeline = RAGPipeline(tmp_path / "idx", model_name=str(bilingual_model_path))
    pipeline.ingest(EXAMPLES)
    return pipeline


def test_returns_nodes_with_scores(rag: RAGPipeline) -> None:
    retriever = M3ERetriever(rag, similarity_top_k=2)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve("大熊猫吃什么？")
    assert len(nodes) == 2 and all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0]
    assert top.node.metadata["source"].endswith("giant_panda_gbk.txt") and "竹子" in top.node.get_content()
    assert top.score is not None and top.score >= (nodes[1].score or 0.0)
    assert top.node.node_id == rag.search("大熊猫吃什么？", k=1)[0].id


def test_filters_modes_and_async(rag: RAGPipeline) -> None:
    only_md = M3ERetriever(rag, similarity_top_k=5, filters={"file_type": "md"})
    assert {Path(n.node.metadata["source"]).suffix for n in only_md.retrieve("熊猫")} == {".md"}
    hybrid = M3ERetriever(rag, similarity_top_k=1, mode="hybrid")
    assert hybrid.retrieve("Gustave Eiffel 1889")[0].node.metadata["source"].endswith("eiffel_tower.md")


async def test_async_retrieve(rag: RAGPipeline) -> None:
    nodes = await M3ERetriever(rag, similarity_top_k=1).aretrieve("绿茶用什么温度的水泡？")
    assert nodes[0].node.metadata["source"].endswith("green_tea.txt")


def test_query_engine_with_mock_llm(rag: RAGPipeline) -> None:
    engine = RetrieverQueryEngine.from_args(M3ERetriever(rag, similarity_top_k=1), llm=MockLLM())
    response = engine.query("长城有多长？")
    assert response.source_nodes[0].node.metadata["source"].endswith("great_wall.md")


def test_bad_arguments(tmp_path: Path, tiny_model_path: Path) -> None:
    with pytest.raises(InputError, match="needs a pipeline"):
        M3ERetriever()
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    with pytest.raises(InputError, match="similarity_top_k must be a positive integer"):
        M3ERetriever(rag, similarity_top_k=0)
    with pytest.raises(InputError, match="mode must be one of"):
        M3ERetriever(rag, mode="bm25")  # type: ignore[arg-type]
    opened = M3ERetriever(index=tmp_path / "idx2", model_name=str(tiny_model_path))
    assert opened.pipeline.index_path == tmp_path / "idx2"


@pytest.fixture(scope="module")
def tiny_rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    rag = RAGPipeline(tmp_path_factory.mktemp("li-ret") / "idx", model_name=str(tiny_model_path), chunk_tokens=16,
                      overlap_tokens=0)
    rag.ingest(texts=["长城是中国古代的军事防御工程。" * 3 + "长城很长。", "绿茶用八十度的水冲泡。"],
               sources=["wall.txt", "tea.txt"], metadatas=[{"topic": "building"}, {"topic": "drink"}])
    return rag


def test_nodes_carry_ref_doc_id_relationships_and_spans(tiny_rag: RAGPipeline) -> None:
    from llama_index.core.schema import NodeRelationship

    texts = {"wall.txt": "长城是中国古代的军事防御工程。" * 3 + "长城很长。", "tea.txt": "绿茶用八十度的水冲泡。"}
    nodes = M3ERetriever(tiny_rag, similarity_top_k=10).retrieve("长城")
    assert len(nodes) > 2
    for hit in nodes:
        node = hit.node
        assert node.ref_doc_id in texts
        assert node.relationships[NodeRelationship.SOURCE].node_id == node.ref_doc_id
        assert texts[node.ref_doc_id][node.start_char_idx : node.end_char_idx] == node.get_content()


def test_query_bundle_embedding_is_the_query_vector(tiny_rag: RAGPipeline) -> None:
    from llama_index.core.schema import QueryBundle

    tea = tiny_rag.store.get(where={"source": "tea.txt"}, include_embeddings=True)[0]
    bundle = QueryBundle(query_str="长城", embedding=tea.metadata["_embedding"].tolist())
    top = M3ERetriever(tiny_rag, similarity_top_k=1).retrieve(bundle)[0]
    assert top.node.ref_doc_id == "tea.txt" and top.score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InputError, match="query_vector has shape"):
        M3ERetriever(tiny_rag).retrieve(QueryBundle(query_str="长城", embedding=[0.1] * 5))


def test_metadata_filters_and_chroma_dicts(tiny_rag: RAGPipeline) -> None:
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    filters = MetadataFilters(filters=[MetadataFilter(key="topic", value="drink")])
    for mode in ("dense", "sparse", "hybrid"):
        hits = M3ERetriever(tiny_rag, similarity_top_k=5, mode=mode, filters=filters).retrieve("长城 绿茶")
        assert {h.node.ref_doc_id for h in hits} == {"tea.txt"}
    text = MetadataFilters(filters=[MetadataFilter(key="text", value="很长", operator=FilterOperator.TEXT_MATCH)])
    hits = M3ERetriever(tiny_rag, similarity_top_k=5, filters=text).retrieve("长城")
    assert hits and all("很长" in h.node.get_content() for h in hits)
    hits = M3ERetriever(tiny_rag, similarity_top_k=5, filters={"topic": "building"}).retrieve("绿茶")
    assert {h.node.ref_doc_id for h in hits} == {"wall.txt"}


def test_unknown_options_are_refused_by_name(tiny_rag: RAGPipeline, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'search_kwargs'.*similarity_top_k"):
        M3ERetriever(tiny_rag, search_kwargs={"k": 2})
    with pytest.raises(InputError, match="'top_k'"):
        M3ERetriever(tiny_rag, top_k=1)
    with pytest.raises(InputError, match="'bogus'.*Accepted:.*model_name"):
        M3ERetriever(index=tmp_path / "i", bogus=1)
    with pytest.raises(InputError, match="drop model_name"):
        M3ERetriever(tiny_rag, model_name="m3e-small")
    with pytest.raises(InputError, match="alpha applies to mode='hybrid'"):
        M3ERetriever(tiny_rag, alpha=0.5)


def test_alpha_sets_the_hybrid_weights(tiny_rag: RAGPipeline) -> None:
    retriever = M3ERetriever(tiny_rag, similarity_top_k=5, mode="hybrid", alpha=0.25)
    assert retriever.hybrid_weights is not None
    assert (retriever.hybrid_weights.dense, retriever.hybrid_weights.sparse) == (0.25, 0.75)
    bm25_only = M3ERetriever(tiny_rag, similarity_top_k=1, mode="hybrid", alpha=0.0).retrieve("绿茶")
    assert bm25_only[0].node.ref_doc_id == "tea.txt"  # the one text with the word, whatever the random vectors say
