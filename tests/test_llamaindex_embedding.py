"""M3EEmbedding inside LlamaIndex: batching, async, and a VectorStoreIndex round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.embeddings.m3e import M3EEmbedding

from m3e_rag.errors import InputError


def test_is_a_base_embedding_with_class_name(tiny_model_path: Path) -> None:
    emb = M3EEmbedding(model_name=str(tiny_model_path))
    assert isinstance(emb, BaseEmbedding)
    assert M3EEmbedding.class_name() == "M3EEmbedding"
    assert emb.model_name == str(tiny_model_path)


def test_batched_text_embeddings_match_single_calls(tiny_model_path: Path) -> None:
    emb = M3EEmbedding(model_name=str(tiny_model_path), embed_batch_size=4)
    texts = ["大熊猫吃竹子。", "Pandas eat bamboo.", "北京是中国的首都。", "Paris is in France.", "你好", "hi"]
    batch = emb.get_text_embedding_batch(texts)
    singles = [emb.get_text_embedding(t) for t in texts]
    np.testing.assert_allclose(np.asarray(batch), np.asarray(singles), atol=1e-5)
    assert len(emb.get_query_embedding("熊猫")) == 64


async def test_async_methods(tiny_model_path: Path) -> None:
    emb = M3EEmbedding(model_name=str(tiny_model_path))
    q = await emb.aget_query_embedding("熊猫吃什么")
    docs = await emb.aget_text_embedding_batch(["竹子", "bamboo"])
    assert len(q) == 64 and len(docs) == 2 and len(docs[0]) == 64


def test_bad_input_names_the_problem(tiny_model_path: Path) -> None:
    with pytest.raises(InputError, match="query is an empty string"):
        M3EEmbedding(model_name=str(tiny_model_path)).get_query_embedding("")


def test_vector_store_index_round_trip(bilingual_model_path: Path) -> None:
    Settings.llm = MockLLM()
    emb = M3EEmbedding(model_name=str(bilingual_model_path))
    docs = [
        Document(text="大熊猫主要吃竹子，每天要花十几个小时进食。", metadata={"lang": "zh"}),
        Document(text="The Eiffel Tower is a wrought-iron tower in Paris, France.", metadata={"lang": "en"}),
        Document(text="长城是中国古代的军事防御工程。", metadata={"lang": "zh"}),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=emb)
    nodes = index.as_retriever(similarity_top_k=1).retrieve("What do giant pandas eat?")
    assert "竹子" in nodes[0].node.get_content()
    nodes = index.as_retriever(similarity_top_k=1).retrieve("埃菲尔铁塔在哪里？")
    assert "Eiffel" in nodes[0].node.get_content()
    answer = index.as_query_engine(llm=MockLLM()).query("大熊猫吃什么？")
    assert answer.source_nodes and "竹子" in answer.source_nodes[0].node.get_content()
