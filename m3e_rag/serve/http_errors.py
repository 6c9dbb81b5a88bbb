"""The service's error replies: :class:`ApiError`, the library's errors translated, the exception handlers.

Every error leaves the service in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(a 422 also carries FastAPI's ``detail`` list); this module is the one place that decides which
status and code each failure gets, so the routes only raise. The library's :class:`InputError` is
a 400 wherever it comes from; an unexpected failure is a JSON 500 (:func:`on_unexpected` for an
``Exception``, :class:`CatchAll` for a ``BaseException`` such as pyo3's ``PanicException``, which
Starlette does not catch), never Starlette's plain-text one; a failed start-up is a 503 saying why
(:func:`load_failed`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from m3e_rag.errors import (
    InputError,
    InputTooLongError,
    M3ERagError,
    MissingExtraError,
    ModelLoadError,
    ModelMismatchError,
    StoreError,
)
from m3e_rag.serve.auth import ASGIApp, Message, Receive, Scope, Send, error_body
from m3e_rag.serve.batcher import BatcherClosedError, QueueFullError
from m3e_rag.serve.config import ServeConfig

__all__ = ["ApiError", "CatchAll", "ClientGone", "busy", "from_library", "json_response", "load_failed",
           "on_api_error", "on_invalid", "on_unexpected", "startup_failure"]

logger = logging.getLogger(__name__)

#: Errors that stop the process or the task: never answered, always re-raised.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


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


class ClientGone(Exception):
    """The client went away before its work finished (answered 499, logged only)."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON (numpy arrays included) with the given status and headers."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json", headers=headers)


def busy(message: str, code: str) -> ApiError:
    """A 503 that asks the client to retry in a second."""
    return ApiError(503, message, code=code, type_="server_error", headers={"Retry-After": "1"})


def from_library(exc: M3ERagError, param: str | None = None) -> ApiError:
    """Translate the library's errors at the HTTP boundary."""
    if isinstance(exc, InputTooLongError):
        return ApiError(400, str(exc), param=param or "input", code="input_too_long")
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), param=param, code="invalid_value")
    if isinstance(exc, ModelMismatchError):
        return ApiError(409, str(exc), code="model_mismatch")
    if isinstance(exc, QueueFullError):
        return busy(str(exc), "queue_full")
    if isinstance(exc, BatcherClosedError):
        return busy(str(exc), "shutting_down")
    if isinstance(exc, StoreError):
        return ApiError(503, str(exc), code="store_error", type_="server_error")
    return ApiError(500, str(exc), code="internal_error", type_="server_error")


def startup_failure(config: ServeConfig, exc: BaseException) -> str:
    """Why the service could not start, and what to do: ``m3e-rag doctor`` where it can help.

    The library's own errors say what to do already; an untyped one (a Rust panic inside Chroma,
    say) is named by its type, and with an index folder configured the message names the doctor,
    which reads the folder and says what is wrong with it. A model that cannot load, a missing
    extra or a model mismatch are not the folder's fault, and a Chroma server is not a folder.
    """
    text = str(exc) if isinstance(exc, M3ERagError) else f"{type(exc).__name__}: {exc}"
    message = f"The service failed to start: {text.rstrip()}{'' if text.rstrip().endswith('.') else '.'}"
    if "m3e-rag doctor" in text:
        return f"{message} Then restart the server."
    if isinstance(exc, ModelLoadError | MissingExtraError | ModelMismatchError):
        return f"{message} Fix the cause and restart the server."
    if config.index is not None:
        return (f"{message} If the index is damaged, `m3e-rag doctor --index {config.index}` says what is wrong "
                "(and `--repair` rebuilds what it can); then restart the server.")
    return f"{message} Fix the cause and restart the server."


def load_failed(config: ServeConfig, exc: BaseException) -> ApiError:
    """The 503 every model route answers after a failed start-up (no ``Retry-After``: retrying will not help)."""
    return ApiError(503, startup_failure(config, exc), code="load_failed", type_="server_error")


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Exception handler: an unexpected error as a JSON 500 (Starlette logs the traceback and re-raises it)."""
    logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return json_response(_internal_body(exc), 500)


def _internal_body(exc: BaseException) -> dict[str, Any]:
    return error_body(f"The server failed on this request ({type(exc).__name__}); its log has the details. "
                      "If the request holds unusual input, change it; otherwise report the failure.",
                      type_="server_error", code="internal_error")


class CatchAll:
    """ASGI layer answering a JSON 500 for a ``BaseException`` that is not an ``Exception`` (a pyo3 panic).

    Starlette's error middleware catches only ``Exception``; anything else would reach uvicorn,
    which answers in plain text. Interrupts, exits and cancellations pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; turn a stray ``BaseException`` into a logged JSON 500 if no reply has started."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            if scope["type"] != "http" or started or isinstance(exc, Exception):
                raise
            logger.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": orjson.dumps(_internal_body(exc))})


async def on_api_error(_: Request, exc: ApiError) -> Response:
    """Exception handler: an :class:`ApiError` as its OpenAI-shaped body."""
    return json_response(error_body(exc.message, type_=exc.type_, param=exc.param, code=exc.code), exc.status,
                         exc.headers)


async def on_invalid(_: Request, exc: RequestValidationError) -> Response:
    """Exception handler: a request FastAPI could not parse, as a 422 naming the offending field."""
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
    return json_response(body, 422)
