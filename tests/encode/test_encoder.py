"""M3EEncoder: shapes, normalization, batching faithfulness, input errors, loading errors."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3e_rag import M3EEncoder
from m3e_rag.encode.cache import _MODELS
from m3e_rag.encode.registry import MODELS, resolve_spec
from m3e_rag.encode.torch_backend import PAD_FROM_LENGTH, PAD_TO_MULTIPLE, _pad_features
from m3e_rag.errors import InputError, InputTooLongError, ModelLoadError

MIXED = [
    "大熊猫主要以竹子为食，每天要吃十几公斤。",
    "Pandas eat bamboo.",
    "今天天气怎么样？",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up.",
    "人工智能",
    "M3E 是一个中英双语的文本嵌入模型，支持检索、分类和聚类等任务。It is small and fast.",
]


def test_registry_knows_dims_without_loading() -> None:
    m3e = {k: v for k, v in MODELS.items() if v.family == "m3e"}  # BGE entries: tests/encode/test_models_registry.py
    assert {k: v.dim for k, v in m3e.items()} == {"m3e-small": 512, "m3e-base": 768, "m3e-large": 1024}
    assert all(spec.max_tokens == 512 for spec in m3e.values())
    assert resolve_spec("moka-ai/M3E-BASE") is MODELS["m3e-base"]
    enc = M3EEncoder("m3e-small")
    assert enc.dim == 512 and not enc.is_loaded
    assert enc.model_name == "moka-ai/m3e-small"


def test_default_model_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M3E_MODEL", raising=False)
    assert M3EEncoder().model_name == "moka-ai/m3e-base"
    monkeypatch.setenv("M3E_MODEL", "m3e-large")
    assert M3EEncoder().model_name == "moka-ai/m3e-large"
    assert M3EEncoder().dim == 1024


def test_shapes_dtype_and_normalization(tiny_model_path: Path) -> None:
    enc = M3EEncoder(str(tiny_model_path))
    docs = enc.encode_documents(MIXED)
    assert docs.shape == (len(MIXED), 64) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    q = enc.encode_query("大熊猫吃什么？")
    assert q.shape == (64,) and q.dtype == np.float32
    assert enc.encode_documents([]).shape == (0, 64)
    raw = M3EEncoder(str(tiny_model_path), normalize=False).encode_documents(MIXED)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_token_sorted_batches_match_sentence_transformers(tiny_model_path: Path) -> None:
    """Our batching by token length must not change any vector (padding is masked)."""
    from sentence_transformers import SentenceTransformer

    texts = MIXED * 5
    ours = M3EEncoder(str(tiny_model_path), batch_size=4).encode_documents(texts)
    ref = SentenceTransformer(str(tiny_model_path), device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True
    )
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_batching_sorts_by_token_length_and_counts_padding(tiny_model_path: Path) -> None:
    enc = M3EEncoder(str(tiny_model_path), batch_size=2)
    # a long length that the rounding moves (not a multiple of PAD_TO_MULTIPLE), at or over PAD_FROM_LENGTH
    long_a = next(t for t in ("长" * n for n in range(70, 90)) if enc.count_tokens([t])[0] % PAD_TO_MULTIPLE)
    texts = ["短", long_a, "中文", long_a[:-1] + "句"]
    before = enc.stats.padded_tokens, enc.stats.tokens
    enc.encode_documents(texts)
    padded = enc.stats.padded_tokens - before[0]
    tokens = enc.stats.tokens - before[1]
    lengths = enc.count_tokens(texts)
    assert tokens == sum(lengths)
    # Sorted: the two long texts share a batch and the two short ones share the other; the long batch is
    # padded to its longest text rounded up to a multiple of PAD_TO_MULTIPLE (the torch backend's kernels),
    # the short one (under PAD_FROM_LENGTH tokens) to its longest text only.
    s = sorted(lengths, reverse=True)
    assert s[0] >= PAD_FROM_LENGTH > s[2]
    up = -(-s[0] // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE
    assert up != s[0]  # the rounding is exercised, not vacuous
    assert padded == 2 * up + 2 * s[2]


def test_model_is_loaded_once_and_shared(tiny_model_path: Path) -> None:
    a = M3EEncoder(str(tiny_model_path), batch_size=3)
    b = M3EEncoder(str(tiny_model_path), batch_size=7)
    a.encode_query("一")
    b.encode_query("二")
    assert a._loaded() is b._loaded()
    assert sum(1 for key in _MODELS if key[0] == str(tiny_model_path)) == 1


def test_thread_safe_and_async(tiny_model_path: Path) -> None:
    enc = M3EEncoder(str(tiny_model_path))
    expected = enc.encode_documents(MIXED)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(enc.encode_documents(MIXED))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)

    async def both() -> tuple[np.ndarray, np.ndarray]:
        return await asyncio.gather(enc.aencode_documents(MIXED), enc.aencode_query(MIXED[0]))  # type: ignore[return-value]

    docs, query = asyncio.run(both())
    np.testing.assert_allclose(docs, expected, atol=1e-6)
    assert query.shape == (64,)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "texts must be a list of strings, got NoneType"),
        ("a single string", "got str; wrap a single text in a list"),
        (["ok", None], "texts[1] is None"),
        (["ok", "fine", ""], "texts[2] is an empty string"),
        (["   \n"], "texts[0] is whitespace only"),
        (["ok", 42], "texts[1] is of type int"),
    ],
)
def test_bad_document_input(tiny_model_path: Path, bad: object, message: str) -> None:
    enc = M3EEncoder(str(tiny_model_path))
    with pytest.raises(InputError) as info:
        enc.encode_documents(bad)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "non-empty string" in str(info.value) or "list" in str(info.value)


@pytest.mark.parametrize("bad", [None, "", "  ", 5])
def test_bad_query_input(tiny_model_path: Path, bad: object) -> None:
    with pytest.raises(InputError, match="pass a non-empty string"):
        M3EEncoder(str(tiny_model_path)).encode_query(bad)  # type: ignore[arg-type]


def test_bad_options() -> None:
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        M3EEncoder("m3e-base", batch_size=0)
    with pytest.raises(InputError, match="backend must be one of torch, onnx, onnx-int8"):
        M3EEncoder("m3e-base", backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="on_overflow must be one of truncate, warn, error"):
        M3EEncoder("m3e-base", on_overflow="ignore")  # type: ignore[arg-type]


def test_overflow_policies(tiny_model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    long_text = "熊猫" * 400  # 800 characters -> 800 tokens + 2 specials
    strict = M3EEncoder(str(tiny_model_path), on_overflow="error")
    with pytest.raises(InputTooLongError, match=r"texts\[1\] has 802 tokens, more than the model's window of 512"):
        strict.encode_documents(["短文本", long_text])
    warn = M3EEncoder(str(tiny_model_path), on_overflow="warn")
    before = warn.stats.truncated
    with caplog.at_level(logging.WARNING, logger="m3e_rag.encode.encoder"):
        vec = warn.encode_documents(["短文本", long_text])
    assert vec.shape == (2, 64)
    assert warn.stats.truncated == before + 1
    assert "1 of 2 texts exceed the 512-token window and were truncated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="m3e_rag.encode.encoder"):
        M3EEncoder(str(tiny_model_path), on_overflow="truncate").encode_documents([long_text])
    assert "truncated" not in caplog.text
    # Truncation keeps the first 510 tokens: same vector as the text cut at 510 characters.
    cut = M3EEncoder(str(tiny_model_path)).encode_documents([long_text[:510]])
    np.testing.assert_allclose(vec[1], cut[0], atol=1e-5)


def test_offline_hub_id_fails_fast_with_the_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        M3EEncoder("moka-ai/m3e-base").encode_query("x")
    assert time.monotonic() - started < 30
    msg = str(info.value)
    assert "HF_ENDPOINT" in msg and "local folder" in msg and "moka-ai/m3e-base" in msg


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        M3EEncoder("moka-ai/m3e-small").encode_query("x")
    assert time.monotonic() - started < 30
    assert "Cannot reach http://127.0.0.1:9" in str(info.value) and "HF_ENDPOINT" in str(info.value)


def test_folder_without_modules_json_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "hand-copied"
    shutil.copytree(tiny_model_path, copy)
    (copy / "modules.json").unlink()
    with pytest.raises(ModelLoadError, match="no modules.json.*MEAN pooling"):
        M3EEncoder(str(copy)).load()


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        M3EEncoder(str(tmp_path / "nope" / "model")).load()


def test_remote_code_stays_off(tiny_model_path: Path) -> None:
    enc = M3EEncoder(str(tiny_model_path))
    assert enc.trust_remote_code is False
    assert enc._loaded().st is not None


def test_licence_note_logged_once_for_m3e(tiny_model_path: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "m3e-base-local"
    shutil.copytree(tiny_model_path, folder)
    with caplog.at_level(logging.WARNING, logger="m3e_rag.encode.encoder"):
        M3EEncoder(str(folder)).load()
        M3EEncoder(str(folder), batch_size=3).encode_query("你好")
    assert caplog.text.count("M3E weights: check their licence") == 1


def test_prompts_prefer_non_empty_entries(tiny_model_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "prompted"
    shutil.copytree(tiny_model_path, folder)
    cfg_path = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg["prompts"] = {"query": "query: ", "document": "", "passage": "passage: "}
    cfg_path.write_text(json.dumps(cfg))
    enc = M3EEncoder(str(folder))
    assert enc.query_prompt == "query: " and enc.document_prompt == "passage: "
    plain = M3EEncoder(str(tiny_model_path))
    assert plain.query_prompt == "" and plain.document_prompt == ""
    # The prompt really reaches the model.
    np.testing.assert_allclose(
        enc.encode_query("熊猫"), plain.encode_documents(["query: 熊猫"])[0], atol=1e-5
    )
    override = M3EEncoder(str(folder), query_prompt="")
    assert override.query_prompt == ""


def test_info_reports_model_and_versions(tiny_model_path: Path) -> None:
    info = M3EEncoder(str(tiny_model_path)).info()
    assert info["dim"] == 64 and info["max_seq_length"] == 512 and info["backend"] == "torch"
    assert info["device"] == "cpu"
    assert set(info["versions"]) >= {"m3e_rag", "torch", "sentence_transformers", "transformers"}


def test_pad_features_rounds_up_masked_and_knows_when_not_to() -> None:
    import torch

    ids = torch.tensor([[101, 7, 8, 102, 0], [101, 9, 10, 11, 102]])
    mask = (ids != 0).long()
    feats = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "n": 2}
    assert _pad_features(feats, 0, 512) is feats  # under PAD_FROM_LENGTH tokens: its own length
    ids = torch.nn.functional.pad(ids, (0, PAD_FROM_LENGTH + 1 - ids.shape[1]))  # 65 tokens: rounded up
    mask = (ids != 0).long()
    feats = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "n": 2}
    out = _pad_features(feats, 0, 512)
    n = ids.shape[1]
    assert out["input_ids"].shape == (2, -(-n // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE) and n % PAD_TO_MULTIPLE
    assert out["attention_mask"][:, n:].sum() == 0 and torch.equal(out["input_ids"][:, :n], ids)
    assert out["n"] == 2 and feats["input_ids"] is ids  # the caller's dict is not modified
    # Off: left-padding tokenizers (pad id None), the position table's end, an unknown per-token tensor.
    assert _pad_features(feats, None, 512) is feats
    assert _pad_features(feats, 0, n) is feats
    odd = dict(feats, position_ids=torch.arange(n).repeat(2, 1))
    assert _pad_features(odd, 0, 512) is odd


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=600), min_size=1, max_size=80),
    max_texts=st.integers(min_value=1, max_value=40),
    max_tokens=st.integers(min_value=1, max_value=2048),
)
@settings(max_examples=200, deadline=None)
def test_batches_cover_every_text_once_within_both_budgets(lengths: list[int], max_texts: int, max_tokens: int) -> None:
    from m3e_rag.encode.batching import _batches

    arr = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-arr, kind="stable")
    batches = _batches(order, arr, max_texts, max_tokens)
    assert np.array_equal(np.concatenate(batches), order)  # every text once, longest first
    for batch in batches:
        assert 1 <= len(batch) <= max_texts
        padded = len(batch) * max(int(arr[batch].max()), 1)
        assert padded <= max_tokens or len(batch) == 1  # only a lone text may pass the token budget
