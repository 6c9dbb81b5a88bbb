"""Errors raised by m3e-rag.

Every message says what happened and what to do next, in one sentence where possible.
All errors derive from :class:`M3ERagError`, so one ``except`` catches the library's own failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "M3ERagError",
    "ModelLoadError",
    "InputError",
    "InputTooLongError",
    "ModelMismatchError",
    "StoreError",
    "IndexDamagedError",
    "MissingExtraError",
    "require_extra",
    "refuse_unknown",
]


class M3ERagError(Exception):
    """Base class of every error m3e-rag raises on purpose."""


class ModelLoadError(M3ERagError, OSError):
    """The model could not be found or loaded (no network, wrong path, incomplete folder)."""


class InputError(M3ERagError, ValueError):
    """An input given by the caller is unusable (None, not a string, empty, bad option)."""


class InputTooLongError(InputError):
    """A text is longer than the model's token window and ``on_overflow="error"`` was asked for."""


class ModelMismatchError(M3ERagError):
    """An index was built with another model (or dimension) than the one opening it."""


class StoreError(M3ERagError):
    """The vector store refused an operation or is unreachable."""


class IndexDamagedError(StoreError):
    """The index's files disagree or are unreadable (truncated sqlite, missing HNSW segment).

    The message names ``m3e-rag doctor --index DIR``, which reports what is wrong and, with
    ``--repair``, rebuilds what can be rebuilt from what survives.
    """


class MissingExtraError(M3ERagError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed; "
            f"run: pip install 'm3e-rag[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require_extra(module: str, package: str, extra: str, feature: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'm3e-rag[extra]'``.

    The framework adapters call it first thing, so a missing framework reads as one clear line
    instead of a ModuleNotFoundError from deep inside.
    """
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package, extra, feature) from exc


def refuse_unknown(
    owner: str,
    given: Mapping[str, Any] | Iterable[str],
    accepted: Iterable[str],
    reasons: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`InputError` if ``given`` holds a name outside ``accepted``.

    Args:
        owner: what was called, e.g. ``"M3EVectorStore.query()"``.
        given: the keyword arguments (or just their names) received.
        accepted: the names that are honoured.
        reasons: for names known to be meaningless here, why (shown instead of "unknown").

    Raises:
        InputError: naming the first refused argument, the reason, and the accepted names.
    """
    allowed = set(accepted)
    why = dict(reasons or {})
    refused = [name for name in given if name not in allowed]
    if not refused:
        return
    name = refused[0]
    others = f" (also refused: {', '.join(refused[1:])})" if len(refused) > 1 else ""
    reason = why.get(name, "it is not an option of this class")
    raise InputError(
        f"{owner} does not accept {name!r}: {reason}{others}. Accepted: {', '.join(sorted(allowed)) or 'none'}."
    )
