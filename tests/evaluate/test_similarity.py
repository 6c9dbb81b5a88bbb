"""Sentence similarity (s2s): M3EEncoder.similarity / similarity_matrix, LlamaIndex's hook, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import cli
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError

WEATHER_ZH = "今天天气怎么样？"
WEATHER_EN = "What is the weather like today?"
HELLO_ZH = "你好世界"


@pytest.fixture(scope="module")
def bilingual(bilingual_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(bilingual_model_path)).load()


def test_cross_lingual_paraphrase_scores_above_unrelated(bilingual: M3EEncoder) -> None:
    same = bilingual.similarity(WEATHER_ZH, WEATHER_EN)
    other = bilingual.similarity(WEATHER_ZH, HELLO_ZH)
    assert isinstance(same, float) and isinstance(other, float)
    assert -1.0 <= other < same <= 1.0


def test_pairs_and_matrix_shapes_agree(bilingual: M3EEncoder) -> None:
    a = [WEATHER_ZH, "大熊猫吃竹子。"]
    b = [WEATHER_EN, "Pandas eat bamboo.", HELLO_ZH]
    pairs = bilingual.similarity(a, b[:2])
    assert pairs.shape == (2,) and pairs.dtype == np.float32
    matrix = bilingual.similarity_matrix(a, b)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float32
    assert np.allclose(np.diag(matrix[:, :2]), pairs, atol=1e-5)
    assert matrix[1, 1] == pytest.approx(bilingual.similarity(a[1], b[1]), abs=1e-5)
    assert int(np.argmax(matrix[0])) == 0  # the translation wins over the other two
    square = bilingual.similarity_matrix(b)
    assert square.shape == (3, 3) and np.allclose(square, square.T, atol=1e-5)
    assert np.allclose(np.diag(square), 1.0, atol=1e-5)


def test_similarity_is_a_true_cosine_whatever_normalize_says(bilingual: M3EEncoder,
                                                              bilingual_model_path: Path) -> None:
    raw = M3EEncoder(str(bilingual_model_path), normalize=False)
    assert raw.similarity(WEATHER_ZH, WEATHER_EN) == pytest.approx(bilingual.similarity(WEATHER_ZH, WEATHER_EN),
                                                                   abs=1e-5)
    # Both sides get the document-side prompt ("passage: " for e5) unless told otherwise.
    u, v = bilingual.encode_documents([WEATHER_ZH, WEATHER_EN])
    assert bilingual.similarity(WEATHER_ZH, WEATHER_EN) == pytest.approx(float(u @ v), abs=1e-5)
    assert bilingual.similarity(WEATHER_ZH, WEATHER_EN, prompt="query: ") != pytest.approx(float(u @ v), abs=1e-4)


def test_bad_similarity_input_is_refused(bilingual: M3EEncoder) -> None:
    with pytest.raises(InputError, match="equal-length"):
        bilingual.similarity([WEATHER_ZH], [WEATHER_EN, HELLO_ZH])
    with pytest.raises(InputError, match="not one of each"):
        bilingual.similarity(WEATHER_ZH, [WEATHER_EN])  # type: ignore[call-overload]
    with pytest.raises(InputError, match="non-empty"):
        bilingual.similarity(WEATHER_ZH, "  ")
    assert bilingual.similarity([], []).shape == (0,)


def test_llamaindex_similarity_hook_agrees(bilingual: M3EEncoder, bilingual_model_path: Path) -> None:
    from llama_index.core.base.embeddings.base import SimilarityMode
    from llama_index.embeddings.m3e import M3EEmbedding

    emb = M3EEmbedding(model_name=str(bilingual_model_path))
    u, v = emb.get_text_embedding(WEATHER_ZH), emb.get_text_embedding(WEATHER_EN)
    expected = bilingual.similarity(WEATHER_ZH, WEATHER_EN)
    assert emb.similarity(u, v) == pytest.approx(expected, abs=1e-5)
    assert emb.similarity(u, v, mode=SimilarityMode.DOT_PRODUCT) == pytest.approx(expected, abs=1e-5)


def test_similarity_command(bilingual: M3EEncoder, bilingual_model_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["similarity", WEATHER_ZH, WEATHER_EN, "--model", str(bilingual_model_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cosine"] == pytest.approx(bilingual.similarity(WEATHER_ZH, WEATHER_EN), abs=1e-5)
    assert out["prompt"] == "passage: " and out["sentence2"] == WEATHER_EN
    assert cli.main(["similarity", WEATHER_ZH, "", "--model", str(bilingual_model_path)]) == 2
    assert "non-empty" in capsys.readouterr().err
