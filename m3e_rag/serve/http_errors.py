"""The service's error replies: :class:`ApiError`, the library's errors translated, the exception handlers.

Every error leaves the service in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(a 422 also carries FastAPI's ``detail`` list); this module is the one place that decides which
status and code each failure gets, so the routes only raise.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from m3e_rag.errors import InputError, InputTooLongError, M3ERagError, ModelMismatchError, StoreError
from m3e_rag.serve.auth import error_body
from m3e_rag.serve.batcher import BatcherClosedError, QueueFullError

__all__ = ["ApiError", "ClientGone", "busy", "from_library", "json_response", "on_api_error", "on_invalid"]


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
