"""``POST /v1/search``: the pipeline's search over the served index (dense, sparse or hybrid; filters, MMR, rerank).

The query is bounded first, before any tokenizer or BM25 work, with the library's own cut
(:func:`m3e_rag.encode.inputs.cap_query_chars`: the model reads its window and nothing more, so a
10 MB query costs what a few kilobytes cost); the pipeline's search then makes the exact cut at the
window's last token. The query is embedded on the batcher's model worker (a sparse search without
MMR needs no vector), then the search runs in a thread. It does not wait for an ingest in progress,
at most for the ingest step being written (see :mod:`m3e_rag.serve.service`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from m3e_rag.errors import InputError
from m3e_rag.serve.http_errors import ApiError, json_response
from m3e_rag.serve.routes.deps import (
    ServiceDep,
    need_index,
    ready,
    release_announcement,
    request_query,
    run_guarded,
    submit,
    wait,
)
from m3e_rag.serve.schemas import SearchRequest

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/search", tags=["index"])
async def search(body: SearchRequest, request: Request, service: ServiceDep) -> Response:
    """Search the served index: the pipeline's search (dense, sparse or hybrid; filters, MMR, rerank)."""
    svc = ready(service)
    pipeline = need_index(svc)
    query = request_query(body.query, svc.window, "the text to search for")
    for name in ("k", "fetch_k", "rerank_top_n"):
        value = getattr(body, name)
        if value is not None and value > svc.config.max_k:
            raise ApiError(400, f"{name}={value} is over this server's limit of {svc.config.max_k}.", param=name)
    if body.rerank and svc.reranker is None:
        raise ApiError(400, "rerank=true needs a reranker, and none is configured: restart the server with "
                       "--reranker MODEL, or drop rerank.", param="rerank", code="reranker_not_configured")
    if body.rerank_top_n is not None and not body.rerank:
        raise ApiError(400, "rerank_top_n only applies with rerank=true.", param="rerank_top_n")
    from m3e_rag.index.boundary import check_filters

    try:
        check_filters(body.where, body.where_document)
    except InputError as exc:
        raise ApiError(400, str(exc), param="where_document" if "where_document" in str(exc) else "where",
                       code="invalid_filter") from exc

    async def work() -> Response:
        vector = None
        if body.mode != "sparse" or body.mmr:
            vector = (await wait(request, submit(svc, request, [query], "query"), "query")).vectors[0]
        else:
            release_announcement(request, svc)
        hits = await asyncio.to_thread(  # no lock: a search reads while an ingest writes
            pipeline.search, query, body.k, where=body.where, where_document=body.where_document,
            mode=body.mode, mmr=body.mmr, fetch_k=body.fetch_k, lambda_mult=body.lambda_mult,
            score_threshold=body.score_threshold, reranker=svc.reranker if body.rerank else None,
            rerank_top_n=body.rerank_top_n, query_vector=vector, sparse=body.sparse, colbert=body.colbert,
        )
        return json_response({"object": "list", "model": svc.model_id, "mode": body.mode,
                              "data": [{"id": h.id, "text": h.text, "score": h.score, "metadata": h.metadata}
                                       for h in hits]})

    return await run_guarded(request, work)
