"""The ``m3e-rag serve`` app (FastAPI), in OpenAI's and Jina/Cohere's shapes: assembly of the routes.

Routes: ``POST /v1/embeddings``, ``GET /v1/models``, ``POST /v1/rerank``, ``POST /v1/search``,
``POST /v1/ingest``, ``GET /v1/index``, ``POST /v1/neighbours``, ``POST /v1/terms``, ``GET /health``,
``GET /metrics``, ``GET /ui`` (the playground page) (and FastAPI's ``/openapi.json``, ``/docs``).
Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``; a 422 also carries
FastAPI's ``detail`` list, and its ``param`` names the offending field.

Status codes: 400 bad value (token ids, empty text, wrong ``dimensions``, a text over the window
with ``--on-overflow error``, bad filter, any input the library refuses) or a ``Host`` header the
server does not answer to; 401 missing/wrong key; 403 a write without a configured
key, or a path outside ``--ingest-root``; 404 unknown model, or a route whose feature is not
configured (rerank without ``--reranker``, search/ingest without an index); 409 index built with
another model; 413 too many inputs or too many bytes; 422 malformed JSON or a field of the wrong
type; 499 (logged only) client went away; 500 an unexpected failure (JSON, logged); 503 loading or
queue full (with ``Retry-After``), a failed start-up (with the reason), store unavailable.

This module only assembles the app: the routers of :mod:`m3e_rag.serve.routes`, the error
handlers of :mod:`m3e_rag.serve.http_errors`, the lifespan that loads the :class:`Service`, and the
ASGI layers around FastAPI (outermost first: :class:`~m3e_rag.serve.timing.Timed`, the
:class:`~m3e_rag.serve.hosts.HostCheck` against DNS rebinding, the :class:`~m3e_rag.serve.auth.Gate`,
then :class:`~m3e_rag.serve.http_errors.CatchAll`). The transport limits (timeouts, connections) are
the runner's: see :mod:`m3e_rag.serve.transport`.

A start-up that fails, in any way (a pyo3 ``PanicException`` from a damaged index is not even an
``Exception``), leaves the service *failed*, never "loading": ``/health`` answers 500 with the reason
and every model route 503 (:func:`~m3e_rag.serve.http_errors.load_failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from m3e_rag.serve.auth import Gate
from m3e_rag.serve.config import ServeConfig, is_loopback
from m3e_rag.serve.hosts import HostCheck, allowed_hosts
from m3e_rag.serve.http_errors import ApiError, CatchAll, on_api_error, on_invalid, on_unexpected
from m3e_rag.serve.routes import browse, embeddings, ingest, ops, rerank, search, ui
from m3e_rag.serve.service import Service
from m3e_rag.serve.timing import Timed

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(config: ServeConfig, *, load_in_background: bool = True,
               on_load_failed: Callable[[BaseException], None] | None = None) -> Any:
    """Build the ASGI app: the FastAPI routes wrapped in the gate (key, size) and the metrics layer.

    Args:
        config: what to serve (see :class:`ServeConfig`).
        load_in_background: load the model in a thread after start-up (``/health`` answers 503 until
            it is ready); False loads it before the app accepts requests.
        on_load_failed: called with the error if loading fails (the CLI stops the server with it).

    Returns:
        The ASGI app; ``app.state.service`` (also ``fastapi_app.state``) holds the :class:`Service`.
    """
    service = Service(config)
    api = FastAPI(
        title="m3e-rag", version=_version(), lifespan=_lifespan(service, load_in_background, on_load_failed),
        description="OpenAI-compatible embeddings, rerank and search over an M3E index, with dynamic batching.",
    )
    api.state.service = service
    api.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    api.add_exception_handler(RequestValidationError, on_invalid)  # type: ignore[arg-type]
    api.add_exception_handler(Exception, on_unexpected)  # a JSON 500, not Starlette's plain text
    for group in (embeddings, rerank, search, browse, ingest, ops, ui):  # this order is the order of /openapi.json
        api.include_router(group.router)

    def refused(reason: str) -> None:
        service.metrics.rejected.labels(reason).inc()

    gated = Gate(CatchAll(api), api_key=config.api_key, max_body_bytes=config.max_request_bytes,
                 announce=_announcer(service), on_refused=refused)
    hosts = HostCheck(gated, allowed=allowed_hosts(config), loopback=is_loopback(config.host), on_refused=refused)
    app = Timed(hosts, service)
    app.state = api.state  # type: ignore[attr-defined]
    return app


def _lifespan(service: Service, load_in_background: bool, on_load_failed: Callable[[BaseException], None] | None,
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: load the service (in a thread) at start-up, close it at shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                ok = await asyncio.to_thread(service.load_or_record)
            except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
                raise
            except BaseException as exc:  # noqa: BLE001 - any other failure (a pyo3 panic too) marks the start failed
                logger.error("The service could not start: %s: %s", type(exc).__name__, exc, exc_info=exc)
                service.load_error = exc
                ok = False
            if not ok and on_load_failed is not None and service.load_error is not None:
                on_load_failed(service.load_error)

        task = asyncio.create_task(load())
        if not load_in_background:
            await task
        try:
            yield
        finally:
            if not task.done():
                await task
            await asyncio.to_thread(service.close)

    return lifespan


def _announcer(service: Service) -> Callable[[int], bool]:
    """The gate's ``announce``: tell the batcher a batched request arrived (+1) or left unqueued (-1)."""

    def announce(delta: int) -> bool:
        batcher = service.batcher
        if batcher is None:
            return False
        if delta > 0:
            batcher.announce()
        else:
            batcher.withdraw()
        return True

    return announce


def _version() -> str:
    from m3e_rag._version import __version__

    return str(__version__)
