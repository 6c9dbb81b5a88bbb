"""Refuse what an adapter cannot honour, by name: the rule that nothing is silently ignored.

Framework classes accept keyword arguments through ``**kwargs`` (pydantic models, LlamaIndex's
``query(**kwargs)``); anything not in their accepted set must raise rather than vanish. This
module words that error once, so every adapter says the same thing: which name was refused,
why (when there is a known reason, e.g. "M3E uses mean pooling"), and which names are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InputError

__all__ = ["refuse_unknown"]


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
