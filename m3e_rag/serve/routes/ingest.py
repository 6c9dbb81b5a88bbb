"""``POST /v1/ingest``: add texts, or files under ``--ingest-root``, to the served index.

The gate lets it through only with the API key. Server-side paths are resolved under the
ingest root and refused (403) if they (or a link inside a folder) lead outside it; that early check
answers fast, but the ingest may wait for the index lock after it, so the library is also told to
confine every file to the root *where it is opened* (``confine_to``): a file or folder swapped for a
link out of the root meanwhile is skipped unread, and the report says so.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from m3e_rag.errors import M3ERagError
from m3e_rag.serve.config import ServeConfig
from m3e_rag.serve.http_errors import ApiError, from_library, json_response
from m3e_rag.serve.routes.deps import ServiceDep, need_index, ready
from m3e_rag.serve.schemas import IngestRequest

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/ingest", tags=["index"])
async def ingest(body: IngestRequest, service: ServiceDep) -> Response:
    """Add texts or server-side files to the index (needs the API key; paths need --ingest-root).

    Runs to completion even if the client disconnects (each step commits whole), and a
    shutdown waits for it.
    """
    svc = ready(service)
    pipeline = need_index(svc)
    if body.texts is None and body.paths is None:
        raise ApiError(400, "Nothing to ingest: send texts=[{text, source?, metadata?}] or paths=[...].",
                       param="texts")
    if body.paths is None and (body.include is not None or body.exclude is not None):
        raise ApiError(400, "include/exclude filter the files of paths; send paths too, or drop them.",
                       param="include" if body.include is not None else "exclude")
    paths = _allowed_paths(svc.config, body.paths) if body.paths is not None else None
    kwargs: dict[str, Any] = {}
    if paths is not None and svc.config.ingest_root is not None:
        kwargs["confine_to"] = [Path(svc.config.ingest_root).resolve()]  # checked again at each open
    if body.texts is not None:
        for i, item in enumerate(body.texts):
            if not item.text.strip():
                raise ApiError(400, f"texts[{i}].text is empty; drop it or give it text.", param="texts")
        kwargs.update(texts=[t.text for t in body.texts],
                      sources=None if all(t.source is None for t in body.texts)
                      else [t.source or _default_source(t.text) for t in body.texts],
                      metadatas=[t.metadata for t in body.texts])
    async with svc.index_lock:
        try:
            report = await asyncio.to_thread(pipeline.ingest, paths, include=body.include,
                                             exclude=body.exclude, **kwargs)
        except M3ERagError as exc:
            raise from_library(exc) from exc
    return json_response(report.to_dict())


def _default_source(text: str) -> str:
    """The source the library gives a text without one (``text:`` + 16 hex of its SHA-1)."""
    import hashlib

    return "text:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _allowed_paths(config: ServeConfig, given: list[str]) -> list[Path]:
    """Resolve each path under --ingest-root; refuse anything outside it (symlinks included)."""
    if config.ingest_root is None:
        raise ApiError(403, "This server reads no server-side paths; restart it with --ingest-root DIR to allow "
                       "ingesting files under DIR, or send texts instead.", param="paths", code="paths_not_allowed",
                       type_="permission_error")
    root = Path(config.ingest_root).resolve()
    out: list[Path] = []
    for i, raw in enumerate(given):
        shown = repr(raw) if len(raw) <= 200 else repr(raw[:200]) + f"... ({len(raw):,} characters)"
        try:
            if "\x00" in raw:
                raise ValueError("a NUL byte")
            path = (root / raw).resolve()  # an absolute `raw` replaces root; symlinks are resolved
            exists = path.exists()
        except (OSError, ValueError) as exc:  # NUL byte, a name too long for the file system...
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ApiError(400, f"paths[{i}] ({shown}) is not a usable path ({reason}); give a file or folder "
                           "under the ingest root.", param="paths", code="invalid_path") from None
        if not path.is_relative_to(root):
            raise ApiError(403, f"paths[{i}] ({shown}) is outside the ingest root {str(root)!r}; only files under "
                           "it can be ingested.", param="paths", code="path_outside_root", type_="permission_error")
        if not exists:
            raise ApiError(400, f"paths[{i}] ({shown}) does not exist under the ingest root.", param="paths",
                           code="path_not_found")
        if path.is_dir():
            for dirpath, _, filenames in os.walk(path):
                for name in filenames:
                    target = Path(dirpath, name).resolve()
                    if not target.is_relative_to(root):
                        raise ApiError(403, f"paths[{i}] holds {os.path.join(dirpath, name)!r}, a link to "
                                       f"{str(target)!r} outside the ingest root; remove the link or ingest "
                                       "another folder.", param="paths", code="path_outside_root",
                                       type_="permission_error")
        out.append(path)
    return out
