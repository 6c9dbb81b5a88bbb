"""Connecting :class:`~m3e_rag.index.chroma.ChromaStore` to Chroma: a folder, a server or a given client.

A folder gets a ``PersistentClient``; an address gets an ``HttpClient`` checked with a heartbeat,
so an unreachable server fails at open with a message saying how to start one; a client the caller
built is used as it is. chromadb shares one client system per folder within a process and keeps
the HNSW index in memory, so seeing another process's writes needs that cached system dropped
first (:func:`forget_shared_system`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from m3e_rag.errors import InputError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = ["connect", "forget_shared_system"]


def connect(
    given_client: ClientAPI | None,
    settings: Any,
    url: str | None,
    path: Path | None,
    headers: dict[str, str] | None,
) -> ClientAPI:
    """The client for a store: ``given_client`` if any, else a server client for ``url``, else a folder's.

    Raises:
        InputError: if ``url`` is not an address.
        StoreError: if the server at ``url`` does not answer.

    """
    import chromadb
    from chromadb.config import Settings

    if given_client is not None:
        return given_client
    settings = settings if settings is not None else Settings(anonymized_telemetry=False)
    if url is not None:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if not parsed.hostname:
            raise InputError(f"chroma_url {url!r} is not an address; use e.g. http://127.0.0.1:8000")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname, port=port, ssl=parsed.scheme == "https", headers=headers,
                settings=settings,
            )
            client.heartbeat()
        except Exception as exc:
            raise StoreError(
                f"Cannot reach the Chroma server at {url} ({exc}); start one with "
                "`chroma run --path DIR --host 127.0.0.1 --port 8000`, or drop chroma_url to use a local folder."
            ) from exc
        return client
    assert path is not None
    return chromadb.PersistentClient(path=str(path), settings=settings)


def forget_shared_system(client: ClientAPI) -> None:
    """Drop chromadb's cached client system of ``client``'s folder, so the next client reads the files anew."""
    from chromadb.api.shared_system_client import SharedSystemClient

    identifier = getattr(client, "_identifier", None)
    if identifier is not None:
        SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
