"""Which precision a torch model runs in: float32, or half precision where its vectors stay close.

Half precision halves a CUDA model's memory and speeds it up, but rounds every activation; a model whose
activations overflow float16 gives NaN. So with ``dtype=None`` the choice is made once, at load, by
encoding a few probe texts both ways and comparing the vectors; a dtype named by the user is honoured,
with a warning when its vectors move.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from m3e_rag.encode.torch_backend import _st_embeddings

if TYPE_CHECKING:
    from m3e_rag.encode.cache import SentenceModel

__all__ = ["HALF_MIN_COSINE"]

# The encoder's name, as before these helpers left encoder.py: the CLI's log lines show it.
logger = logging.getLogger("m3e_rag.encode.encoder")

#: With ``dtype=None`` (the default) a CUDA model runs in float16 if its vectors on :data:`_PROBE_TEXTS` keep
#: at least this cosine to float32's (checked once, at load); otherwise it stays float32 and says why.
#: 0.9999 bounds the rounding's distance between unit vectors at 0.014, well under the score gaps that
#: order search results; float16 and bfloat16 keep well above it on the stand-in models (figures:
#: benchmarks/README.md, 'Design figures'). A model that overflows float16 (activations past 65,504) gives
#: NaN and stays float32.
HALF_MIN_COSINE = 0.9999

#: Short bilingual texts and one that fills the window: what the half-precision check encodes both ways.
_PROBE_TEXTS = (
    "大熊猫主要吃竹子，每天要花十几个小时进食。",
    "What does the giant panda eat, and how long does it spend eating each day?",
    "2023年第三季度营收同比增长12.5%，净利润3.2亿元（RMB）。",
    "用户可以通过 pip install m3e-rag 安装，然后运行 m3e-rag ingest docs/ 建立索引。",
    "熊猫",
    "长江是中国第一长河，全长约6300公里。The Yangtze is the longest river in Asia. " * 24,
)


def _probe_vectors(st: SentenceModel) -> np.ndarray:
    """Unit float32 vectors of :data:`_PROBE_TEXTS` from ``st`` as it is (its device and dtype)."""
    import torch

    with torch.inference_mode():
        emb = _st_embeddings(st, st.preprocess(list(_PROBE_TEXTS)))
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _settle_precision(
    st: SentenceModel, requested: str | None, *, half_by_default: bool
) -> tuple[SentenceModel, str, float | None]:
    """Put ``st`` in the precision to run: ``(model, dtype name, min cosine half vs float32 or None)``.

    ``requested`` None means float16 where ``half_by_default`` (CUDA, torch backend) and its vectors keep
    :data:`HALF_MIN_COSINE` to float32's on the probe texts, else float32 (a warning says why); a named
    half dtype is honoured, with a warning when it falls under that bound; "float32" is kept as it is.
    """
    if requested == "float32" or (requested is None and not half_by_default):
        return st, "float32", None
    import copy

    import torch

    dtype = requested or "float16"
    reference = _probe_vectors(st)
    # A copy when the choice is ours, so that float32 stays exact if the check fails.
    half = (copy.deepcopy(st) if requested is None else st).to(getattr(torch, dtype))
    cosine = float(np.min(np.sum(reference * _probe_vectors(half), axis=1)))
    if cosine >= HALF_MIN_COSINE:  # False for NaN too (an overflow in half precision)
        logger.info("Running %s: its vectors keep cosine >= %.5f to float32's on the probe texts", dtype, cosine)
        return half, dtype, cosine
    if requested is None:
        del half
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.warning(
            "float16 moved this model's vectors too far from float32's (min cosine %.5f < %.4f on %d probe "
            "texts), so it runs in float32 (twice the memory, slower). Pass dtype='float32' to skip this check, "
            "or dtype='float16' to run half precision anyway.", cosine, HALF_MIN_COSINE, len(_PROBE_TEXTS))
        return st, "float32", cosine
    logger.warning(
        "dtype=%r moves this model's vectors from float32's (min cosine %.5f < %.4f on %d probe texts); "
        "search results may differ from a float32 index. dtype=None chooses for you.",
        dtype, cosine, HALF_MIN_COSINE, len(_PROBE_TEXTS))
    return half, dtype, cosine
