"""``return_sparse`` on ``/v1/embeddings``: dense vectors and lexical weights from one forward pass.

For a model whose folder ships a sparse head (BGE-M3's ``sparse_linear.pt``), the request's texts are
encoded by :meth:`~m3e_rag.encode.encoder.M3EEncoder.encode_outputs` on the model worker, ``max_batch_texts``
at a time, each slice a call taking its own turn (as reranks do), so a large sparse request shares the
worker fairly with everyone else's batches. The dense vectors equal what the request would get without
``return_sparse``; the weights are FlagEmbedding's lexical weights, keyed by the model's token ids.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request

from m3e_rag.errors import InputTooLongError
from m3e_rag.serve.batcher import EmbedResult, Kind
from m3e_rag.serve.routes.deps import release_announcement, wait

if TYPE_CHECKING:
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.serve.service import Service

__all__ = ["embed_with_sparse", "sparse_item"]


def sparse_item(weights: dict[str, float]) -> dict[str, list[Any]]:
    """``{"indices": [token ids, ascending], "values": [weights]}``: the shape Qdrant and Milvus take."""
    pairs = sorted((int(token), float(value)) for token, value in weights.items())
    return {"indices": [t for t, _ in pairs], "values": [v for _, v in pairs]}


def _encode_slice(encoder: M3EEncoder, texts: list[str], kind: Kind, window: int,
                  refuse_over: bool) -> tuple[np.ndarray, list[dict[str, float]], list[int]]:
    """Dense vectors, lexical weights and window-capped token counts of one slice (runs on the model worker)."""
    prompt = encoder.query_prompt if kind == "query" else encoder.document_prompt
    counts = encoder.count_tokens(texts, prompt)
    over = next(((i, c) for i, c in enumerate(counts) if c > window), None)
    if refuse_over and over is not None:
        raise InputTooLongError(
            f"an input has {over[1]} tokens, more than the model's window of {window}; split long texts before "
            "embedding them, or start the server with --on-overflow truncate."
        )
    out = encoder.encode_outputs(texts, kind, sparse=True)
    assert out.lexical is not None
    return out.dense, out.lexical, [min(c, window) for c in counts]


async def embed_with_sparse(request: Request, svc: Service, texts: list[str],
                            kind: Kind) -> tuple[EmbedResult, list[dict[str, float]]]:
    """The request's dense vectors (as an :class:`EmbedResult`) and lexical weights, slice by slice."""
    release_announcement(request, svc)  # nothing is queued as texts: the worker must not wait for it
    batcher = svc.batcher
    assert batcher is not None and svc.encoder is not None
    step = batcher.max_batch_texts
    refuse = svc.config.on_overflow == "error"
    dense: list[np.ndarray] = []
    weights: list[dict[str, float]] = []
    tokens: list[int] = []
    for start in range(0, len(texts), step):
        call = partial(_encode_slice, svc.encoder, texts[start : start + step], kind, svc.window, refuse)
        part_dense, part_weights, part_tokens = await wait(request, batcher.submit_call(call), "input")
        dense.append(part_dense)
        weights.extend(part_weights)
        tokens.extend(part_tokens)
    return EmbedResult(np.concatenate(dense), tokens), weights
