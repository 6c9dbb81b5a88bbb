"""ColBERT as a second stage: the fused candidates rescored by BGE-M3's three scores, combined as FlagEmbedding does.

A model folder that ships ``colbert_linear.pt`` gives one vector per token (:mod:`m3e_rag.encode.bge_m3`).
Ranking a whole index by ColBERT would need every chunk's token vectors; as a second stage it needs only the
candidates': :func:`colbert_rescore` runs the model once over the candidates' texts (dense, lexical and
ColBERT from the same forward pass) and ranks them by :func:`~m3e_rag.encode.bge_m3.combined_score` of the
dense, lexical and ColBERT scores, FlagEmbedding's ``"colbert+sparse+dense"`` with its default weights.

Why recompute rather than store the token vectors (``benchmarks/bge_m3_pipeline.py``, stand-in, 384-d, XQuAD
English chunks of 159 tokens on average, 2 shared cores at load average about 7): rescoring 40 candidates took
12.3 s per query (p50 of 10) recomputed, 71 ms read from a float16 side file; but the side file costs 122 KB per
chunk at 384-d, 326 KB at BGE-M3's 1,024-d (about 330 GB per million chunks, 80 times the 4 KB dense vector
of a chunk), written at ingest by every model with the head whether or not ColBERT is ever asked for.
Recomputing keeps the index the size it is and costs nothing until asked; the stage is off by default
(``colbert=False``), and ``fetch_k`` (20 by default) bounds its cost per query. On a GPU the recompute is a
single small batch. Figures: ``benchmarks/results/bge_m3_pipeline.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from m3e_rag.encode.bge_m3 import DEFAULT_WEIGHTS, colbert_score, combined_score, lexical_score
from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.types import RetrievedChunk

__all__ = ["colbert_rescore"]


def colbert_rescore(
    encoder: TextEncoder,
    query_outputs: Any,
    query_vector: np.ndarray,
    candidates: Sequence[RetrievedChunk],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> list[RetrievedChunk]:
    """``candidates`` ranked by the combined dense, lexical and ColBERT score of the query against each.

    Args:
        encoder: a model with sparse and ColBERT heads (its ``encode_outputs`` runs once over the candidates).
        query_outputs: the query's ``ModelOutputs`` with ``lexical`` and ``colbert`` (one row).
        query_vector: the query's dense vector (unit length).
        candidates: the fused candidates to rescore.
        weights: (dense, lexical, ColBERT) weights of :func:`~m3e_rag.encode.bge_m3.combined_score`.

    Returns:
        The candidates, best first by the combined score (ties keep their fused order), that score as ``score``.
    """
    if not candidates:
        return []
    docs = encoder.encode_outputs(  # type: ignore[attr-defined]
        [c.text for c in candidates], "document", sparse=True, colbert=True
    )
    q_lex, q_col = query_outputs.lexical[0], query_outputs.colbert[0]
    dense = docs.dense @ np.asarray(query_vector, dtype=np.float32)
    scored = []
    for i, chunk in enumerate(candidates):
        score = combined_score(float(dense[i]), lexical_score(q_lex, docs.lexical[i]),
                               colbert_score(q_col, docs.colbert[i]), weights)
        scored.append(RetrievedChunk(chunk.id, chunk.text, score, chunk.metadata))
    order = sorted(range(len(scored)), key=lambda i: -scored[i].score)  # stable: ties keep the fused order
    return [scored[i] for i in order]
