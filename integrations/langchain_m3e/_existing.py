"""``create_collection_if_not_exists=False``: open an existing collection only, as ``langchain_chroma.Chroma`` does.

Chroma's store then calls ``get_collection`` in its constructor, which raises when the collection is
missing. Here the same check is made at construction, before anything is created: a folder's
``chroma.sqlite3`` is read without being created or changed, a Chroma server or a given client is
asked for the collection. Opening it (and checking the model that built it) stays lazy, as for every
M3EVectorStore.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3e_rag.errors import StoreError
from m3e_rag.index.boundary import store_boundary
from m3e_rag.index.connect import connect
from m3e_rag.index.integrity import SQLITE_FILE, collection_id

__all__ = ["require_collection"]


def require_collection(
    name: str,
    folder: str | Path,
    url: str | None,
    client: Any,
    settings: Any,
    headers: Mapping[str, str] | None,
) -> None:
    """Raise StoreError unless collection ``name`` exists in the folder, on the server or in the client.

    Raises:
        StoreError: naming the collection, where it was looked for, and how to create it.
    """
    from chromadb.errors import NotFoundError

    if client is None and url is None:
        path = Path(folder).expanduser()
        where = str(path)
        with store_boundary("look for the collection", where):
            found = (path / SQLITE_FILE).is_file() and collection_id(path.resolve(), name) is not None
    else:
        where = url or "the given Chroma client"
        chroma = connect(client, settings, url, None, dict(headers) if headers else None)
        with store_boundary("look for the collection", where):
            try:
                chroma.get_collection(name, embedding_function=None)
                found = True
            except (NotFoundError, ValueError):
                found = False
    if not found:
        raise StoreError(
            f"Collection {name!r} does not exist at {where}, and create_collection_if_not_exists=False opens an "
            "existing collection only; check collection_name and the location, or leave the option out to create it."
        )
