"""The oneDNN path of the torch backend: same vectors, and the original weights let go."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from m3e_rag._onednn import PackedLinear, onednn_available, use_onednn_linears  # noqa: E402

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
