"""M3EVectorStore and M3ERetriever under LangChain's standard suites, plus hybrid and MMR use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from langchain_m3e import M3EEmbeddings, M3ERetriever, M3EVectorStore
from m3e_rag.errors import InputError
from tests.support import standins


class TestM3EVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        store = M3EVectorStore(M3EEmbeddings(model_name=str(standins.tiny_m3e())), index=tmp_path / "index")
        yield store


class TestM3ERetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[M3ERetriever]:
        return M3ERetriever

    @property
    def retriever_constructor_params(self) -> dict:
        import tempfile

        folder = tempfile.mkdtemp(prefix="m3e-retriever-")
        store = M3EVectorStore(M3EEmbeddings(model_name=str(standins.tiny_m3e())), index=folder)
        store.add_texts([f"第{i}段：大熊猫和竹子的故事，编号 {i}。" for i in range(6)])
        return {"vectorstore": store}

    @property
    def retriever_query_example(self) -> str:
        return "大熊猫吃竹子"


@pytest.fixture()
def bilingual_store(tmp_path: Path, bilingual_model_path: Path) -> M3EVectorStore:
    store = M3EVectorStore(M3EEmbeddings(model_name=str(bilingual_model_path)), index=tmp_path / "idx")
    store.add_documents(
        [
            Document(page_content="大熊猫主要吃竹子，每天要吃十几公斤。", metadata={"lang": "zh", "topic": "panda"}),
            Document(
                page_content="Giant pandas eat bamboo for most of the day.", metadata={"lang": "en", "topic": "panda"}
            ),
            Document(page_content="熊猫宝宝出生时只有一百克左右。", metadata={"lang": "zh", "topic": "panda"}),
            Document(
                page_content="The Great Wall of China is thousands of kilometres long.",
                metadata={"lang": "en", "topic": "wall"},
            ),
            Document(page_content="西湖龙井是著名的绿茶。", metadata={"lang": "zh", "topic": "tea"}),
        ],
        ids=["zh-panda", "en-panda", "zh-baby", "en-wall", "zh-tea"],
    )
    return store


def test_scores_follow_chroma_and_filters_apply(bilingual_store: M3EVectorStore) -> None:
    # langchain_chroma.Chroma's convention: similarity_search_with_score returns the cosine DISTANCE
    # (1 - cosine, lower is better); relevance scores are 1 - distance, here clamped to [0, 1].
    hits = bilingual_store.similarity_search_with_score("大熊猫吃什么？", k=5)
    assert hits[0][0].id == "zh-panda"
    distances = [s for _, s in hits]
    assert distances == sorted(distances) and all(0.0 <= d <= 2.0 for d in distances)
    english = bilingual_store.similarity_search("大熊猫吃什么？", k=2, filter={"lang": "en"})
    assert [d.id for d in english] == ["en-panda", "en-wall"]
    rel = bilingual_store.similarity_search_with_relevance_scores("大熊猫吃什么？", k=1)
    assert rel[0][1] == pytest.approx(1.0 - distances[0], abs=1e-6)


def test_hybrid_and_mmr(bilingual_store: M3EVectorStore) -> None:
    hybrid = bilingual_store.similarity_search("龙井 绿茶", k=1, mode="hybrid")
    assert hybrid[0].id == "zh-tea"
    mmr = bilingual_store.max_marginal_relevance_search("熊猫", k=3, fetch_k=5, lambda_mult=0.3)
    assert len(mmr) == 3 and len({d.id for d in mmr}) == 3
    retriever = bilingual_store.as_m3e_retriever(k=2, mode="hybrid")
    docs = retriever.invoke("Where do pandas get their food?")
    assert len(docs) == 2 and {d.metadata["topic"] for d in docs} == {"panda"}
    assert [d.id for d in retriever.invoke("绿茶", k=1)] == ["zh-tea"]
    assert len(bilingual_store.as_retriever(search_kwargs={"k": 3}).invoke("熊猫")) == 3


def test_ingest_files_through_the_store(tmp_path: Path, bilingual_model_path: Path) -> None:
    store = M3EVectorStore(M3EEmbeddings(model_name=str(bilingual_model_path)), index=tmp_path / "idx")
    report = store.ingest(Path(__file__).resolve().parents[2] / "examples" / "data")
    assert report.chunks_added > 0 and report.files_skipped == []
    top = store.similarity_search("大熊猫吃什么？", k=1)[0]
    assert top.metadata["source"].endswith("giant_panda_gbk.txt") and "竹子" in top.page_content


def test_bad_inputs(tmp_path: Path, tiny_model_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(InputError, match="takes a LangChain Embeddings"):  # any Embeddings is taken; not a str
        M3EVectorStore(embedding_function="m3e-base", index=tmp_path / "x")  # type: ignore[arg-type]
    assert M3EVectorStore(DeterministicFakeEmbedding(size=6), index=tmp_path / "x").embeddings is not None
    store = M3EVectorStore(M3EEmbeddings(model_name=str(tiny_model_path)), index=tmp_path / "y")
    with pytest.raises(InputError, match="Duplicate ids"):
        store.add_texts(["a", "b"], ids=["same", "same"])
    with pytest.raises(InputError, match="Got 1 metadatas for 2 texts"):
        store.add_texts(["a", "b"], metadatas=[{}])
    with pytest.raises(InputError, match="mode must be one of dense, sparse, hybrid"):
        store.similarity_search("熊猫", mode="fuzzy")
    retriever = M3ERetriever(vectorstore=store, k=2)
    with pytest.raises(InputError, match="Unknown search options"):
        retriever.invoke("熊猫", topk=3)  # a typo; top_k itself is honoured as an alias of k
