"""Read-only views of the served index for people looking through it (the ``/ui`` playground uses them).

- ``GET /v1/index``: the index at a glance: model, chunker settings, chunk and source counts, the
  first sources by name, whether BM25 (sparse, hybrid) and a reranker are available.
- ``POST /v1/neighbours``: a chunk with the chunks around it in its source (by ``chunk_index``), each
  with its character span, so a hit can be read inside its neighbouring text.
- ``POST /v1/terms``: a query's terms as BM25 reads it (jieba for Chinese, lower-cased words): what
  a page highlights in the hits, the terms the sparse side actually matched on.

They sit under ``/v1/`` so the gate asks for the API key as for search: they return index text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from m3e_rag.errors import M3ERagError
from m3e_rag.retrieve.context import fetch_neighbours
from m3e_rag.serve.http_errors import ApiError, from_library, json_response
from m3e_rag.serve.routes.deps import ServiceDep, need_index, ready, request_query

__all__ = ["router", "NeighboursRequest", "TermsRequest", "MAX_AROUND", "MAX_SOURCES_LISTED"]

router = APIRouter()

#: Most chunks shown on each side of a hit by ``/v1/neighbours``.
MAX_AROUND = 10
#: Most source names listed by ``/v1/index`` (the count is always whole).
MAX_SOURCES_LISTED = 200


class NeighboursRequest(BaseModel):
    """``POST /v1/neighbours``: which chunk, and how many chunks to read on each side of it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="The chunk's id, as /v1/search returns it.")
    around: int = Field(2, description=f"Chunks on each side, 0 to {MAX_AROUND}.")


class TermsRequest(BaseModel):
    """``POST /v1/terms``: the query to split into BM25 terms."""

    model_config = ConfigDict(extra="forbid")
    query: str


@router.get("/v1/index", tags=["index"])
async def index_info(request: Request, service: ServiceDep) -> Response:
    """Model, chunker settings, counts and sources of the served index, and which search features it has."""
    if request.query_params:
        name = next(iter(request.query_params))
        raise ApiError(400, f"GET /v1/index takes no parameters; drop {name!r}.", param=name)
    svc = ready(service)
    pipeline = need_index(svc)

    def read() -> dict[str, Any]:
        store = pipeline.store
        desc = store.describe()
        sources = store.sources()
        return {
            "object": "index", "model": svc.model_id, "index_model": desc["model"], "dim": desc["dim"],
            "window": svc.window, "chunker": desc["chunker"], "chunks": store.count(), "sources": len(sources),
            "source_names": sources[:MAX_SOURCES_LISTED], "collection": desc["collection"],
            "location": desc["location"], "sparse": bool(pipeline.use_sparse), "reranker": svc.reranker_id,
            "max_k": svc.config.max_k,
        }

    return await _answer(read)


@router.post("/v1/neighbours", tags=["index"])
async def neighbours(body: NeighboursRequest, service: ServiceDep) -> Response:
    """The chunk ``id`` and up to ``around`` chunks before and after it in its source, in reading order."""
    if not 0 <= body.around <= MAX_AROUND:
        raise ApiError(400, f"around={body.around} is out of range; give 0 to {MAX_AROUND} chunks on each side.",
                       param="around")
    if not body.id.strip():
        raise ApiError(400, "id is empty; send a chunk id from /v1/search's results.", param="id")
    svc = ready(service)
    pipeline = need_index(svc)

    def read() -> dict[str, Any]:
        found = pipeline.get([body.id])
        if not found:
            raise ApiError(404, f"No chunk with id {body.id[:200]!r} in the index (deleted or re-ingested since "
                           "the search?); search again.", param="id", code="chunk_not_found")
        hit = found[0]
        # the library's read of a hit's neighbours (the one the LLM context widens with); a record stored
        # whole (no chunk_index) has none and comes back alone
        around = fetch_neighbours(pipeline.store, [hit], body.around) if body.around > 0 else []
        chunks = sorted(around or [hit], key=lambda c: (c.metadata.get("chunk_index", 0), c.metadata.get("start", 0)))
        return {"object": "neighbours", "id": hit.id, "source": hit.metadata.get("source"),
                "chunks": [{"id": c.id, "text": c.text, "chunk_index": c.metadata.get("chunk_index"),
                            "start": c.metadata.get("start"), "end": c.metadata.get("end")} for c in chunks]}

    return await _answer(read)


async def _answer(read: Callable[[], dict[str, Any]]) -> Response:
    """``read()`` run off the event loop (it reads the store) as the JSON answer; library errors as HTTP errors."""
    try:
        return json_response(await asyncio.to_thread(read))
    except M3ERagError as exc:
        raise from_library(exc) from exc


@router.post("/v1/terms", tags=["index"])
async def terms(body: TermsRequest, service: ServiceDep) -> Response:
    """The query's BM25 terms (each once, in order), the words a hit's text is highlighted on."""
    svc = ready(service)
    query = request_query(body.query, svc.window, "the text whose terms you want")  # /v1/search's bound
    from m3e_rag.index.sparse.tokenize import tokenize_for_bm25

    tokens = await asyncio.to_thread(tokenize_for_bm25, query)
    return json_response({"object": "terms", "terms": list(dict.fromkeys(tokens))})
