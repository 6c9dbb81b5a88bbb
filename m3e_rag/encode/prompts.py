"""Which prompt each side (queries, documents) gets: the caller's, a named one, the model's own, the registry's.

The order is the encoder's contract (see :attr:`~m3e_rag.encode.encoder.M3EEncoder.query_prompt`): an explicit
prompt wins, then a prompt picked by name, then the model folder's own non-empty prompt, then the registry's
(the bge-*-zh-v1.5 retrieval instruction). The model's prompts are asked for only when needed, since
reading them loads the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from m3e_rag.encode.registry import spec_for
from m3e_rag.errors import InputError

__all__: list[str] = []

#: The model's own prompt names read for each side, first non-empty wins.
_MODEL_PROMPT_NAMES = {"query": ("query",), "document": ("passage", "document")}


def _pick_prompt(prompts: dict[str, str], names: Sequence[str]) -> str:
    """Return the first non-empty prompt among ``names``.

    sentence-transformers 6 adds an empty ``document`` prompt to every model; taking it would drop
    e5's ``passage: `` prefix, so empty entries never win over non-empty ones.
    """
    for name in names:
        value = prompts.get(name)
        if value:
            return value
    return ""


def _named_prompt(known: dict[str, str], name: str, side: str) -> str:
    """The prompt called ``name`` among ``known`` (the model's and the caller's), or InputError naming them."""
    if name not in known:
        raise InputError(
            f"{side}_prompt_name={name!r} is not a prompt of this model; known prompt names: "
            f"{sorted(known) or 'none'}. Pass the text itself as {side}_prompt=..., or add it with prompts={{...}}."
        )
    return known[name]


def _registry_prompt(model_name: str, side: str) -> str:
    """The registry's prompt for ``side`` (``query``/``document``) of a known model, else ''.

    Used last: after an explicit prompt and the model folder's own prompts (bge-*-zh-v1.5 folders
    define none, so their query instruction comes from here).
    """
    spec = spec_for(model_name)
    if spec is None:
        return ""
    return spec.query_prompt if side == "query" else spec.document_prompt


def _resolve_prompt(
    side: str, explicit: str | None, name: str | None, known: Callable[[], dict[str, str]], model_name: str
) -> str:
    """The prompt of ``side`` (``query``/``document``); ``known()`` gives the model's prompts and the caller's."""
    if explicit is not None:
        return explicit
    if name is not None:
        return _named_prompt(known(), name, side)
    return _pick_prompt(known(), _MODEL_PROMPT_NAMES[side]) or _registry_prompt(model_name, side)
