"""The service's front gate (pure ASGI): API key, request size, and arrival announcements.

It runs before FastAPI parses anything, so an unauthenticated client gets 401 (not a 422 about
its JSON) and an oversized body is refused (413) without being read whole into memory.

Rules:
- With a key configured, every ``/v1/*`` route and ``/metrics`` need ``Authorization: Bearer KEY``;
  keys are compared with :func:`hmac.compare_digest` (constant time). ``/health``, ``/docs`` and
  ``/openapi.json`` stay open (load balancers and schema readers need them).
- Write routes (``/v1/ingest``) always need a key: with none configured they answer 403 saying
  how to configure one. There is deliberately no switch to open writes without a key.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Gate", "WRITE_ROUTES", "error_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes that change the index.
WRITE_ROUTES = frozenset({"/v1/ingest"})
#: Routes whose requests feed the batcher (announced so the worker can wait a few ms for them).
BATCHED_ROUTES = frozenset({"/v1/embeddings", "/v1/search"})


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class Gate:
    """ASGI middleware enforcing the API key and the body size limit, and announcing arrivals.

    Args:
        app: the wrapped ASGI app.
        api_key: the accepted key, or None (reads open, writes refused).
        max_body_bytes: largest request body accepted.
        announce: called with +1 when a batched request arrives (returns whether it was counted: False
            while the model loads) and with -1 when a counted request ends without having been queued.
        on_refused: called with a reason (``unauthorized``, ``forbidden``, ``too_large``) for metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        announce: Callable[[int], bool] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._key = api_key.encode("utf-8") if api_key is not None else None
        self._max = max_body_bytes
        self._announce = announce
        self._on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then hand it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        protected = path.startswith("/v1/") or path == "/metrics"
        if path in WRITE_ROUTES and self._key is None:
            await self._refuse(send, 403, "forbidden", error_body(
                f"{path} changes the index and needs an API key, and this server has none: restart it with "
                "--api-key KEY (or set $M3E_RAG_API_KEY) and send 'Authorization: Bearer KEY'.",
                type_="permission_error", code="writes_need_api_key"))
            return
        if protected and self._key is not None and not self._authorized(headers.get("authorization")):
            await self._refuse(send, 401, "unauthorized", error_body(
                "Missing or wrong API key: send the header 'Authorization: Bearer KEY' with the key the server "
                "was started with.", type_="authentication_error", code="invalid_api_key"),
                extra_headers=[(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._max:
            await self._refuse(send, 413, "too_large", self._too_large_body(int(declared)))
            return
        announced = path in BATCHED_ROUTES and self._announce is not None and scope.get("method") == "POST"
        if announced:
            assert self._announce is not None
            announced = self._announce(1)
            scope.setdefault("state", {})["m3e_announced"] = announced
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self._max:
                    # Answer 413 now and tell the app the client left: it stops reading and its reply is dropped.
                    refused = True
                    await self._refuse(send, 413, "too_large", self._too_large_body(received))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
        finally:
            if announced and scope["state"].get("m3e_announced"):
                assert self._announce is not None
                self._announce(-1)

    def _authorized(self, header: bytes | None) -> bool:
        if header is None or self._key is None:
            return False
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(token.strip(), self._key)

    def _too_large_body(self, size: int) -> dict[str, Any]:
        return error_body(
            f"The request body has {size} bytes or more, over the limit of {self._max}; send fewer or shorter "
            "inputs per request (or start the server with a larger --max-request-bytes).",
            param="body", code="request_too_large")

    async def _refuse(self, send: Send, status: int, reason: str, body: dict[str, Any],
                      extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)
        payload = json.dumps(body).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
        await send({"type": "http.response.body", "body": payload})
