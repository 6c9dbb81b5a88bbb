"""The ``m3e-rag serve`` subcommand: its parser entry and the handler that starts the HTTP service.

The serve options themselves belong to :mod:`m3e_rag.serve.config`; FastAPI and uvicorn load only when serving.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["SERVE_COMMANDS", "add_serve_command"]


def add_serve_command(sub: Any) -> None:
    """Add the ``serve`` subcommand to the ``m3e-rag`` parser."""
    from m3e_rag.serve.config import add_serve_arguments  # settings only: FastAPI/uvicorn load when serving

    add_serve_arguments(sub.add_parser(
        "serve", help="serve OpenAI-compatible /v1/embeddings, /v1/rerank and /v1/search over HTTP",
        description="A warm HTTP service (needs pip install 'm3e-rag[serve]'): OpenAI /v1/embeddings, /v1/models, "
        "Jina/Cohere /v1/rerank, /v1/search and /v1/ingest over an index, /health, /metrics; requests are batched "
        "together. Binds 127.0.0.1 unless --host says otherwise (then --api-key is required). Against hostile "
        "clients: only known names in the Host header (--allowed-hosts; DNS rebinding), silent and slow "
        "connections closed (--header-timeout), idle ones too (--keep-alive-timeout), and at most "
        "--max-connections connections, below the open-file limit.",
    ))


def cmd_serve(args: argparse.Namespace) -> int:
    """``m3e-rag serve``: run the service until it is stopped."""
    from m3e_rag.serve import run
    from m3e_rag.serve.config import config_from_args

    return run(config_from_args(args), log_level="info")


SERVE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"serve": cmd_serve}
