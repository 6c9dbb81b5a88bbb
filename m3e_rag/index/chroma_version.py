"""Which chromadb versions the on-disk checks understand, and the refusal when another one is installed.

The integrity checks and ``m3e-rag doctor`` read Chroma's sqlite schema and its HNSW segment files directly
(to tell a damaged index from a healthy one without opening it through Chroma). Those formats are Chroma
1.5's; on another version the same reads could report damage that is not there, so they refuse instead,
naming the fix. pyproject.toml bounds the dependency to the same range.
"""

from __future__ import annotations

import functools
from importlib import metadata

from m3e_rag.errors import StoreError

__all__ = ["SUPPORTED_CHROMA", "check_chroma_version", "chroma_version"]

SUPPORTED_CHROMA = ((1, 5), (1, 6))
"""Lowest supported (major, minor), and the first one past the range."""


@functools.lru_cache(maxsize=1)
def chroma_version() -> str:
    """The installed chromadb's version ("not installed" when it is missing)."""
    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return "not installed"


def check_chroma_version(version: str | None = None) -> None:
    """Raise :class:`StoreError` when ``version`` (default: the installed chromadb) is outside the understood range.

    Raises:
        StoreError: naming the installed version, the supported range and the pip command that installs it.
    """
    found = chroma_version() if version is None else version
    try:
        major_minor = tuple(int(part) for part in found.split(".")[:2])
    except ValueError:
        major_minor = ()
    low, high = SUPPORTED_CHROMA
    if len(major_minor) == 2 and low <= major_minor < high:
        return
    raise StoreError(
        f"m3e-rag's index checks read Chroma {low[0]}.{low[1]}'s on-disk format, but chromadb {found} is installed; "
        f"run: pip install 'chromadb>={low[0]}.{low[1]},<{high[0]}.{high[1]}' (or upgrade m3e-rag when it supports "
        "the newer version)."
    )
