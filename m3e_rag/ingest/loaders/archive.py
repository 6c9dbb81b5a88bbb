"""Zip-based files (.docx) bounded by what they expand to, not by their size on disk.

A .docx is a zip: 3 MB on disk can hold 1 GB of XML (a zip bomb; the parser then needs several
times that in memory). :func:`check_zip` is run on the file's bytes before any parser sees them:

* **from the zip directory**: the declared sizes of all members together must stay within the
  limit (``max_file_bytes``: the same limit that bounds the file's own size), each member may
  expand at most :data:`MAX_EXPANSION_RATIO` times its compressed size (members under
  :data:`RATIO_GRACE_BYTES` excepted), and only the methods Office writes (stored, deflate) are
  accepted: bzip2 and LZMA members are decompressed by :mod:`zipfile` in unbounded pieces.
* **while streaming**: every member is then decompressed in pieces of :data:`READ_STEP_BYTES`
  and the bytes that come out are counted against the same limits; the check stops at the first
  piece over a limit. :mod:`zipfile` also stops each member at its declared size and checks its
  CRC, so a directory that lies about a size is refused as damaged instead of expanding.

The parser (python-docx) then reads the same bytes in memory (never the file again, which could
have changed), so what it reads is what was measured.
"""

from __future__ import annotations

import io
import zipfile
import zlib

from m3e_rag.ingest.loaders._common import _Skip

__all__ = ["MAX_EXPANSION_RATIO", "RATIO_GRACE_BYTES", "READ_STEP_BYTES", "check_zip"]

#: Most a member may expand relative to its compressed size (Apache POI's ``ZipSecureFile`` default,
#: a minimum inflate ratio of 0.01). XML written by Word compresses 5-20 times; a bomb, hundreds.
MAX_EXPANSION_RATIO = 100
#: Members that expand to less than this are not held to the ratio (small parts compress oddly well).
RATIO_GRACE_BYTES = 1024 * 1024
#: Bytes decompressed per step of the streaming check (bounds its memory).
READ_STEP_BYTES = 64 * 1024

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_BOMB = "a zip bomb, not a file Office writes; it was not read"


def _over_total(total: int, limit: int, streamed: bool = False) -> _Skip:
    size = f"more than {limit:,} bytes" if streamed else f"{total:,} bytes (its zip directory says)"
    return _Skip(
        f"expands to {size} once unzipped, over the limit of {limit:,} bytes for what a file may expand to; "
        "raise max_file_bytes= (CLI: --max-file-size) to load it"
    )


def _over_ratio(name: str, expanded: int, compressed: int) -> _Skip:
    return _Skip(
        f"{name} expands {expanded // max(compressed, 1):,} times ({compressed:,} -> {expanded:,} bytes), over the "
        f"limit of {MAX_EXPANSION_RATIO} times for one member: {_BOMB}"
    )


def _check_directory(infos: list[zipfile.ZipInfo], limit: int | None) -> None:
    """The checks the zip directory allows before anything is decompressed (the bomb's signature first)."""
    for info in infos:
        if info.compress_type not in _METHODS:
            raise _Skip(
                f"{info.filename} is compressed with zip method {info.compress_type}; Office files use stored or "
                "deflate only, and other methods cannot be read with bounded memory: not read"
            )
        if info.flag_bits & 0x1:
            raise _Skip(f"{info.filename} is encrypted; save the document without a password first")
        if info.file_size > RATIO_GRACE_BYTES and info.file_size > MAX_EXPANSION_RATIO * max(info.compress_size, 1):
            raise _over_ratio(info.filename, info.file_size, info.compress_size)
    declared = sum(info.file_size for info in infos)
    if limit is not None and declared > limit:
        raise _over_total(declared, limit)


def _stream(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limit: int | None) -> None:
    """Decompress every member in bounded pieces, counting what comes out against the limits."""
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        expanded = 0
        with archive.open(info) as member:
            while piece := member.read(READ_STEP_BYTES):
                expanded += len(piece)
                total += len(piece)
                if limit is not None and total > limit:
                    raise _over_total(total, limit, streamed=True)
                if expanded > RATIO_GRACE_BYTES and expanded > MAX_EXPANSION_RATIO * max(info.compress_size, 1):
                    raise _over_ratio(info.filename, expanded, info.compress_size)


def check_zip(data: bytes, limit: int | None, kind: str = ".docx") -> None:
    """Raise ``_Skip`` naming the limit if the zip in ``data`` expands past ``limit`` bytes or the ratio.

    ``limit`` None checks the ratio, the methods and the CRCs only. A damaged zip (a bad directory,
    a member whose CRC or size does not match its header) is refused too, naming ``kind``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_directory(infos, limit)
            _stream(archive, infos, limit)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise _Skip(f"not a valid {kind} (a damaged or forged zip: {exc})") from None
