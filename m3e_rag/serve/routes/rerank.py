"""``POST /v1/rerank``: score documents against a query with the served cross-encoder (Jina/Cohere shape).

The scoring runs on the batcher's model worker, like every other model call, so reranks share
the cores with embedding requests instead of competing for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

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
    model = svc.reranker.model
    batcher = svc.batcher
    assert batcher is not None

    async def work() -> Response:
        if not docs:
            return json_response({"model": svc.reranker_id, "results": [], "usage": {"total_tokens": 0}})
        pairs = [(body.query, d) for d in docs]
        future = batcher.submit_call(lambda: _score_pairs(model, pairs))
        scores, tokens = await wait(request, future)
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
