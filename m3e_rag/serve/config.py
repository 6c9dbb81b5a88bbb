"""Settings of ``m3e-rag serve``: one frozen dataclass, checked once, shared by the app and the CLI.

This module imports nothing of FastAPI or uvicorn, so the CLI can validate a command line (and
refuse an unsafe bind) before any web framework is imported.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3e_rag.encode.options import BACKENDS
from m3e_rag.errors import InputError

__all__ = ["ServeConfig", "API_KEY_ENV", "is_loopback", "add_serve_arguments", "config_from_args", "file_limit",
           "connection_budget"]

#: Environment variable read when ``--api-key`` is not given.
API_KEY_ENV = "M3E_RAG_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard such as 0.0.0.0: reachable from elsewhere


def file_limit() -> int | None:
    """The process's soft limit on open files (``ulimit -n``); None where unknown or unlimited."""
    if sys.platform == "win32":
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def connection_budget(limit: int | None) -> int:
    """Most client connections a server may hold under a file limit of ``limit`` (None: unknown).

    Every connection is an open file, and so are the index, the model and the log: at the file
    limit ``accept()`` fails and every new client is reset. A quarter of the limit, at most 256
    files, is left for the rest (1,024 -> 768 connections); with no known limit, 65,536.
    """
    if limit is None:
        return 65536
    return max(1, limit - min(256, limit // 4))


@dataclass(frozen=True)
class ServeConfig:
    """What the service serves and how hard it may be pushed.

    Attributes:
        model: M3E alias, hub id or local folder (None: ``$M3E_MODEL``, then the index's model, then m3e-base).
        served_names: names accepted in the ``model`` field of requests (the first is listed by
            ``/v1/models``); empty means the model's base name and its full name.
        device: torch device (None: CUDA when available).
        backend: encoder backend (``torch``, ``onnx``, ``onnx-int8``, ``onnx-int8-fast``).
        batch_size: texts per forward pass inside a coalesced batch (the batch is token-sorted first).
            8, not the library's 32: with many one-text requests coalesced, smaller passes served more
            texts/s, and were no slower on an idle machine (figures: benchmarks/README.md, 'Design figures').
        on_overflow: inputs longer than the window: ``truncate``, ``warn`` (truncate and log) or ``error`` (400).
        index: embedded Chroma folder for ``/v1/search`` and ``/v1/ingest`` (None with no ``chroma_url``:
            embeddings and rerank only).
        chroma_url: a Chroma server instead of a folder.
        collection: Chroma collection name.
        reranker: cross-encoder (name or folder) for ``/v1/rerank`` and ``rerank`` in ``/v1/search``.
        ingest_root: folder under which ``/v1/ingest`` may read server-side paths (None: paths refused).
        host: address to bind.
        port: TCP port.
        api_key: the key clients send as ``Authorization: Bearer KEY`` (None: reads are open, writes refused).
        insecure_no_auth: allow a non-loopback ``host`` without a key (reads only: writes still need a key).
        max_wait_ms: how long the model worker waits for more requests to join a batch while some are
            still arriving (it never waits when every request in flight is already queued).
        max_batch_texts: most texts the worker takes from the queue at once (16: the same texts/s as 64 under
            load, measured, and a one-text request waits behind a quarter of the texts; README, serving).
        max_queue_texts: most texts waiting in the queue; more answers 503 with Retry-After.
        max_inputs: most texts in one request (413 above).
        max_request_bytes: most bytes in one request body (413 above).
        max_k: largest ``k`` / ``top_n`` / ``fetch_k`` accepted by search.
        allowed_hosts: extra names accepted in the ``Host`` header, beyond the bound host (and localhost and
            loopback IPs on a loopback bind); ``("*",)`` turns the check off (see :mod:`m3e_rag.serve.hosts`).
        keep_alive_timeout_s: seconds an idle keep-alive connection is kept between requests.
        header_timeout_s: seconds a connection has to send a whole request head, counted from its first
            byte (or from the connection, for the first request): slow or silent clients are closed.
        max_connections: most client connections held at once (None: :func:`connection_budget` of the
            file limit); past it the longest-idle connection is closed to make room.
    """

    model: str | None = None
    served_names: tuple[str, ...] = ()
    device: str | None = None
    backend: str = "torch"
    batch_size: int = 8
    on_overflow: str = "warn"
    index: Path | None = None
    chroma_url: str | None = None
    collection: str = "m3e_rag"
    reranker: str | None = None
    ingest_root: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    insecure_no_auth: bool = False
    max_wait_ms: float = 3.0
    max_batch_texts: int = 16
    max_queue_texts: int = 4096
    max_inputs: int = 2048
    max_request_bytes: int = 16 * 2**20
    max_k: int = 1000
    allowed_hosts: tuple[str, ...] = ()
    keep_alive_timeout_s: int = 5
    header_timeout_s: float = 10.0
    max_connections: int | None = None

    def __post_init__(self) -> None:
        """Refuse inconsistent or unsafe settings, naming the option and the fix."""
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("The API key is empty; pass a non-empty --api-key (or unset $M3E_RAG_API_KEY).")
        if not is_loopback(self.host) and self.api_key is None and not self.insecure_no_auth:
            raise InputError(
                f"Refusing to bind {self.host!r} without an API key: anyone who can reach it could use the "
                f"service. Pass --api-key KEY (or set ${API_KEY_ENV}), bind 127.0.0.1, or pass "
                "--insecure-no-auth if the network is trusted."
            )
        if self.index is not None and self.chroma_url is not None:
            raise InputError("Give --index or --chroma-url, not both.")
        for name in ("batch_size", "max_batch_texts", "max_queue_texts", "max_inputs", "max_request_bytes", "max_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= self.max_wait_ms <= 1000:
            raise InputError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms!r}.")
        if self.on_overflow not in ("truncate", "warn", "error"):
            raise InputError(f"on_overflow must be one of truncate, warn, error; got {self.on_overflow!r}.")
        if not 0 < self.port < 65536:
            raise InputError(f"port must be between 1 and 65535, got {self.port!r}.")
        self._check_transport()
        if self.ingest_root is not None and not Path(self.ingest_root).is_dir():
            raise InputError(f"--ingest-root {str(self.ingest_root)!r} is not a folder; give an existing folder.")

    def _check_transport(self) -> None:
        """Refuse transport settings a server cannot keep (timeouts, the connection limit, host names)."""
        if isinstance(self.keep_alive_timeout_s, bool) or not isinstance(self.keep_alive_timeout_s, int) \
                or not 1 <= self.keep_alive_timeout_s <= 3600:
            raise InputError(f"keep_alive_timeout_s must be a whole number of seconds from 1 to 3600, got "
                             f"{self.keep_alive_timeout_s!r}.")
        if not 0 < self.header_timeout_s <= 3600:
            raise InputError(f"header_timeout_s must be more than 0 and at most 3600 seconds, got "
                             f"{self.header_timeout_s!r}.")
        if self.max_connections is not None:
            budget = connection_budget(file_limit())
            if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int) \
                    or self.max_connections < 1:
                raise InputError(f"max_connections must be a positive integer, got {self.max_connections!r}.")
            if self.max_connections > budget:
                raise InputError(
                    f"--max-connections {self.max_connections} is more than the open-file limit leaves for "
                    f"connections ({budget} of ulimit -n {file_limit()}): the server would run out of files and "
                    "reset every new client. Lower it, or raise the limit (ulimit -n) before starting the server."
                )
        for name in self.allowed_hosts:
            if not isinstance(name, str) or not name.strip() or any(c in name for c in " /,\t"):
                raise InputError(f"--allowed-hosts takes host names such as example.com, *.example.com or '*', "
                                 f"one per value; got {name!r}.")

    @property
    def has_index(self) -> bool:
        """Whether search and ingest are served."""
        return self.index is not None or self.chroma_url is not None

    @staticmethod
    def key_from_env(given: str | None) -> str | None:
        """``given``, else ``$M3E_RAG_API_KEY``, else None."""
        return given if given is not None else (os.environ.get(API_KEY_ENV) or None)


def add_serve_arguments(p: Any) -> None:
    """Add the options of ``m3e-rag serve`` to an argparse parser (no web framework imported)."""
    p.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL, "
                   "then the index's model, then m3e-base)")
    p.add_argument("--served-model-name", action="append", default=None,
                   help="name clients send as `model` (repeatable; default: the model's base name)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default="torch", choices=list(BACKENDS),
                   help="torch (fp32), onnx, onnx-int8 (FFN output kept fp32) or onnx-int8-fast (every MatMul int8: "
                   "most texts/s, vectors further from fp32's); the README's throughput table says when to use which")
    p.add_argument("--batch-size", type=int, default=8,
                   help="texts per forward pass within a coalesced batch (default 8)")
    p.add_argument("--on-overflow", default="warn", choices=["truncate", "warn", "error"],
                   help="inputs over the model's window: truncate, warn (truncate and log; default), error (400)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--index", default=None, help="index folder for /v1/search and /v1/ingest (default: none)")
    where.add_argument("--chroma-url", default=None, help="Chroma server instead of an index folder")
    p.add_argument("--collection", default="m3e_rag", help="collection name (default: m3e_rag)")
    p.add_argument("--reranker", default=None, help="cross-encoder name or folder for /v1/rerank")
    p.add_argument("--ingest-root", default=None, help="folder under which /v1/ingest may read server-side paths")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help=f"key clients send as 'Authorization: Bearer KEY' "
                   f"(default: ${API_KEY_ENV}); needed for /v1/ingest and for a non-loopback --host")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow a non-loopback --host without a key (reads only; writes still need a key)")
    p.add_argument("--max-wait-ms", type=float, default=3.0,
                   help="longest wait for arriving requests to join a batch (default 3)")
    p.add_argument("--max-batch-texts", type=int, default=16,
                   help="most texts per coalesced batch (default 16: a one-text request waits for about two of them)")
    p.add_argument("--max-queue-texts", type=int, default=4096, help="queued texts before 503 (default 4096)")
    p.add_argument("--max-inputs", type=int, default=2048, help="most inputs per request before 413 (default 2048)")
    p.add_argument("--max-request-bytes", type=int, default=16 * 2**20,
                   help="largest request body before 413 (default 16 MiB)")
    p.add_argument("--allowed-hosts", action="append", default=None, metavar="NAME",
                   help="a name clients may send in the Host header (repeatable; *.example.com for subdomains; "
                   "'*' turns the check off). Always accepted: the bound --host, and on a loopback bind localhost, "
                   "127.0.0.1 and [::1]. Other names are refused (400) against DNS rebinding")
    p.add_argument("--keep-alive-timeout", type=int, default=5, metavar="SECONDS",
                   help="close a keep-alive connection idle this long between requests (default 5)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close a connection that has not sent a whole request head this long after it began "
                   "(default 10): silent and slow clients do not hold connections")
    p.add_argument("--max-connections", type=int, default=None,
                   help="most client connections at once (default: the open-file limit, ulimit -n, less a quarter "
                   "of it or 256, whichever is fewer: 768 at 1,024); over it the longest-idle connection is closed")


def config_from_args(args: Any) -> ServeConfig:
    """The :class:`ServeConfig` of parsed ``m3e-rag serve`` arguments (checked)."""
    return ServeConfig(
        model=args.model,
        served_names=tuple(args.served_model_name or ()),
        device=args.device,
        backend=args.backend,
        batch_size=args.batch_size,
        on_overflow=args.on_overflow,
        index=Path(args.index).expanduser() if args.index else None,
        chroma_url=args.chroma_url,
        collection=args.collection,
        reranker=args.reranker,
        ingest_root=Path(args.ingest_root).expanduser() if args.ingest_root else None,
        host=args.host,
        port=args.port,
        api_key=ServeConfig.key_from_env(args.api_key),
        insecure_no_auth=args.insecure_no_auth,
        max_wait_ms=args.max_wait_ms,
        max_batch_texts=args.max_batch_texts,
        max_queue_texts=args.max_queue_texts,
        max_inputs=args.max_inputs,
        max_request_bytes=args.max_request_bytes,
        allowed_hosts=tuple(args.allowed_hosts or ()),
        keep_alive_timeout_s=args.keep_alive_timeout,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
    )
