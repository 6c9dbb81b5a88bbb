"""Connecting :class:`~m3e_rag.index.chroma.ChromaStore` to Chroma: a folder, a server or a given client.

A folder gets a ``PersistentClient``; an address gets an ``HttpClient`` checked with a heartbeat,
so an unreachable server fails at open with a message saying how to start one; a client the caller
built is used as it is. chromadb shares one client system per folder within a process and keeps
the HNSW index in memory, so seeing another process's writes needs that cached system dropped
first (:func:`forget_shared_system`).

**A folder that cannot be written** (a read-only mount, a container image, another user's files) is
searched through a private copy (:func:`read_only_copy`): Chroma 1.5 writes whenever it opens a folder
(sqlite's migration bookkeeping bumps the file on every open, and the first query compacts queued
vectors into the HNSW files), so it cannot open such a folder in place. The copy holds
``chroma.sqlite3`` (taken with sqlite's backup API from a read-only connection, so a consistent
snapshot even if another user's writer is active) and the HNSW segment folders, in a temporary
folder (``$TMPDIR``) removed when the store lets go of it; it costs the index's size in temporary
disk space and one read of the files per open, and is logged at INFO.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from m3e_rag.errors import InputError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = ["connect", "folder_is_read_only", "forget_shared_system", "read_only_copy"]

logger = logging.getLogger(__name__)

_SQLITE = "chroma.sqlite3"
_SEGMENT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def folder_is_read_only(path: Path) -> bool:
    """Whether ``path`` holds a Chroma database this process may read but not write (a read-only mount too)."""
    db = path / _SQLITE
    return path.is_dir() and db.is_file() and not (os.access(path, os.W_OK) and os.access(db, os.W_OK))


def read_only_copy(path: Path) -> tempfile.TemporaryDirectory[str]:
    """A private, writable copy of the Chroma files of the read-only folder ``path`` (see the module doc).

    The copy is removed when the returned object is cleaned up or garbage-collected.
    """
    copy = tempfile.TemporaryDirectory(prefix="m3e-rag-readonly-")
    target = Path(copy.name)
    source = sqlite3.connect(f"{(path / _SQLITE).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    with closing(source), closing(sqlite3.connect(target / _SQLITE)) as dest:
        source.backup(dest)
    for child in path.iterdir():
        if child.is_dir() and _SEGMENT.fullmatch(child.name):
            shutil.copytree(child, target / child.name)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    logger.info("the index at %s cannot be written: searching a private copy of it (%.1f MiB in %s)",
                path, size / 2**20, target)
    return copy


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
