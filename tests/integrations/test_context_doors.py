"""The context assembly through the framework doors: LangChain's retriever option, LlamaIndex's postprocessor."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document as LCDocument
from llama_index.core import Document as LIDocument
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.m3e import M3EContextPostprocessor
from llama_index.retrievers.m3e import M3ERetriever as LIRetriever

from langchain_m3e import M3EContextRetriever, M3ERetriever, M3EVectorStore
from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError

LONG = "\n\n".join(
    f"第{n}段。" + "".join(f"这是第{n}段的第{m}句话，讲{topic}的事情。" for m in range(6))
    for n, topic in enumerate(["熊猫", "长城", "故宫", "黄河", "泰山", "西湖"])
)


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path) -> RAGPipeline:
    """One long document in small overlapping chunks (random-weight model: the tests search in sparse mode)."""
    pipeline = RAGPipeline(tmp_path_factory.mktemp("doors") / "idx", model_name=str(tiny_model_path),
                           chunk_tokens=40, overlap_tokens=12)
    pipeline.ingest(texts=[LONG], sources=["long.txt"])
    return pipeline


def model_count(rag: RAGPipeline):
    specials = rag.encoder.count_tokens([""])[0]
    return lambda text: rag.encoder.count_tokens([text])[0] - specials


def assert_exact_disjoint(spans: list[tuple[str, int, int, str]], docs: dict[str, str]) -> None:
    """Each (source, start, end, text) is the document's exact slice, and no two of one source overlap or touch."""
    for source, start, end, text in spans:
        assert docs[source][start:end] == text
    for source in docs:
        mine = sorted((s, e) for src, s, e, _ in spans if src == source)
        assert all(b[0] > a[1] for a, b in zip(mine, mine[1:], strict=False))


# ---------------------------------------------------------------------- LangChain


def test_langchain_context_retriever_returns_cited_pieces_within_the_budget(rag: RAGPipeline) -> None:
    store = M3EVectorStore(pipeline=rag)
    retriever = M3EContextRetriever(vectorstore=store, context_budget=60, mode="sparse", k=6)
    docs = retriever.invoke("黄河的事情")
    assert docs and all(isinstance(d, LCDocument) for d in docs)
    count = model_count(rag)
    assert sum(count(d.page_content) for d in docs) == sum(d.metadata["tokens"] for d in docs) <= 60
    assert_exact_disjoint([(d.metadata["source"], d.metadata["start"], d.metadata["end"], d.page_content)
                           for d in docs], {"long.txt": LONG})
    assert "黄河" in docs[0].page_content and docs[0].metadata["chunk_ids"]
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    plain = store.as_m3e_retriever(mode="sparse", k=6)
    assert type(plain) is M3ERetriever and len(plain.invoke("黄河的事情")) == 6  # the chunk retriever, as before
    with pytest.raises(InputError, match="context_budget"):  # the option is M3EContextRetriever's, not refused silently
        M3ERetriever(vectorstore=store, context_budget=60)


def test_langchain_context_retriever_takes_a_counter_and_per_call_options(rag: RAGPipeline) -> None:
    retriever = M3EContextRetriever(vectorstore=M3EVectorStore(pipeline=rag), context_budget=50, mode="sparse",
                                    count_tokens=len, widen=0)
    docs = retriever.invoke("故宫的事情", k=2)
    hits = rag.search("故宫的事情", k=2, mode="sparse")
    assert sum(len(d.page_content) for d in docs) <= 50
    assert {cid for d in docs for cid in d.metadata["chunk_ids"]} <= {h.id for h in hits}
    with pytest.raises(InputError, match="Unknown search options"):
        retriever.invoke("故宫", size=3)


def test_langchain_context_budget_must_be_positive(rag: RAGPipeline) -> None:
    with pytest.raises(ValueError, match="context_budget"):
        M3EContextRetriever(vectorstore=M3EVectorStore(pipeline=rag), context_budget=0)


# ---------------------------------------------------------------------- LlamaIndex


@functools.cache
def splitter_nodes(size: int, overlap: int) -> tuple[TextNode, ...]:
    """LlamaIndex's own SentenceSplitter nodes of LONG (one character per token), with their character spans."""
    splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap, tokenizer=list)
    return tuple(n for n in splitter.get_nodes_from_documents([LIDocument(text=LONG, id_="doc")])
                 if isinstance(n, TextNode))


def test_splitter_nodes_overlap() -> None:
    nodes = splitter_nodes(60, 25)
    assert any(a.end_char_idx > b.start_char_idx for a, b in zip(nodes, nodes[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([30, 45, 60, 80]), st.sampled_from([0, 10, 25]), st.integers(5, 200),
       st.randoms(use_true_random=False))
def test_llamaindex_postprocessor_merges_splitter_nodes_exactly(size, overlap, budget, rnd) -> None:
    nodes = list(splitter_nodes(size, overlap))
    picked = rnd.sample(nodes, min(len(nodes), 6))
    scored = [NodeWithScore(node=n, score=rnd.random()) for n in picked]
    post = M3EContextPostprocessor(budget_tokens=budget, count_tokens=len)
    out = post.postprocess_nodes(scored, query_bundle=QueryBundle("泰山"))
    assert sum(len(n.node.get_content()) for n in out) <= budget
    assert_exact_disjoint([(n.node.metadata["source"], n.node.start_char_idx, n.node.end_char_idx,
                            n.node.get_content()) for n in out], {"doc": LONG})
    for n in out:
        assert n.node.ref_doc_id == "doc" and set(n.node.metadata["chunk_ids"]) <= {p.node_id for p in picked}


def test_llamaindex_postprocessor_with_a_pipeline_widens_and_counts_in_model_tokens(rag: RAGPipeline) -> None:
    nodes = LIRetriever(rag, similarity_top_k=1, mode="sparse").retrieve("泰山的事情")
    post = M3EContextPostprocessor(budget_tokens=2000, pipeline=rag, widen=1)
    (piece,) = post.postprocess_nodes(nodes, query_bundle=QueryBundle("泰山的事情"))
    assert nodes[0].node.node_id in piece.node.metadata["chunk_ids"] and len(piece.node.metadata["chunk_ids"]) >= 2
    assert LONG[piece.node.start_char_idx : piece.node.end_char_idx] == piece.node.get_content()
    assert piece.node.metadata["tokens"] == model_count(rag)(piece.node.get_content())
    assert "chunk_ids" not in piece.node.get_content(metadata_mode="llm")  # citation keys stay out of the prompt


def test_llamaindex_postprocessor_in_a_query_engine(rag: RAGPipeline) -> None:
    engine = RetrieverQueryEngine.from_args(
        LIRetriever(rag, similarity_top_k=6, mode="sparse"), llm=MockLLM(),
        node_postprocessors=[M3EContextPostprocessor(budget_tokens=40, pipeline=rag)],
    )
    response = engine.query("西湖的事情")
    count = model_count(rag)
    assert response.source_nodes and sum(count(n.node.get_content()) for n in response.source_nodes) <= 40


def test_llamaindex_postprocessor_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InputError, match="needs count_tokens="):
        M3EContextPostprocessor(budget_tokens=100)
    with pytest.raises(InputError, match="widen= fetches neighbouring chunks from a store"):
        M3EContextPostprocessor(budget_tokens=100, count_tokens=len, widen=1)
    with pytest.raises(InputError, match="pipeline must be an m3e_rag.RAGPipeline"):
        M3EContextPostprocessor(budget_tokens=100, pipeline="./index")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget_tokens"):
        M3EContextPostprocessor(budget_tokens=0, count_tokens=len)
