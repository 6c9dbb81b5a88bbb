"""Transport limits of ``m3e-rag serve``: idle and header timeouts and a connection limit below the file limit.

What uvicorn offers and what it lacks (uvicorn 0.30-0.55, both its ``httptools`` and ``h11`` protocols):

- ``timeout_keep_alive`` closes a connection idle *between* requests: used as is
  (``--keep-alive-timeout``).
- Nothing times out a connection *before* its first request, nor one that sends its request head
  a byte at a time (slowloris): uvicorn arms its idle timer only after a response. 1,100 such
  connections held a server at the common 1,024-file limit, and every new client was reset.
- ``limit_concurrency`` answers 503 once that many connections are *open*, idle ones included, so
  idle sockets would lock real clients out, and it frees no file: not used.

So the service runs uvicorn's own protocol class (httptools when installed, else h11: uvicorn's
``auto`` choice), subclassed by :func:`guarded_protocol` with two additions, the choice made here
rather than in a proxy so that ``m3e-rag serve`` is safe on its own:

- a **header deadline**: a connection must send a complete request head within ``header_timeout_s``
  of its first byte (of its opening, for the first request), or it is closed. A deadline, not an
  inactivity timer, so trickling one byte at a time does not extend it (nginx's
  ``client_header_timeout`` and Go's ``ReadHeaderTimeout`` work the same way). The body is not
  covered: a request whose head has arrived is the app's, bounded by ``--max-request-bytes``.
- a **connection limit**: past ``max_connections`` open connections, a new one closes the
  longest-idle connection (no request in flight: silent, slow or kept alive) to make room; when
  every connection has a request in flight, the newcomer is answered 503 with ``Retry-After`` and
  closed. The default limit stays below the open-file limit
  (:func:`m3e_rag.serve.config.connection_budget`), so ``accept()`` never runs out of files.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from typing import Any

from m3e_rag.serve.auth import error_body
from m3e_rag.serve.config import ServeConfig, connection_budget, file_limit

__all__ = ["guarded_protocol", "uvicorn_options"]

logger = logging.getLogger(__name__)

#: Seconds a refused connection is kept after its 503, reading (and dropping) what the client still sends: a
#: socket closed with unread data resets the connection, and the reset can destroy the 503 before it is read.
_LINGER_S = 2.0


def _busy_reply(limit: int) -> bytes:
    body = json.dumps(error_body(
        f"The server holds its limit of {limit} connections, each with a request in flight; retry in a moment.",
        type_="server_error", code="too_many_connections")).encode("utf-8")
    head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


# The mixin's methods extend those of uvicorn's protocol classes, which it only meets in guarded_protocol.
_ProtocolBase: Any = object


class _Guard(_ProtocolBase):
    """uvicorn's protocol, closing connections that send no request head in time or idle past the limit.

    Mixed in before ``HttpToolsProtocol`` or ``H11Protocol`` by :func:`guarded_protocol`, which sets
    the two class attributes; it uses their ``connections``, ``cycle``, ``transport`` and ``loop``.
    """

    header_timeout_s: float = 10.0
    max_connections: int = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._m3e_deadline: asyncio.TimerHandle | None = None
        self._m3e_idle_since = time.monotonic()
        self._m3e_refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Start the header deadline; make room if the connection limit is passed."""
        super().connection_made(transport)
        self._m3e_idle_since = time.monotonic()
        self._m3e_arm()
        if len(self.connections) > self.max_connections:
            self._m3e_make_room()

    def data_received(self, data: bytes) -> None:
        """Hand the bytes on; a head now complete ends its deadline, the first byte of a new one starts it."""
        if self._m3e_refused:
            return  # answered 503 already: read and dropped until the client closes
        super().data_received(data)
        if self._m3e_busy():
            self._m3e_disarm()
        elif self._m3e_deadline is None:
            self._m3e_arm()

    def on_response_complete(self) -> None:
        """The connection is idle again (kept alive) from now."""
        self._m3e_idle_since = time.monotonic()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._m3e_disarm()
        super().connection_lost(exc)

    # -- the header deadline
    def _m3e_busy(self) -> bool:
        """Whether a request head has arrived and its response is not complete."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _m3e_arm(self) -> None:
        if not self.transport.is_closing():
            self._m3e_deadline = self.loop.call_later(self.header_timeout_s, self._m3e_expired)

    def _m3e_disarm(self) -> None:
        if self._m3e_deadline is not None:
            self._m3e_deadline.cancel()
            self._m3e_deadline = None

    def _m3e_expired(self) -> None:
        self._m3e_deadline = None
        if not self._m3e_busy() and not self.transport.is_closing():
            logger.debug("closing a connection that sent no whole request head in %.1f s", self.header_timeout_s)
            self.transport.close()

    # -- the connection limit
    def _m3e_make_room(self) -> None:
        """Close the longest-idle connections beyond the limit; refuse this one if none is idle."""
        live = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(live) - self.max_connections
        if excess <= 0:
            return
        idle = [c for c in live if c is not self and isinstance(c, _Guard) and not c._m3e_busy()]
        for victim in heapq.nsmallest(excess, idle, key=lambda c: c._m3e_idle_since):
            victim.transport.close()
        if len(idle) < excess:
            logger.warning("refusing a connection: all %d connections have a request in flight", self.max_connections)
            self._m3e_refused = True
            self.transport.write(_busy_reply(self.max_connections))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)


def guarded_protocol(base: Any, *, header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` with a header deadline and a connection limit.

    Args:
        base: uvicorn's ``HttpToolsProtocol`` or ``H11Protocol``.
        header_timeout_s: seconds to send a whole request head.
        max_connections: most connections held at once.
    """
    guarded: type[asyncio.Protocol] = type(f"Guarded{base.__name__}", (_Guard, base), {
        "header_timeout_s": header_timeout_s, "max_connections": max_connections, "__module__": __name__})
    return guarded


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that set the transport limits of ``config``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    limit = config.max_connections or connection_budget(file_limit())
    return {
        "http": guarded_protocol(AutoHTTPProtocol, header_timeout_s=config.header_timeout_s, max_connections=limit),
        "timeout_keep_alive": config.keep_alive_timeout_s,
        "ws": "none",  # no WebSocket routes: an upgrade is answered as plain HTTP, under the same limits
    }
