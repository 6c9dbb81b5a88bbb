"""The outermost ASGI layer: request counts, requests in progress and latency per route, for ``/metrics``.

It wraps everything else (the gate included), so refused requests are counted with their status
too; paths that are not routes of the service share the label ``other``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from m3e_rag.serve.auth import Message, Receive, Scope, Send
from m3e_rag.serve.service import Service

__all__ = ["ROUTES", "Timed"]

#: The route labels of the metrics (any other path is counted as ``other``).
ROUTES = ("/v1/embeddings", "/v1/models", "/v1/rerank", "/v1/search", "/v1/ingest", "/health", "/metrics")


class Timed:
    """Outermost ASGI layer: request counts and latency per route, for /metrics."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count and time the request, then hand it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
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
