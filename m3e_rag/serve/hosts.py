"""The Host-header check (pure ASGI): a defence against DNS rebinding.

A web page can make the visitor's browser send requests to ``127.0.0.1:8000`` under a name the
page controls (``attacker.example.com``, re-pointed at 127.0.0.1 after the page has loaded); the
browser then lets the page read the answers, index text included, because to it they come from
the page's own origin. What betrays such a request is its ``Host`` header, which carries the
attacker's name, so the service answers only the names it was told to answer to:

- bound to a loopback address (the default): ``localhost``, any loopback IP (``127.0.0.1``,
  ``[::1]``) and the bound host;
- bound elsewhere: the bound host;
- in both cases, plus the names given with ``--allowed-hosts`` (``*.example.com`` matches the
  subdomains of example.com); ``--allowed-hosts '*'`` turns the check off.

Ports are not compared (the socket already decided which port was reached). A request without a
``Host`` header (an HTTP/1.0 tool) is answered: browsers always send one, so it cannot be a page's
rebound request. ``/health`` is exempt:
load balancers probe it under addresses nobody lists, and it tells nothing about the index.
Starlette's ``TrustedHostMiddleware`` does the same job but cuts the header at its first colon, so
it cannot read an IPv6 host such as ``[::1]:8000``, and it answers in plain text; this layer
parses both forms and answers in the service's JSON error shape.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable

from m3e_rag.serve.auth import ASGIApp, Receive, Scope, Send, error_body
from m3e_rag.serve.config import ServeConfig, is_loopback

__all__ = ["HostCheck", "allowed_hosts", "host_name"]

#: Paths answered whatever the Host header says.
EXEMPT_PATHS = frozenset({"/health"})


def host_name(header: str) -> str:
    """The host part of a ``Host`` header, lower-cased, without port, brackets or trailing dot.

    ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost.:80"`` -> ``"localhost"``, ``"::1"`` -> ``"::1"``.
    """
    value = header.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_hosts(config: ServeConfig) -> frozenset[str] | None:
    """The host names this server answers to (normalised by :func:`host_name`); None when the check is off."""
    listed = [host_name(h) for h in config.allowed_hosts]
    if "*" in listed:
        return None
    names = {host_name(config.host), *listed}
    if is_loopback(config.host):
        names |= {"localhost", "127.0.0.1", "::1"}
    names.discard("")
    return frozenset(names)


def _is_loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware answering 400 to a request whose ``Host`` is not one the server answers to.

    Args:
        app: the wrapped ASGI app.
        allowed: the accepted names from :func:`allowed_hosts` (None: no check).
        loopback: whether the server is bound to a loopback address (then any loopback IP is accepted).
        on_refused: called with ``"host"`` for each refused request (metrics).
    """

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str] | None, loopback: bool,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.app = app
        self._allowed = None if allowed is None else frozenset(allowed)
        self._exact = frozenset() if self._allowed is None else frozenset(
            h for h in self._allowed if not h.startswith("*."))
        self._suffixes = () if self._allowed is None else tuple(
            h[1:] for h in self._allowed if h.startswith("*."))
        self._loopback = loopback
        self._on_refused = on_refused

    def accepts(self, header: str | None) -> bool:
        """Whether a request carrying this ``Host`` header (None: none sent) is answered."""
        if self._allowed is None or header is None:
            return True
        name = host_name(header)
        if name in self._exact or any(name.endswith(s) for s in self._suffixes):
            return True
        return self._loopback and _is_loopback_ip(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request for a host this server does not answer to, else hand it on."""
        if scope["type"] != "http" or self._allowed is None or scope.get("path", "") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
        header = raw.decode("latin-1") if raw is not None else None
        if header is None or self.accepts(header):
            await self.app(scope, receive, send)
            return
        if self._on_refused is not None:
            self._on_refused("host")
        payload = json.dumps(error_body(
            f"This server does not answer to the Host header {header[:200]!r}: a web page may be reaching it "
            "through DNS rebinding. Send a Host it answers to (such as 127.0.0.1:PORT), or restart the server with "
            "--allowed-hosts NAME (repeatable; '*' turns the check off) if that name is yours.",
            param="Host", code="host_not_allowed")).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
