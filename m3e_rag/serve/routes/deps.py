"""What the routes share: the :class:`Service` (a FastAPI dependency), readiness, and the batcher round trip.

A route reaches the service through ``app.state.service`` (see :data:`ServiceDep`), submits texts
to the batcher with :func:`submit`, waits for them with :func:`wait` (dropping the work if the
client goes away) and runs its work under :func:`run_guarded`, which turns a departed client into
a logged 499 and the library's errors into OpenAI-shaped ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from m3e_rag.encode.inputs import cap_query_chars, check_unicode
from m3e_rag.errors import InputError, M3ERagError
from m3e_rag.serve.auth import Receive
from m3e_rag.serve.batcher import EmbedResult, Kind, QueueFullError
from m3e_rag.serve.http_errors import ApiError, ClientGone, busy, from_library, load_failed
from m3e_rag.serve.service import Service

__all__ = ["ServiceDep", "check_model", "need_index", "ready", "release_announcement", "run_guarded", "submit",
           "wait"]

# The routes lived in m3e_rag/serve/app.py; their log records keep that logger's name.
logger = logging.getLogger("m3e_rag.serve.app")


async def get_service(request: Request) -> Service:
    """The app's :class:`Service` (``app.state.service``, set by ``create_app``)."""
    service: Service = request.app.state.service
    return service


#: A route parameter receiving the app's :class:`Service`.
ServiceDep = Annotated[Service, Depends(get_service)]


def ready(service: Service) -> Service:
    """The service, once its model is loaded (503 while it loads, or with the reason if the start failed)."""
    if service.load_error is not None:
        raise load_failed(service.config, service.load_error)
    if not service.ready.is_set():
        raise busy("The model is still loading; retry in a few seconds (GET /health says when it is ready).",
                   "loading")
    return service


def check_model(service: Service, name: str | None) -> None:
    """Refuse (404) a ``model`` field naming a model this server does not serve."""
    if name is not None and name not in service.model_names:
        raise ApiError(404, f"The model '{name}' is not served here; this server serves '{service.model_id}' "
                       "(see GET /v1/models).", param="model", code="model_not_found")


def need_index(svc: Service) -> Any:
    """The served pipeline, or 404 when the server has no index."""
    if svc.pipeline is None:
        raise ApiError(404, "No index is served here; restart the server with --index DIR (or --chroma-url URL) "
                       "to enable /v1/search and /v1/ingest.", code="index_not_configured")
    return svc.pipeline


def submit(service: Service, request: Request, texts: list[str], kind: Kind) -> Future[EmbedResult]:
    """Queue texts on the batcher, handing over the gate's arrival announcement of this request."""
    state = request.scope.setdefault("state", {})
    announced = bool(state.get("m3e_announced"))
    state["m3e_announced"] = False
    assert service.batcher is not None
    try:
        return service.batcher.submit_texts(texts, kind, announced=announced)
    except M3ERagError as exc:
        if announced:  # the batcher did not take the announcement off
            service.batcher.withdraw()
        service.metrics.rejected.labels("queue_full" if isinstance(exc, QueueFullError) else "invalid").inc()
        raise from_library(exc, "input") from exc


def release_announcement(request: Request, svc: Service) -> None:
    """Withdraw the gate's announcement of a request that will queue no texts."""
    state = request.scope.setdefault("state", {})
    if state.get("m3e_announced") and svc.batcher is not None:
        state["m3e_announced"] = False
        svc.batcher.withdraw()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def wait(request: Request, future: Future[Any], param: str | None = None) -> Any:
    """The future's result; cancels it (freeing its place in the batch) if the client goes away."""
    waiting = asyncio.wrap_future(future)
    watcher = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not waiting.done():
            waiting.cancel()  # also cancels `future` if the worker has not taken it
    if not waiting.done() or waiting.cancelled():
        raise ClientGone
    try:
        return waiting.result()
    except M3ERagError as exc:
        raise from_library(exc, param) from exc


async def run_guarded(request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run a route's work: 499 (logged) if its client went away, library errors as OpenAI-shaped ones."""
    try:
        return await work()
    except ClientGone:
        logger.info("client went away before %s finished; its queued work was dropped", request.url.path)
        return Response(status_code=499)
    except M3ERagError as exc:
        raise from_library(exc) from exc


def request_query(text: str, window: int, hint: str) -> str:
    """A request's ``query``: non-empty and valid Unicode (else 400 naming the fix), cut to what a model reads.

    ``hint`` ends the empty-query message (``"query is empty; send <hint>."``). The cut comes before any
    tokenizer or BM25 work sees the text.
    """
    if not text.strip():
        raise ApiError(400, f"query is empty; send {hint}.", param="query")
    try:
        check_unicode(text)
    except InputError as exc:
        raise ApiError(400, str(exc), param="query", code="invalid_unicode") from exc
    return cap_query_chars(text, window)
