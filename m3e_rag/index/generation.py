"""The write generation of a collection: a counter that tells a reader another process wrote.

A counter bumped by every write BEFORE it touches the records: a reader compares it with the
value it last saw (one cheap read) and, when another process moved it, reconnects (an embedded
client keeps its HNSW index in memory and would serve stale vectors) and lets its BM25 side
catch up. A writer killed after the bump leaves the counter ahead of the BM25 log, which is how
that crash is detected. For a folder the counter is a small file beside chroma.sqlite3 (a read
is far cheaper than a Chroma metadata update, which cost more than the write it guards; figures:
benchmarks/README.md, 'Design figures'); for a server it is a key of the collection's metadata,
shared by every client of the server. :class:`~m3e_rag.index.chroma.ChromaStore` keeps the value it
last saw; this module reads and writes the counter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3e_rag.errors import StoreError
from m3e_rag.index.boundary import store_boundary, translate_store_error
from m3e_rag.index.guard import META_PREFIX

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = [
    "GENERATION_KEY",
    "bump_server_generation",
    "generation_file",
    "generation_of",
    "read_generation_file",
    "read_server_generation",
    "write_generation_file",
]

#: The collection-metadata key of the counter on a Chroma server.
GENERATION_KEY = f"{META_PREFIX}generation"


def generation_file(path: Path | None, collection: str) -> Path | None:
    """The counter's file for a collection of the index folder ``path`` (None for a server)."""
    if path is None:
        return None
    return path / f".m3e-rag-generation-{collection}"


def generation_of(metadata: Mapping[str, Any] | None) -> int:
    """The counter recorded in a collection's metadata (0 when absent or not an int)."""
    value = (metadata or {}).get(GENERATION_KEY, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_generation_file(path: Path, where: str) -> int:
    """The counter in its file (0 when the file is missing or damaged)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise translate_store_error(exc, "read the generation file", where) or StoreError(
            str(exc)) from exc
    try:
        return int(raw.strip() or b"0")
    except ValueError:
        return 0  # damaged: anything not equal to a BM25 log's generation makes it catch up


def write_generation_file(path: Path, new: int, where: str) -> None:
    """Write the counter into its file."""
    with store_boundary("write the generation file", where):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # 20 bytes rewritten in place: whole in the page cache even if the process dies
            os.pwrite(fd, f"{new:<19d}\n".encode(), 0)
        finally:
            os.close(fd)


def read_server_generation(client: ClientAPI, collection: str, where: str) -> int:
    """The counter as the server's collection metadata holds it now."""
    with store_boundary("read the collection", where):
        fresh = client.get_collection(collection, embedding_function=None)
    return generation_of(fresh.metadata)


def bump_server_generation(client: ClientAPI, collection: str, where: str) -> int:
    """Advance the counter in the server's collection metadata; returns the new value."""
    with store_boundary("update the collection", where):
        fresh = client.get_collection(collection, embedding_function=None)
        meta = dict(fresh.metadata or {})
        new = generation_of(meta) + 1
        meta[GENERATION_KEY] = new
        fresh.modify(metadata=meta)
    return new
