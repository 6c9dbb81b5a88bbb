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

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"


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
