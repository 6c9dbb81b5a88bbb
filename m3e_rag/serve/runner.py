"""Run the app under uvicorn, with a graceful shutdown that exits 0, under the transport limits of ``transport``.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets every in-flight request finish
(an ingest included: its steps commit whole), then runs the app's shutdown, which drains the
batcher's queue and stops the model worker. uvicorn would then re-raise the signal, killing the
process with status -15; a shutdown that finished its work is a success, so this runner exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Generator

import uvicorn

from m3e_rag.errors import IndexDamagedError
from m3e_rag.serve.app import create_app
from m3e_rag.serve.config import ServeConfig
from m3e_rag.serve.http_errors import startup_failure
from m3e_rag.serve.transport import uvicorn_options

__all__ = ["run"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # handled gracefully: do not re-raise after shutdown


def run(config: ServeConfig, log_level: str = "info") -> int:
    """Serve ``config`` until a signal; 0 after a graceful stop.

    A failed start-up stops the server with one ``error:`` line saying why (and naming ``m3e-rag doctor``
    where it can help) and exits 3 for a damaged index (as ``m3e-rag doctor`` does), else 2.
    """
    holder: dict[str, _Server] = {}
    failed: list[BaseException] = []

    def on_load_failed(exc: BaseException) -> None:
        failed.append(exc)
        server = holder.get("server")
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_load_failed=on_load_failed)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                               access_log=False, timeout_graceful_shutdown=None, **uvicorn_options(config))
    server = _Server(uv_config)
    holder["server"] = server
    server.run()
    if failed:
        sys.stderr.write(f"error: {' '.join(startup_failure(config, failed[0]).split())}\n")
        from m3e_rag.index.doctor import EXIT_DAMAGED

        return EXIT_DAMAGED if isinstance(failed[0], IndexDamagedError) else 2
    return 0 if server.started else 1
