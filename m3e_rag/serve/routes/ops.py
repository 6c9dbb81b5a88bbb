"""The operators' routes: ``GET /health`` (for load balancers) and ``GET /metrics`` (Prometheus text).

``/health`` answers before the model is ready (503 while it loads, 500 if the start failed, with the
reason), so it does not go through :func:`~m3e_rag.serve.routes.deps.ready` as the model routes do.
It reads only the service's state and the index folder's presence: it never waits for the model
worker, the index lock or a thread, so it answers while the worker is busy.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from m3e_rag.serve.http_errors import json_response, startup_failure
from m3e_rag.serve.metrics import CONTENT_TYPE_LATEST
from m3e_rag.serve.routes.deps import ServiceDep
from m3e_rag.serve.service import Service

__all__ = ["router"]

router = APIRouter()


@router.get("/health", tags=["ops"])
async def health(service: ServiceDep) -> Response:
    """200 once the model is loaded; 503 while it loads or when the index folder is gone; 500 if the start failed."""
    if service.load_error is not None:
        return json_response({"status": "failed", "error": startup_failure(service.config, service.load_error)}, 500)
    if not service.ready.is_set():
        return json_response({"status": "loading"}, 503, {"Retry-After": "1"})
    gone = _index_gone(service)
    if gone is not None:
        return json_response({"status": "unhealthy", "error": gone}, 503)
    return json_response({"status": "ok", "model": service.model_id, "dim": service.dim,
                          "queue_texts": service.batcher.queued_texts if service.batcher else 0})


def _index_gone(service: Service) -> str | None:
    """Why the served index folder is unusable (removed, or replaced by a file), or None while it is there."""
    folder = service.config.index
    if folder is None or folder.is_dir():
        return None
    return (f"The index folder {str(folder)!r} is gone (removed or moved while the server ran): search and "
            "ingest cannot work. Restore the folder and restart the server, or restart it with another --index.")


@router.get("/metrics", tags=["ops"])
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text: requests, latency, batch sizes, queue depth, tokens, cancellations."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
