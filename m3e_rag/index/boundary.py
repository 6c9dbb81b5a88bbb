"""The store boundary: third-party failures (chromadb, sqlite, the OS) become m3e-rag's own errors.

Every call ``ChromaStore`` makes into Chroma runs inside :func:`store_boundary`, which translates
what escapes into one of :class:`~m3e_rag.errors.InputError` (a bad filter),
:class:`~m3e_rag.errors.IndexDamagedError` (the files on disk are damaged) or
:class:`~m3e_rag.errors.StoreError` (read-only folder, full disk, a server that refuses), each with
one sentence saying what to do. Filters are validated up front by :func:`check_filters` with
Chroma's own validators, so a typo such as ``{"$bogus": 1}`` is refused before anything runs.

Only exceptions raised by chromadb, sqlite3 and the OS are translated; anything else is a bug in
m3e-rag and keeps its traceback. That includes Rust panics inside chromadb's bindings
(``pyo3_runtime.PanicException``, e.g. ``database disk image is malformed`` on overwritten sqlite pages):
they derive from ``BaseException``, not ``Exception``, so they are caught by their class, never by a bare
``except BaseException`` that would swallow Ctrl-C (``KeyboardInterrupt``), ``SystemExit``,
``GeneratorExit`` or a cancelled task.

``m3e-rag doctor`` is named only where it can help: damage it recognises in an embedded index folder.
A Chroma server (doctor reads folders), a caller's own client, a refused argument or a request naming
too many ids at once never point there.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m3e_rag.errors import IndexDamagedError, InputError, M3ERagError, StoreError

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_VALUES",
    "check_filters",
    "doctor_hint",
    "is_panic",
    "store_boundary",
    "translate_store_error",
]

#: Deepest nesting of ``$and`` / ``$or`` a filter may have, in every search mode alike. Chroma itself
#: refuses from 63 levels on ("Invalid where clause"); filtered BM25 used to evaluate deeper filters in
#: Python, so one filter was accepted in sparse mode and refused in dense. Any number of conditions fits
#: in one level: ``{"$and": [c1, c2, ..., cN]}``.
MAX_FILTER_DEPTH = 32
#: Most conditions and values one filter (``where`` and ``where_document`` together) may hold: each value
#: is a variable of one sqlite statement (a ``$in`` value takes two), and sqlite allows 32,766.
MAX_FILTER_VALUES = 10_000

_WHERE_HELP = 'e.g. {"source": "a.md"}, {"page": {"$gte": 2}} or {"$and": [{...}, {...}]}'
_WHERE_DOCUMENT_HELP = 'e.g. {"$contains": "熊猫"}, {"$regex": "^第.章"} or {"$or": [{...}, {...}]}'

# Substrings of chromadb/sqlite messages (lower-cased) that mean the files on disk are damaged.
_DAMAGED = (
    "malformed",
    "not a database",
    "no such table",
    "no such column",
    "error getting embedding",
    "error loading hnsw",
    "error finding id",
    "error constructing hnsw",
    "hnsw segment reader",
    "nothing found on disk",
    "index not found",
    "failed to load",
    "file is encrypted",
    "corrupt",
    "checksum",
    "invalid header",
    "unexpected end of file",
    "failed to fill whole buffer",
    "(code: 11)",  # SQLITE_CORRUPT, as chromadb's Rust side reports it
    "(code: 26)",  # SQLITE_NOTADB
)
_READ_ONLY = ("readonly", "read-only", "read only", "permission denied", "attempt to write")
_FULL = ("database or disk is full", "no space left", "disk is full", "quota exceeded")


def doctor_hint(location: str) -> str:
    """The sentence every damage report ends with: the command that diagnoses and repairs."""
    return f"run `m3e-rag doctor --index {location}` to see what is wrong, then add --repair to rebuild what can be"


def check_filters(where: Mapping[str, Any] | None, where_document: Mapping[str, Any] | None) -> None:
    """Validate a metadata filter and a document filter with Chroma's own rules.

    Raises:
        InputError: naming the filter, what is wrong with it and an example of a valid one.
    """
    from chromadb.api.types import validate_where, validate_where_document

    _check_filter_size(where, where_document)
    if where is not None:
        if not isinstance(where, Mapping):
            raise InputError(
                f"where must be a dict (a Chroma metadata filter), got {type(where).__name__}; {_WHERE_HELP}."
            )
        if where:
            try:
                validate_where(dict(where))
                _check_where_keys(where)
            except ValueError as exc:
                raise InputError(f"Invalid where filter {dict(where)!r}: {exc}; {_WHERE_HELP}.") from exc
    if where_document is not None:
        if not isinstance(where_document, Mapping):
            raise InputError(
                f"where_document must be a dict (a Chroma document filter), got {type(where_document).__name__}; "
                f"{_WHERE_DOCUMENT_HELP}."
            )
        if where_document:
            try:
                validate_where_document(dict(where_document))  # type: ignore[arg-type]
            except ValueError as exc:
                raise InputError(
                    f"Invalid where_document filter {dict(where_document)!r}: {exc}; {_WHERE_DOCUMENT_HELP}."
                ) from exc


def _check_filter_size(where: object, where_document: object) -> None:
    """Refuse a filter nested deeper than :data:`MAX_FILTER_DEPTH` or holding over :data:`MAX_FILTER_VALUES` values.

    Walked iteratively (a filter 100,000 levels deep must not overflow Python's stack, and a filter that
    contains itself must end), before Chroma's recursive validators see it.
    """
    count = 0
    for name, root in (("where", where), ("where_document", where_document)):
        stack: list[tuple[object, int]] = [(root, 0)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_FILTER_VALUES:
                raise InputError(
                    f"The filters hold more than {MAX_FILTER_VALUES:,} conditions and values (sqlite allows "
                    "32,766 variables in one statement); filter on a coarser key, or split the request."
                )
            if isinstance(node, Mapping):
                for key, value in node.items():
                    level = depth + 1 if key in ("$and", "$or") else depth
                    if level > MAX_FILTER_DEPTH:
                        raise InputError(
                            f"The {name} filter nests $and/$or more than {MAX_FILTER_DEPTH} levels deep; at most "
                            f"{MAX_FILTER_DEPTH} are allowed in every search mode. Flatten it: one "
                            '{"$and": [c1, c2, ...]} takes any number of conditions.'
                        )
                    stack.append((value, level))
            elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
                stack.extend((item, depth) for item in node)


def _check_where_keys(where: Mapping[str, Any]) -> None:
    """Chroma's Python validator lets a top-level unknown ``$operator`` through; refuse it here."""
    for key, value in where.items():
        if key in ("$and", "$or"):
            for part in value:
                _check_where_keys(part)
        elif isinstance(key, str) and key.startswith("$"):
            raise ValueError(f"{key!r} is not a logical operator ($and, $or) and metadata keys cannot start with '$'")


@contextmanager
def store_boundary(action: str, location: str, *, filters: bool = False) -> Iterator[None]:
    """Run a call into Chroma, translating what it raises into m3e-rag's errors.

    Args:
        action: what was being done, for the message (``"search"``, ``"write"``, ``"open"``).
        location: the index folder or server address, for the message.
        filters: the call carried a user filter, so Chroma's argument errors are the user's input.
    """
    try:
        yield
    except M3ERagError:
        raise
    except Exception as exc:
        translated = translate_store_error(exc, action, location, filters=filters)
        if translated is None:
            raise
        raise translated from exc
    except BaseException as exc:  # only a Rust panic is translated; Ctrl-C, exit, cancellation pass as they are
        if not is_panic(exc):
            raise
        raise (translate_store_error(exc, action, location) or StoreError(str(exc))) from exc


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic surfacing from chromadb's bindings (``pyo3_runtime.PanicException``).

    pyo3 creates that class at run time as ``pyo3_runtime.PanicException`` without registering a module
    (``import pyo3_runtime`` fails), so it is recognised by its name along its bases; it derives from
    ``BaseException`` only.
    """
    return not isinstance(exc, Exception) and any(cls.__name__ == "PanicException" for cls in type(exc).__mro__)


#: Free bytes under which a failed write is reported as a full disk. Chroma's own message for it is
#: often unspecific ("Error in compaction: Failed to apply logs to the metadata segment").
LOW_DISK_BYTES = 32 * 2**20


def _disk_nearly_full(location: str) -> bool:
    import shutil

    folder = Path(location)
    if not folder.is_dir():
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


def _is_foreign(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(_FOREIGN_MODULES) or isinstance(exc, (sqlite3.Error, OSError)) or is_panic(exc)


def _is_folder(location: str) -> bool:
    """Whether ``location`` names an embedded index folder (doctor's subject), not a server or a given client."""
    if "://" in location:
        return False
    try:
        return Path(location).is_dir()
    except (OSError, ValueError):
        return False


#: Packages whose exceptions the store boundary translates (Chroma and the HTTP stack under its client).
_FOREIGN_MODULES = ("chromadb", "httpx", "httpcore", "urllib3", "requests")


def _raised_inside_chromadb(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is Chroma's code (its argument validation raises ValueError)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and "chromadb" in last.tb_frame.f_code.co_filename


def translate_store_error(
    exc: BaseException, action: str, location: str, *, filters: bool = False
) -> M3ERagError | None:
    """The m3e-rag error for an exception raised inside Chroma, or None if it is not Chroma's/the OS's."""
    name = type(exc).__name__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    lowered = str(exc).lower()
    if filters and name in ("InvalidArgumentError", "ValueError") and not any(s in lowered for s in _DAMAGED):
        return InputError(f"Chroma refused the filter ({message}); check where / where_document, {_WHERE_HELP}.")
    if isinstance(exc, (ValueError, TypeError)) and not _is_foreign(exc) and _raised_inside_chromadb(exc):
        return InputError(f"Chroma refused the arguments of {action} ({message}); check ids (strings), metadata "
                          "(str, int, float or bool values) and filters.")
    if not _is_foreign(exc):
        return None
    if "too many sql variables" in lowered:  # a request naming too many ids or values at once, not damage
        return InputError(
            f"The request to {action} names too many ids or filter values at once for Chroma's sqlite ({message}); "
            "split it into calls of at most 10,000 ids or values."
        )
    if (type(exc).__module__ or "").startswith(("httpx", "httpcore", "urllib3", "requests")):
        return StoreError(f"The Chroma server at {location} did not answer ({name}: {message}) while trying to "
                          f"{action}; check that it is running (`chroma run ...`) and reachable, then retry.")
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or any(s in lowered for s in _FULL) or _disk_nearly_full(location):
        return StoreError(
            f"The disk holding the index at {location} is full ({message}) while trying to {action}; free some "
            "space and run the same command again (what was already stored is kept)."
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or any(s in lowered for s in _READ_ONLY):
        return StoreError(
            f"The index at {location} cannot be written ({message}) while trying to {action}; make the folder "
            "writable by this user, or copy it somewhere writable and open the copy."
        )
    if any(s in lowered for s in _DAMAGED):
        if not _is_folder(location):
            return StoreError(
                f"Chroma reports damaged data at {location} ({name}: {message}) while trying to {action}; check the "
                "Chroma server's log and the storage it runs on."
            )
        return IndexDamagedError(
            f"The index at {location} is damaged ({name}: {message}) while trying to {action}; {doctor_hint(location)}."
        )
    return StoreError(f"Chroma failed to {action} at {location} ({name}: {message}); check the arguments, and "
                      "if they are right and it persists, report it with this message.")
