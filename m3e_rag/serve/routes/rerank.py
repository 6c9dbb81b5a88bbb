"""``POST /v1/rerank``: score documents against a query with the served cross-encoder (Jina/Cohere shape).

The scoring runs on the batcher's model worker, like every other model call, so reranks share
the cores with embedding requests instead of competing for them. Documents are scored
``max_batch_texts`` at a time, each slice a call taking its own turn at the worker: a rerank of
2,048 documents does not hold up the requests behind it, and stops at the next slice if its client
goes away. The query is cut to what the cross-encoder can read before it is paired with anything
(:func:`m3e_rag.encode.inputs.cap_query_chars`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from m3e_rag.encode.inputs import cap_query_chars, check_unicode
from m3e_rag.errors import InputError
from m3e_rag.serve.http_errors import ApiError, json_response
from m3e_rag.serve.routes.deps import ServiceDep, ready, run_guarded, wait
from m3e_rag.serve.schemas import RerankRequest

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/rerank", tags=["rerank"])
async def rerank(body: RerankRequest, request: Request, service: ServiceDep) -> Response:
    """Score documents against a query with the cross-encoder (Jina/Cohere shape)."""
    svc = ready(service)
    if svc.reranker is None:
        raise ApiError(404, "No reranker is configured on this server; restart it with --reranker MODEL "
                       "(a cross-encoder name or folder).", code="reranker_not_configured")
    if body.model is not None and body.model not in {svc.reranker_id, svc.config.reranker}:
        raise ApiError(404, f"The reranker '{body.model}' is not served here; this server serves "
                       f"'{svc.reranker_id}'.", param="model", code="model_not_found")
    if not body.query.strip():
        raise ApiError(400, "query is empty; send the text to rank documents against.", param="query")
    docs = [d if isinstance(d, str) else d.text for d in body.documents]
    if len(docs) > svc.config.max_inputs:
        raise ApiError(413, f"documents has {len(docs)} items, over the limit of {svc.config.max_inputs}.",
                       param="documents", code="too_many_inputs")
    for name, text in [("query", body.query), *((f"documents[{i}]", d) for i, d in enumerate(docs))]:
        try:
            check_unicode(text, name)
        except InputError as exc:
            raise ApiError(400, str(exc), param=name.split("[")[0], code="invalid_unicode") from exc
    model = svc.reranker.model
    batcher = svc.batcher
    assert batcher is not None
    query = cap_query_chars(body.query, _window(model, svc.window))

    async def work() -> Response:
        if not docs:
            return json_response({"model": svc.reranker_id, "results": [], "usage": {"total_tokens": 0}})
        pairs = [(query, d) for d in docs]
        step = batcher.max_batch_texts
        parts: list[np.ndarray] = []
        tokens = 0
        for start in range(0, len(pairs), step):  # one turn at the worker per slice
            part = pairs[start : start + step]
            part_scores, part_tokens = await wait(request, batcher.submit_call(partial(_score_pairs, model, part)))
            parts.append(part_scores)
            tokens += part_tokens
        scores = np.concatenate(parts)
        order = np.argsort(-scores, kind="stable")[: body.top_n or len(docs)]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
            if body.return_documents:
                item["document"] = {"text": docs[int(i)]}
            results.append(item)
        return json_response({"model": svc.reranker_id, "results": results,
                              "usage": {"total_tokens": tokens}})

    return await run_guarded(request, work)


def _window(model: Any, default: int) -> int:
    """The cross-encoder's token window (query and passage together), else ``default``."""
    loader = getattr(model, "load", None)  # m3e_rag.retrieve.rerank.CrossEncoderReranker wraps the CrossEncoder
    loaded = loader() if callable(loader) else model
    value = getattr(loaded, "max_seq_length", None)  # sentence-transformers >= 5 (max_length before)
    value = value if value is not None else getattr(loaded, "max_length", None)
    return value if isinstance(value, int) and value > 0 else default


def _score_pairs(model: Any, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
    """Cross-encoder scores of the pairs and the tokens it read (runs on the model worker)."""
    scores = np.asarray(model.predict(pairs), dtype=np.float64).reshape(-1)
    tokens = 0
    loader = getattr(model, "load", None)  # m3e_rag.retrieve.rerank.CrossEncoderReranker wraps the CrossEncoder
    tokenizer = getattr(loader() if callable(loader) else model, "tokenizer", None)
    if tokenizer is not None:
        encoded = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True)
        tokens = int(sum(len(ids) for ids in encoded["input_ids"]))
    return scores, tokens
