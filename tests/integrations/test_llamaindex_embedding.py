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


BGE_ZH = "为这个句子生成表示以用于检索相关文章："


def test_query_instruction_reaches_the_model(tiny_model_path: Path) -> None:
    """HuggingFaceEmbedding's query_instruction / text_instruction: the encoded text carries them."""
    from m3e_rag import M3EEncoder

    plain = M3EEncoder(str(tiny_model_path), query_prompt="", document_prompt="")
    emb = M3EEmbedding(model_name=str(tiny_model_path), query_instruction=BGE_ZH, text_instruction="段落：")
    assert emb.query_instruction == BGE_ZH and emb.encoder.query_prompt == BGE_ZH
    np.testing.assert_allclose(emb.get_query_embedding("熊猫吃什么"), plain.encode_query(BGE_ZH + "熊猫吃什么"),
                               atol=1e-5)
    np.testing.assert_allclose(emb.get_text_embedding_batch(["竹子"])[0], plain.encode_documents(["段落：竹子"])[0],
                               atol=1e-5)
    assert not np.allclose(emb.get_query_embedding("熊猫吃什么"), plain.encode_query("熊猫吃什么"), atol=1e-3)
    same = M3EEmbedding(model_name=str(tiny_model_path), query_prompt=BGE_ZH)
    np.testing.assert_allclose(same.get_query_embedding("熊猫"), emb.get_query_embedding("熊猫"), atol=1e-6)


def test_huggingface_embedding_arguments_are_honoured_or_refused(tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    emb = M3EEmbedding(model_name=model, max_length=512, normalize=False, embed_batch_size=8, cache_folder="/tmp/hf",
                       trust_remote_code=False, device="cpu", show_progress_bar=True)
    assert emb.encoder.normalize is False and emb.encoder.cache_folder == "/tmp/hf" and emb.encoder.device == "cpu"
    assert np.linalg.norm(emb.get_query_embedding("熊猫")) != pytest.approx(1.0, abs=1e-3)
    for kwargs, match in [
        ({"pooling": "cls"}, "'pooling': M3E models are mean-pooled"),
        ({"tokenizer_name": "bert"}, "'tokenizer_name'"),
        ({"target_devices": ["cuda:0"]}, "'target_devices'"),
        ({"max_length": 128}, "max_length=128.*512"),
        ({"query_instruction": "a", "query_prompt": "b"}, "give one"),
        ({"parallel_process": True, "device": "cpu"}, "multi_process=True is refused on CPU"),
        ({"bogus": 1}, "'bogus'.*Accepted: backend"),
    ]:
        with pytest.raises(InputError, match=match):
            M3EEmbedding(model_name=model, **kwargs)
    with pytest.raises(InputError, match="'bogus'"):
        emb.get_text_embedding_batch(["x"], bogus=True)
