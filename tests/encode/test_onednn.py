"""The oneDNN path of the torch backend: same vectors, and the original weights let go."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from m3e_rag.encode.onednn import PackedLinear, onednn_available, use_onednn_linears  # noqa: E402

TEXTS = ["大熊猫主要吃竹子。", "The Great Wall is long.", "混合 text 与 123 数字"]


def test_packed_model_encodes_like_the_original(tiny_model_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    if not onednn_available():
        pytest.fail("oneDNN's packed linear is missing from this torch build; the torch backend would be slow")
    plain = SentenceTransformer(str(tiny_model_path), device="cpu").eval()
    packed = SentenceTransformer(str(tiny_model_path), device="cpu").eval()
    swapped = use_onednn_linears(packed)
    assert swapped > 0 and not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == swapped
    want = plain.encode(TEXTS, normalize_embeddings=True)
    got = packed.encode(TEXTS, normalize_embeddings=True)
    assert np.allclose(got, want, atol=1e-5)  # the pages released under the old weights were not in use


def test_packing_waits_for_enough_work(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-shot query never pays for packing; the first call that brings ONEDNN_AFTER_TOKENS packs first."""
    from m3e_rag.encode import cache as cache_mod
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.encode.torch_backend import ONEDNN_AFTER_TOKENS, ONEDNN_ENV

    monkeypatch.setattr(cache_mod, "_MODELS", {})  # a model of its own, not one another test packed
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    encoder = M3EEncoder(str(tiny_model_path), device="cpu", backend="torch")
    model = encoder._loaded()

    def packed() -> int:
        return sum(isinstance(m, PackedLinear) for m in model.st.modules())

    query = encoder.encode_query("黑豹队的防守丢了多少分？")
    assert model.onednn_pending and packed() == 0 and model.stats.tokens < ONEDNN_AFTER_TOKENS
    docs = ["长城是中国古代的军事防御工程。The Great Wall is long. " * 4] * 8
    assert sum(encoder.count_tokens(docs)) + model.stats.tokens >= ONEDNN_AFTER_TOKENS
    got = encoder.encode_documents(docs)
    assert not model.onednn_pending and packed() > 0
    assert np.allclose(encoder.encode_query("黑豹队的防守丢了多少分？"), query, atol=1e-5)
    monkeypatch.setattr(cache_mod, "_MODELS", {})
    monkeypatch.setenv(ONEDNN_ENV, "0")
    plain = M3EEncoder(str(tiny_model_path), device="cpu", backend="torch")
    assert np.allclose(plain.encode_documents(docs), got, atol=1e-5)
    assert not plain._loaded().onednn_pending and not any(
        isinstance(m, PackedLinear) for m in plain._loaded().st.modules()
    )


def test_kernel_caches_capped_unless_the_process_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing caps oneDNN's and ideep's kernel caches (both: ideep keeps what it caches), never a user's value."""
    from m3e_rag.encode import onednn as _onednn

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "500")
    use_onednn_linears(torch.nn.Sequential(torch.nn.Linear(8, 4)))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(_onednn.CACHE_CAPACITY)
    assert os.environ["LRU_CACHE_CAPACITY"] == "500"


def test_heap_trimmed_by_work_done_not_by_batch(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short queries trim once per TRIM_EVERY_PADDED_TOKENS between them; batches under that bound still add up."""
    from m3e_rag.encode import batching as batching_mod
    from m3e_rag.encode.encoder import M3EEncoder

    trims: list[int] = []
    monkeypatch.setattr(batching_mod, "_trim_heap", lambda: trims.append(1))
    monkeypatch.setattr(batching_mod, "TRIM_EVERY_PADDED_TOKENS", 256)
    encoder = M3EEncoder(str(tiny_model_path), device="cpu")
    model = encoder._loaded()
    model.untrimmed_tokens = 0
    before = model.stats.padded_tokens
    queries = [f"第{i}个问题是什么？" for i in range(12)]
    for query in queries:
        encoder.encode_query(query)  # short: each padded to its own length only
    short = model.stats.padded_tokens - before
    assert short == sum(encoder.count_tokens(queries, encoder.query_prompt)) < 256 and trims == []
    doc = next(t for t in ("长城是中国古代的军事防御工程。" * n for n in range(4, 16))
               if encoder.count_tokens([t])[0] + short >= 256)
    assert encoder.count_tokens([doc])[0] < 256
    encoder.encode_documents([doc])  # one batch under 256 tokens: the sum passes it
    assert trims == [1] and model.untrimmed_tokens == 0
