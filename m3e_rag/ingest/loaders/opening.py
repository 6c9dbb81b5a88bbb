"""Opening a file to load: checked where it is opened, and watched for changes until it is stored.

**Paths are checked at open time, not before.** A check made earlier (a walk that saw a plain file,
a server that resolved a path under its ingest root, then waited for the index lock) says nothing
about what the name points to when it is finally opened: it can have been swapped for a symbolic
link meanwhile. :func:`open_checked` therefore opens first and checks what was opened: the real
path of the open descriptor (``/proc/self/fd/N`` on Linux; elsewhere the resolved path, accepted
only if it names the same device and inode as the descriptor) must lie inside the allowed folders.
A file that fails is never read. The open does not block (a FIFO swapped in is refused as "not a
regular file", it is never waited on).

**A file that changes while it is read is noticed.** :class:`FileStamp` keeps the size, times and
inode the descriptor had when it was opened; :meth:`FileStamp.changed` compares them with what the
path names now. The ingest run asks before committing a file's chunks (see
:mod:`m3e_rag.ingest.run`). Stat fields are what rsync and git compare too: a rewrite that keeps
the size within one tick of the file system's clock is not seen.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from m3e_rag.ingest.loaders._common import _Skip

__all__ = ["Confinement", "FileStamp", "inside", "open_checked"]

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


@dataclass(frozen=True)
class Confinement:
    """Folders (real paths) a file must lie in once opened, and the reason given when it does not."""

    roots: tuple[str, ...]
    reason: str


def inside(target: str, roots: Sequence[str]) -> bool:
    """Whether the real path ``target`` is one of ``roots`` or lies under one of them."""
    return any(target == r or target.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _opened_path(fd: int, path: str, st: os.stat_result) -> str | None:
    """The real path of the file open on ``fd``, or None when it cannot be told for sure."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = ""
    if real.startswith("/"):
        return real.removesuffix(" (deleted)")
    real = os.path.realpath(path)  # no /proc: accept the resolved name only if it is the open file
    try:
        now = os.stat(real)
    except OSError:
        return None
    return real if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) else None


def open_checked(
    path: str | os.PathLike[str], confinements: Sequence[Confinement] = ()
) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading and check, on the open descriptor, that it may be read.

    Returns the open binary file and its ``fstat``. Raises ``_Skip`` (never reading a byte) when
    the file is not a regular file or lies outside a confinement's folders; ``OSError`` when it
    cannot be opened.
    """
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip("not a regular file")
        if confinements:
            real = _opened_path(fd, os.fspath(path), st)
            for confinement in confinements:
                if real is None or not inside(real, confinement.roots):
                    raise _Skip(confinement.reason)
        if _FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _signature(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is rewritten in place or replaced (size, times, inode)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class FileStamp:
    """A file as it was when opened for loading: where it is and its stat signature."""

    path: str
    signature: tuple[int, ...]

    @classmethod
    def of(cls, path: str | os.PathLike[str], st: os.stat_result) -> FileStamp:
        """The stamp of ``path`` opened with ``fstat`` ``st``."""
        return cls(os.fspath(path), _signature(st))

    def changed(self) -> bool:
        """Whether the path now names other content (rewritten, replaced, removed) than when opened."""
        try:
            return _signature(os.stat(self.path)) != self.signature
        except OSError:
            return True
