"""The operators' routes: ``GET /health`` (for load balancers) and ``GET /metrics`` (Prometheus text).

``/health`` answers before the model is ready (503 while it loads, 500 if it failed), so it does
not go through :func:`~m3e_rag.serve.routes.deps.ready` as the model routes do.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from m3e_rag.serve.http_errors import json_response
from m3e_rag.serve.metrics import CONTENT_TYPE_LATEST
from m3e_rag.serve.routes.deps import ServiceDep

__all__ = ["router"]

router = APIRouter()


@router.get("/health", tags=["ops"])
async def health(service: ServiceDep) -> Response:
    """200 once the model is loaded; 503 while it loads; 500 if it failed."""
    if service.load_error is not None:
        return json_response({"status": "failed", "error": str(service.load_error)}, 500)
    if not service.ready.is_set():
        return json_response({"status": "loading"}, 503, {"Retry-After": "1"})
    return json_response({"status": "ok", "model": service.model_id, "dim": service.dim,
                          "queue_texts": service.batcher.queued_texts if service.batcher else 0})


@router.get("/metrics", tags=["ops"])
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text: requests, latency, batch sizes, queue depth, tokens, cancellations."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
