"""M3EEmbeddings under LangChain's standard embedding suites, plus real bilingual semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_m3e import M3EEmbeddings
from m3e_rag.errors import InputError
from tests.support import standins


class TestM3EEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[M3EEmbeddings]:
        return M3EEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": str(standins.tiny_m3e())}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        path = str(standins.tiny_m3e())
        return {"M3E_MODEL": path}, {}, {"model_name": path}


class TestM3EEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[M3EEmbeddings]:
        return M3EEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model_name": str(standins.tiny_m3e())}


def _cos(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_chinese_question_is_nearer_its_english_translation(bilingual_model_path: Path) -> None:
    emb = M3EEmbeddings(model_name=str(bilingual_model_path))
    query = emb.embed_query("今天天气怎么样？")
    english, unrelated = emb.embed_documents(["What is the weather like today?", "你好世界"])
    assert _cos(query, english) > _cos(query, unrelated)


def test_english_semantics_on_minilm(minilm_model_path: Path) -> None:
    emb = M3EEmbeddings(model_name=str(minilm_model_path))
    q = emb.embed_query("What do giant pandas eat?")
    good, bad = emb.embed_documents(["Pandas feed almost entirely on bamboo.", "The stock market fell sharply."])
    assert _cos(q, good) > _cos(q, bad) + 0.2


def test_fields_reach_the_shared_encoder(tiny_model_path: Path) -> None:
    emb = M3EEmbeddings(model_name=str(tiny_model_path), batch_size=3, normalize=False, device="cpu")
    enc = emb.encoder
    assert (enc.model_name, enc.batch_size, enc.normalize, enc.device) == (str(tiny_model_path), 3, False, "cpu")
    other = M3EEmbeddings(model_name=str(tiny_model_path))
    other.embed_query("一")
    emb.embed_query("二")
    assert other.encoder._loaded() is enc._loaded()


def test_unknown_field_and_bad_input_are_refused(tiny_model_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        M3EEmbeddings(model_name=str(tiny_model_path), modle_name="typo")  # type: ignore[call-arg]
    with pytest.raises(InputError, match=r"texts\[1\] is an empty string"):
        M3EEmbeddings(model_name=str(tiny_model_path)).embed_documents(["好", ""])
