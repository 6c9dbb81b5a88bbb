"""BGE-M3's three outputs and scores from m3e-rag against FlagEmbedding's own ``BGEM3FlagModel``.

Both run the BGE-M3-shaped stand-in (XLM-R with CLS pooling and random heads in BGE-M3's files) on CPU in
float32. FlagEmbedding is a test dependency only (``FlagEmbedding==1.4.2``); without it these tests fail
with an ImportError rather than pass unseen. Bounds (issue 22): dense cosine >= 0.9999; lexical weights on
the same token ids, ColBERT vectors and every score to 1e-5.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3e_rag import M3EEncoder
from m3e_rag.encode.bge_m3 import ModelOutputs, colbert_score, combined_score, lexical_score
from tests.support import standins
from tests.support.bge_texts import BGE_M3_QUERIES, BGE_M3_TEXTS

TOL = 1e-5
WINDOW = 512  # the stand-in's window (XLM-R's 514 positions less the two offsets)
BASE_TEXTS = BGE_M3_TEXTS
QUERIES = BGE_M3_QUERIES


def _at_window(tokenizer: Any, size: int) -> str:
    """A Chinese-English text of exactly ``size`` tokens, special tokens included."""
    text = ("长城是中国古代的军事防御工程。The Great Wall stretches thousands of kilometres. " * 80).strip()
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = text[: offsets[size - 3][1]]  # size - 2 text tokens (+ <s> and </s>)
    assert len(tokenizer(cut)["input_ids"]) == size
    return cut


@pytest.fixture(scope="module")
def setup() -> tuple[M3EEncoder, Any, dict[str, str]]:
    """Our encoder and FlagEmbedding's model on the same stand-in folder, and the texts by kind."""
    from FlagEmbedding import BGEM3FlagModel

    path: Path = standins.bge_m3_standin()
    ours = M3EEncoder(str(path), device="cpu", on_overflow="truncate")
    theirs = BGEM3FlagModel(str(path), use_fp16=False, devices="cpu", passage_max_length=WINDOW,
                            query_max_length=WINDOW)
    texts = dict(BASE_TEXTS)
    texts["at the window"] = _at_window(ours.tokenizer, WINDOW)
    texts["past the window"] = texts["at the window"] + " 还有更多的文字。" * 50  # truncated by both
    return ours, theirs, texts


def _theirs(model: Any, texts: list[str], side: str) -> dict[str, Any]:
    encode = model.encode_queries if side == "query" else model.encode_corpus
    return encode(texts, return_dense=True, return_sparse=True, return_colbert_vecs=True)  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize("side", ["document", "query"])
def test_outputs_match_flagembedding(setup: tuple[M3EEncoder, Any, dict[str, str]], side: str) -> None:
    ours, theirs, texts = setup
    kinds, items = list(texts), list(texts.values())
    mine: ModelOutputs = ours.encode_outputs(items, side, sparse=True, colbert=True)  # type: ignore[arg-type]
    ref = _theirs(theirs, items, side)
    assert mine.lexical is not None and mine.colbert is not None
    for i, kind in enumerate(kinds):
        cosine = float(mine.dense[i] @ ref["dense_vecs"][i]) / float(np.linalg.norm(ref["dense_vecs"][i]))
        assert cosine >= 0.9999, (kind, cosine)
        lex_ref = {k: float(v) for k, v in ref["lexical_weights"][i].items()}
        assert mine.lexical[i].keys() == lex_ref.keys(), kind  # the same token ids
        assert len(lex_ref) > 0, kind  # the stand-in's head gives every text some positive weight
        worst = max(abs(v - lex_ref[k]) for k, v in mine.lexical[i].items())
        assert worst <= TOL, (kind, worst)
        assert mine.colbert[i].shape == ref["colbert_vecs"][i].shape, kind
        assert float(np.abs(mine.colbert[i] - ref["colbert_vecs"][i]).max()) <= TOL, kind
    assert mine.colbert[kinds.index("past the window")].shape[0] == WINDOW - 1


@pytest.mark.slow
@pytest.mark.parametrize("weights", [None, (0.4, 0.2, 0.4)])
def test_scores_match_flagembedding(
    setup: tuple[M3EEncoder, Any, dict[str, str]], weights: tuple[float, float, float] | None
) -> None:
    ours, theirs, texts = setup
    # Every query against every short text, and one against the text at the window (scored apart, so the
    # short pairs are not padded to 512 tokens: FlagEmbedding pads a whole list of pairs as one batch).
    pairs = [(QUERIES[q], texts[p]) for q in QUERIES for p in BASE_TEXTS] + [(QUERIES["mixed"], texts["at the window"])]
    ref: dict[str, list[float]] = {}
    for part in (pairs[:-1], pairs[-1:]):
        scored = theirs.compute_score(part, max_query_length=WINDOW, max_passage_length=WINDOW,
                                      weights_for_different_modes=None if weights is None else list(weights))
        for name, values in scored.items():
            ref.setdefault(name, []).extend(values)
    queries = ours.encode_outputs(list(QUERIES.values()), "query", sparse=True, colbert=True)
    docs = ours.encode_outputs(list(texts.values()), "document", sparse=True, colbert=True)
    assert queries.lexical is not None and queries.colbert is not None
    assert docs.lexical is not None and docs.colbert is not None
    chosen = {} if weights is None else {"weights": weights}
    shared = 0
    order = [(qi, pi) for qi in range(len(QUERIES)) for pi in range(len(BASE_TEXTS))]
    order.append((list(QUERIES).index("mixed"), list(texts).index("at the window")))
    for n, (qi, pi) in enumerate(order):
        dense = float(queries.dense[qi] @ docs.dense[pi])
        lexical = lexical_score(queries.lexical[qi], docs.lexical[pi])
        colbert = colbert_score(queries.colbert[qi], docs.colbert[pi])
        shared += lexical > 0
        mine = {
            "dense": dense, "sparse": lexical, "colbert": colbert,
            "sparse+dense": combined_score(dense, lexical, None, **chosen),
            "colbert+sparse+dense": combined_score(dense, lexical, colbert, **chosen),
        }
        for name, value in mine.items():
            assert math.isclose(value, ref[name][n], abs_tol=TOL), (pairs[n], name, value, ref[name][n])
    assert shared >= 4  # the lexical scores compared are not all zero
