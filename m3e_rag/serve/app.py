"""The HTTP routes of ``m3e-rag serve`` (FastAPI), in OpenAI's and Jina/Cohere's shapes.

Routes: ``POST /v1/embeddings``, ``GET /v1/models``, ``POST /v1/rerank``, ``POST /v1/search``,
``POST /v1/ingest``, ``GET /health``, ``GET /metrics`` (and FastAPI's ``/openapi.json``, ``/docs``).
Errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``; a 422 also carries
FastAPI's ``detail`` list, and its ``param`` names the offending field.

Status codes: 400 bad value (token ids, empty text, wrong ``dimensions``, a text over the window
with ``--on-overflow error``, bad filter); 401 missing/wrong key; 403 a write without a configured
key, or a path outside ``--ingest-root``; 404 unknown model, or a route whose feature is not
configured (rerank without ``--reranker``, search/ingest without an index); 409 index built with
another model; 413 too many inputs or too many bytes; 422 malformed JSON or a field of the wrong
type; 499 (logged only) client went away; 503 loading, queue full (with ``Retry-After``) or store
unavailable.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from m3e_rag.errors import InputError, InputTooLongError, M3ERagError, ModelMismatchError, StoreError
from m3e_rag.serve.auth import Gate, Message, Receive, Scope, Send, error_body
from m3e_rag.serve.batcher import BatcherClosedError, EmbedResult, Kind, QueueFullError
from m3e_rag.serve.config import ServeConfig
from m3e_rag.serve.metrics import CONTENT_TYPE_LATEST
from m3e_rag.serve.schemas import EmbeddingRequest, EmbeddingResponse, IngestRequest, RerankRequest, SearchRequest
from m3e_rag.serve.service import Service

__all__ = ["create_app", "ApiError"]

logger = logging.getLogger(__name__)

_ROUTES = ("/v1/embeddings", "/v1/models", "/v1/rerank", "/v1/search", "/v1/ingest", "/health", "/metrics")


class ApiError(Exception):
    """An error answered as OpenAI-shaped JSON with the given status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type_ = type_
        self.headers = headers


class _ClientGone(Exception):
    pass


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


def _busy(message: str, code: str) -> ApiError:
    return ApiError(503, message, code=code, type_="server_error", headers={"Retry-After": "1"})


def _from_library(exc: M3ERagError, param: str | None = None) -> ApiError:
    """Translate the library's errors at the HTTP boundary."""
    if isinstance(exc, InputTooLongError):
        return ApiError(400, str(exc), param=param or "input", code="input_too_long")
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), param=param, code="invalid_value")
    if isinstance(exc, ModelMismatchError):
        return ApiError(409, str(exc), code="model_mismatch")
    if isinstance(exc, QueueFullError):
        return _busy(str(exc), "queue_full")
    if isinstance(exc, BatcherClosedError):
        return _busy(str(exc), "shutting_down")
    if isinstance(exc, StoreError):
        return ApiError(503, str(exc), code="store_error", type_="server_error")
    return ApiError(500, str(exc), code="internal_error", type_="server_error")


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Timed:
    """Outermost ASGI layer: request counts and latency per route, for /metrics."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in _ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics = self.service.metrics
        metrics.in_progress.labels(route).inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.in_progress.labels(route).dec()
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)


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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            ok = await asyncio.to_thread(service.load_or_record)
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

    api = FastAPI(
        title="m3e-rag", version=_version(), lifespan=lifespan,
        description="OpenAI-compatible embeddings, rerank and search over an M3E index, with dynamic batching.",
    )
    api.state.service = service

    @api.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> Response:
        return _json(error_body(exc.message, type_=exc.type_, param=exc.param, code=exc.code), exc.status, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        json_invalid = first.get("type") == "json_invalid"
        loc = [] if json_invalid else [str(p) for p in first.get("loc", ()) if p != "body"]
        field = loc[0] if loc else "body"
        where = ".".join(loc) or "the body"
        if json_invalid:
            message = f"The body is not valid JSON ({first.get('msg')}); send a JSON object."
        elif first.get("type") == "extra_forbidden":
            message = f"Unknown field '{where}': it is not part of this route's schema (see /openapi.json)."
        else:
            message = f"Field '{where}': {first.get('msg')}."
        body = error_body(message, param=field, code="invalid_field")
        body["detail"] = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return _json(body, 422)

    def ready() -> Service:
        if service.load_error is not None:
            raise ApiError(500, f"The model failed to load: {service.load_error}", code="load_failed",
                           type_="server_error")
        if not service.ready.is_set():
            raise _busy("The model is still loading; retry in a few seconds (GET /health says when it is ready).",
                        "loading")
        return service

    def check_model(name: str | None) -> None:
        if name is not None and name not in service.model_names:
            raise ApiError(404, f"The model '{name}' is not served here; this server serves '{service.model_id}' "
                           "(see GET /v1/models).", param="model", code="model_not_found")

    def submit(request: Request, texts: list[str], kind: Kind) -> Future[EmbedResult]:
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
            raise _from_library(exc, "input") from exc

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
            raise _ClientGone
        try:
            return waiting.result()
        except M3ERagError as exc:
            raise _from_library(exc, param) from exc

    async def run_guarded(request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await work()
        except _ClientGone:
            logger.info("client went away before %s finished; its queued work was dropped", request.url.path)
            return Response(status_code=499)
        except M3ERagError as exc:
            raise _from_library(exc) from exc

    # ------------------------------------------------------------------ routes
    @api.post("/v1/embeddings", responses={200: {"model": EmbeddingResponse}}, tags=["openai"])
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """Embed texts (OpenAI's schema; vectors equal ``M3EEncoder.encode_documents``)."""
        svc = ready()
        check_model(body.model)
        texts = _texts_of(body.input)
        if len(texts) > svc.config.max_inputs:
            raise ApiError(413, f"input has {len(texts)} items, over the limit of {svc.config.max_inputs} per "
                           "request; split it into several requests.", param="input", code="too_many_inputs")
        if body.dimensions is not None and body.dimensions != svc.dim:
            raise ApiError(400, f"dimensions={body.dimensions} is not available: this model's vectors have "
                           f"{svc.dim} dimensions and are not truncated; omit dimensions or pass {svc.dim}.",
                           param="dimensions", code="invalid_dimensions")

        async def work() -> Response:
            result: EmbedResult = await wait(request, submit(request, texts, body.input_type), "input")
            vectors = result.vectors
            if body.encoding_format == "base64":
                little = vectors.astype("<f4", copy=False)
                data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(little[i].tobytes()).decode()}
                        for i in range(len(texts))]
            else:
                data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in range(len(texts))]
            tokens = int(sum(result.tokens))
            svc.metrics.tokens.inc(tokens)
            return _json({"object": "list", "data": data, "model": svc.model_id,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        return await run_guarded(request, work)

    @api.get("/v1/models", tags=["openai"])
    async def models() -> Response:
        """The served model (and reranker), OpenAI's list shape plus ``dimensions`` and ``max_tokens``."""
        svc = ready()
        data: list[dict[str, Any]] = [{"id": svc.model_id, "object": "model", "created": 0, "owned_by": "m3e-rag",
                                       "type": "embedding", "dimensions": svc.dim, "max_tokens": svc.window}]
        if svc.reranker_id is not None:
            data.append({"id": svc.reranker_id, "object": "model", "created": 0, "owned_by": "m3e-rag",
                         "type": "rerank"})
        return _json({"object": "list", "data": data})

    @api.post("/v1/rerank", tags=["rerank"])
    async def rerank(body: RerankRequest, request: Request) -> Response:
        """Score documents against a query with the cross-encoder (Jina/Cohere shape)."""
        svc = ready()
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
                return _json({"model": svc.reranker_id, "results": [], "usage": {"total_tokens": 0}})
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
            return _json({"model": svc.reranker_id, "results": results,
                          "usage": {"total_tokens": tokens}})

        return await run_guarded(request, work)

    @api.post("/v1/search", tags=["index"])
    async def search(body: SearchRequest, request: Request) -> Response:
        """Search the served index: the pipeline's search (dense, sparse or hybrid; filters, MMR, rerank)."""
        svc = ready()
        pipeline = _need_index(svc)
        if not body.query.strip():
            raise ApiError(400, "query is empty; send the text to search for.", param="query")
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
                vector = (await wait(request, submit(request, [body.query], "query"), "query")).vectors[0]
            else:
                _release_announcement(request, svc)
            async with svc.index_lock:
                hits = await asyncio.to_thread(
                    pipeline.search, body.query, body.k, where=body.where, where_document=body.where_document,
                    mode=body.mode, mmr=body.mmr, fetch_k=body.fetch_k, lambda_mult=body.lambda_mult,
                    score_threshold=body.score_threshold, reranker=svc.reranker if body.rerank else None,
                    rerank_top_n=body.rerank_top_n, query_vector=vector,
                )
            return _json({"object": "list", "model": svc.model_id, "mode": body.mode,
                          "data": [{"id": h.id, "text": h.text, "score": h.score, "metadata": h.metadata}
                                   for h in hits]})

        return await run_guarded(request, work)

    @api.post("/v1/ingest", tags=["index"])
    async def ingest(body: IngestRequest) -> Response:
        """Add texts or server-side files to the index (needs the API key; paths need --ingest-root).

        Runs to completion even if the client disconnects (each step commits whole), and a
        shutdown waits for it.
        """
        svc = ready()
        pipeline = _need_index(svc)
        if body.texts is None and body.paths is None:
            raise ApiError(400, "Nothing to ingest: send texts=[{text, source?, metadata?}] or paths=[...].",
                           param="texts")
        if body.paths is None and (body.include is not None or body.exclude is not None):
            raise ApiError(400, "include/exclude filter the files of paths; send paths too, or drop them.",
                           param="include" if body.include is not None else "exclude")
        paths = _allowed_paths(svc.config, body.paths) if body.paths is not None else None
        kwargs: dict[str, Any] = {}
        if body.texts is not None:
            for i, item in enumerate(body.texts):
                if not item.text.strip():
                    raise ApiError(400, f"texts[{i}].text is empty; drop it or give it text.", param="texts")
            kwargs.update(texts=[t.text for t in body.texts],
                          sources=None if all(t.source is None for t in body.texts)
                          else [t.source or _default_source(t.text) for t in body.texts],
                          metadatas=[t.metadata for t in body.texts])
        async with svc.index_lock:
            try:
                report = await asyncio.to_thread(pipeline.ingest, paths, include=body.include,
                                                 exclude=body.exclude, **kwargs)
            except M3ERagError as exc:
                raise _from_library(exc) from exc
        return _json(report.to_dict())

    @api.get("/health", tags=["ops"])
    async def health() -> Response:
        """200 once the model is loaded; 503 while it loads; 500 if it failed."""
        if service.load_error is not None:
            return _json({"status": "failed", "error": str(service.load_error)}, 500)
        if not service.ready.is_set():
            return _json({"status": "loading"}, 503, {"Retry-After": "1"})
        return _json({"status": "ok", "model": service.model_id, "dim": service.dim,
                      "queue_texts": service.batcher.queued_texts if service.batcher else 0})

    @api.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus text: requests, latency, batch sizes, queue depth, tokens, cancellations."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def announce(delta: int) -> bool:
        batcher = service.batcher
        if batcher is None:
            return False
        if delta > 0:
            batcher.announce()
        else:
            batcher.withdraw()
        return True

    gated = Gate(api, api_key=config.api_key, max_body_bytes=config.max_request_bytes, announce=announce,
                 on_refused=lambda reason: service.metrics.rejected.labels(reason).inc())
    app = _Timed(gated, service)
    app.state = api.state  # type: ignore[attr-defined]
    return app


def _version() -> str:
    from m3e_rag._version import __version__

    return str(__version__)


def _texts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [value]
    else:
        items = list(value)
    if not items:
        raise ApiError(400, "input is an empty list; send at least one text.", param="input", code="empty_input")
    if any(not isinstance(item, str) for item in items):
        raise ApiError(
            400,
            "input holds token ids, not text: this server tokenizes with the model's own tokenizer, so OpenAI "
            "(tiktoken) token ids mean nothing to it. Send strings. LangChain's OpenAIEmbeddings sends token ids "
            "unless you pass check_embedding_ctx_length=False: pass it.",
            param="input", code="token_ids_not_supported",
        )
    for i, text in enumerate(items):
        if not text.strip():
            raise ApiError(400, f"input[{i}] is {'an empty string' if not text else 'whitespace only'}; every "
                           "input must contain text: drop or replace it.", param="input", code="empty_input")
    return items


def _default_source(text: str) -> str:
    """The source the library gives a text without one (``text:`` + 16 hex of its SHA-1)."""
    import hashlib

    return "text:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _release_announcement(request: Request, svc: Service) -> None:
    state = request.scope.setdefault("state", {})
    if state.get("m3e_announced") and svc.batcher is not None:
        state["m3e_announced"] = False
        svc.batcher.withdraw()


def _need_index(svc: Service) -> Any:
    if svc.pipeline is None:
        raise ApiError(404, "No index is served here; restart the server with --index DIR (or --chroma-url URL) "
                       "to enable /v1/search and /v1/ingest.", code="index_not_configured")
    return svc.pipeline


def _allowed_paths(config: ServeConfig, given: list[str]) -> list[Path]:
    """Resolve each path under --ingest-root; refuse anything outside it (symlinks included)."""
    if config.ingest_root is None:
        raise ApiError(403, "This server reads no server-side paths; restart it with --ingest-root DIR to allow "
                       "ingesting files under DIR, or send texts instead.", param="paths", code="paths_not_allowed",
                       type_="permission_error")
    root = Path(config.ingest_root).resolve()
    out: list[Path] = []
    for i, raw in enumerate(given):
        path = (root / raw).resolve()  # an absolute `raw` replaces root; symlinks are resolved
        if not path.is_relative_to(root):
            raise ApiError(403, f"paths[{i}] ({raw!r}) is outside the ingest root {str(root)!r}; only files under "
                           "it can be ingested.", param="paths", code="path_outside_root", type_="permission_error")
        if not path.exists():
            raise ApiError(400, f"paths[{i}] ({raw!r}) does not exist under the ingest root.", param="paths",
                           code="path_not_found")
        if path.is_dir():
            for dirpath, _, filenames in os.walk(path):
                for name in filenames:
                    target = Path(dirpath, name).resolve()
                    if not target.is_relative_to(root):
                        raise ApiError(403, f"paths[{i}] holds {os.path.join(dirpath, name)!r}, a link to "
                                       f"{str(target)!r} outside the ingest root; remove the link or ingest "
                                       "another folder.", param="paths", code="path_outside_root",
                                       type_="permission_error")
        out.append(path)
    return out


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
