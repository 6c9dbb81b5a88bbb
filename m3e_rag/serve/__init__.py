"""``m3e-rag serve``: OpenAI-compatible embeddings, rerank and search over HTTP, with dynamic batching.

Needs the ``serve`` extra (``pip install 'm3e-rag[serve]'``: FastAPI, uvicorn, prometheus-client).
Importing this package imports none of them; :func:`create_app` and :func:`run` do.

Modules: ``config`` (settings, no web imports), ``batcher`` (the queue and the model worker), ``fair`` (how
each batch is shared among waiting requests), ``service`` (model, index, reranker), ``hosts`` (the Host-header
check), ``transport`` (header deadline and connection limit), ``auth`` (key and size gate), ``metrics``
(Prometheus), ``schemas`` (request bodies), ``routes`` (the routes, one router per group), ``http_errors``
(error replies), ``timing`` (per-route metrics layer), ``app`` (assembles them), ``runner`` (uvicorn with
graceful shutdown).
"""

from __future__ import annotations

from typing import Any

from m3e_rag.serve.config import API_KEY_ENV, ServeConfig, is_loopback

__all__ = ["ServeConfig", "API_KEY_ENV", "is_loopback", "create_app", "run"]


def _require_extra() -> None:
    from importlib.util import find_spec

    from m3e_rag.errors import MissingExtraError

    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"),
                            ("orjson", "orjson")):
        if find_spec(module) is None:
            raise MissingExtraError(package, "serve", "m3e-rag serve")


def create_app(config: ServeConfig, **kwargs: Any) -> Any:
    """The ASGI app (see :func:`m3e_rag.serve.app.create_app`)."""
    _require_extra()
    from m3e_rag.serve.app import create_app as _create

    return _create(config, **kwargs)


def run(config: ServeConfig, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests; returns the exit code."""
    _require_extra()
    from m3e_rag.serve.runner import run as _run

    return _run(config, log_level=log_level)
