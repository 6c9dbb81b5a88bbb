"""The GPU path's two decisions, exercised on CPU (no GPU on these machines).

- ``dtype=None`` on CUDA runs float16 only if a check at load finds its vectors close to float32's
  (``_settle_precision``); the function is device-agnostic, so it is driven here on CPU, where torch
  also runs float16 and bfloat16.
- Tokenizing the next batch while the model runs the current one (``TOKENIZE_AHEAD``, on by default on
  CUDA only) must give the very same vectors, in the same order, as the plain loop.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import m3e_rag.encode.batching as batching_module
import m3e_rag.encode.precision as precision_module
from m3e_rag import M3EEncoder
from m3e_rag.encode.precision import HALF_MIN_COSINE, _probe_vectors, _settle_precision


def _fresh(path: Path) -> object:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").eval()


def test_float16_is_chosen_by_default_when_its_vectors_keep(tiny_model_path: Path) -> None:
    st = _fresh(tiny_model_path)
    reference = _probe_vectors(st)
    model, dtype, cosine = _settle_precision(st, None, half_by_default=True)
    assert dtype == "float16" and next(model.parameters()).dtype == torch.float16
    assert cosine is not None and cosine >= HALF_MIN_COSINE
    # The check worked on a copy: the float32 model is untouched, to fall back to.
    assert model is not st and next(st.parameters()).dtype == torch.float32
    assert np.array_equal(_probe_vectors(st), reference)


def test_float32_is_kept_when_float16_breaks_the_vectors(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = _fresh(tiny_model_path)
    with torch.no_grad():  # weights past float16's range (65,504): inf once halved, NaN vectors
        st[0].auto_model.embeddings.word_embeddings.weight.mul_(1e6)
    reference = _probe_vectors(st)
    with caplog.at_level(logging.WARNING, logger="m3e_rag.encode.encoder"):
        model, dtype, cosine = _settle_precision(st, None, half_by_default=True)
    assert model is st and dtype == "float32" and next(st.parameters()).dtype == torch.float32
    assert cosine is not None and not cosine >= HALF_MIN_COSINE
    assert np.array_equal(_probe_vectors(st), reference)
    assert "runs in float32" in caplog.text and "dtype='float32'" in caplog.text


def test_named_half_dtype_is_honoured_and_a_loose_one_is_reported(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _fresh(tiny_model_path)
    model, dtype, cosine = _settle_precision(st, "bfloat16", half_by_default=False)
    assert dtype == "bfloat16" and next(model.parameters()).dtype == torch.bfloat16
    assert cosine is not None and 0.999 < cosine < 1.0 - 1e-7  # bfloat16 rounds visibly (8-bit mantissa)
    assert "min cosine" not in caplog.text
    # Asked for explicitly, half precision is kept even under the bound, and the user is told.
    monkeypatch.setattr(precision_module, "HALF_MIN_COSINE", 1.0 - 1e-7)
    with caplog.at_level(logging.WARNING, logger="m3e_rag.encode.encoder"):
        model, dtype, cosine = _settle_precision(_fresh(tiny_model_path), "bfloat16", half_by_default=False)
    assert dtype == "bfloat16" and next(model.parameters()).dtype == torch.bfloat16
    assert "dtype='bfloat16'" in caplog.text and "min cosine" in caplog.text


def test_float32_and_cpu_defaults_run_no_check(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(precision_module, "_probe_vectors", lambda st: calls.append(1))
    st = _fresh(tiny_model_path)
    assert _settle_precision(st, "float32", half_by_default=True) == (st, "float32", None)
    assert _settle_precision(st, None, half_by_default=False) == (st, "float32", None)
    assert calls == []


def test_cpu_encoder_reports_float32_unchecked(tiny_model_path: Path) -> None:
    info = M3EEncoder(str(tiny_model_path), device="cpu").info()
    assert info["dtype"] == "float32" and info["half_precision_min_cosine"] is None


def test_tokenize_ahead_gives_the_same_vectors_from_a_helper_thread(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"第{i}段：大熊猫主要吃竹子。" * (1 + i % 7) + "The panda eats bamboo." * (i % 3) for i in range(40)]
    enc = M3EEncoder(str(tiny_model_path), device="cpu", batch_size=4)
    monkeypatch.setattr(batching_module, "TOKENIZE_AHEAD", False)
    plain = enc.encode_documents(texts)

    threads: list[str] = []
    prepare = M3EEncoder._prepare

    def spy(self: M3EEncoder, *args: object) -> object:
        threads.append(threading.current_thread().name)
        return prepare(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(M3EEncoder, "_prepare", spy)
    monkeypatch.setattr(batching_module, "TOKENIZE_AHEAD", True)
    ahead = enc.encode_documents(texts)
    assert np.array_equal(ahead, plain)
    assert len(threads) >= 10 and all(name.startswith("m3e-tokenize") for name in threads)


def test_tokenize_ahead_passes_a_failure_through(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = M3EEncoder(str(tiny_model_path), device="cpu", batch_size=2)
    prepare = M3EEncoder._prepare
    seen: list[int] = []

    def failing(self: M3EEncoder, model: object, batch: list[str], prompt: str) -> object:
        seen.append(len(batch))
        if len(seen) == 3:
            raise RuntimeError("tokenizer failed on batch 3")
        return prepare(self, model, batch, prompt)  # type: ignore[arg-type]

    monkeypatch.setattr(M3EEncoder, "_prepare", failing)
    monkeypatch.setattr(batching_module, "TOKENIZE_AHEAD", True)
    with pytest.raises(RuntimeError, match="batch 3"):
        enc.encode_documents([f"文本{i}" * (i + 1) for i in range(8)])
    # The model's lock is free again: the next call works.
    monkeypatch.setattr(M3EEncoder, "_prepare", prepare)
    assert enc.encode_documents(["熊猫"]).shape == (1, enc.dim)
