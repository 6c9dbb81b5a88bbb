"""The model guard: what a collection's metadata records about the model that built it, and the check.

An m3e-rag collection records, under keys prefixed :data:`META_PREFIX`, the model id, the vector
dimension, whether vectors are normalized, the chunker settings and a format version. Opening it
with another model is refused before anything is written, with a message naming the model that
built it: vectors of two models in one index would rank nonsense without any error. The keys are
read here, by :class:`~m3e_rag.index.chroma.ChromaStore`, and straight from sqlite by
:mod:`m3e_rag.index.doctor`; this module is their one owner.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError, ModelMismatchError

__all__ = [
    "FORMAT_VERSION",
    "META_PREFIX",
    "adopt_command",
    "check_built_model",
    "describe_metadata",
    "expected_metadata",
    "recorded_model",
    "same_model",
    "user_metadata",
]

#: Prefix of the collection-metadata keys m3e-rag owns (the model guard's and the write generation's).
META_PREFIX = "m3e_rag:"
#: Version of the metadata layout recorded under ``m3e_rag:format``.
FORMAT_VERSION = 1


def user_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Collection metadata given by the caller (LangChain's ``collection_metadata``), checked.

    Keys under ``m3e_rag:`` are the model guard's and are refused; ``hnsw:space`` may only be
    ``cosine`` (the index always uses cosine space; other ``hnsw:*`` tuning keys are passed on).
    """
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or key.startswith(META_PREFIX):
            raise InputError(f"collection_metadata key {key!r} is reserved for m3e-rag's model guard; rename it.")
        if key == "hnsw:space":
            if value != "cosine":
                raise InputError(
                    f"collection_metadata {{'hnsw:space': {value!r}}} is refused: m3e-rag indexes are always cosine "
                    "space (normalized M3E vectors); drop the key."
                )
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(f"collection_metadata[{key!r}] must be a str, int, float or bool, got {value!r}.")
        out[key] = value
    return out


def same_model(recorded: str, current: str) -> bool:
    """Whether two model names are one model: equal, or two spellings of one local folder."""
    if recorded == current:
        return True
    try:
        a, b = Path(recorded).expanduser(), Path(current).expanduser()
        return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def expected_metadata(
    user_meta: Mapping[str, Any], model_id: str, dim: int, normalize: bool, chunker: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata a new collection is created with: the caller's keys plus the model guard's."""
    return {
        **user_meta,
        f"{META_PREFIX}model": model_id,
        f"{META_PREFIX}dim": dim,
        f"{META_PREFIX}normalize": normalize,
        f"{META_PREFIX}chunker": json.dumps(chunker, sort_keys=True),
        f"{META_PREFIX}format": FORMAT_VERSION,
    }


def check_built_model(meta: Mapping[str, Any], collection: str, where: str, model_id: str, dim: int) -> None:
    """Refuse to open a collection m3e-rag did not create, or one built with another model or dimension.

    Raises:
        ModelMismatchError: naming the model that built the collection and what to do.

    """
    built_model = meta.get(f"{META_PREFIX}model")
    built_dim = meta.get(f"{META_PREFIX}dim")
    if built_model is None:
        raise ModelMismatchError(
            f"Collection {collection!r} at {where} was not created by m3e-rag (no model recorded). If it was "
            "written by langchain_chroma.Chroma or LlamaIndex's ChromaVectorStore with this model, adopt it once: "
            f"{adopt_command(where, collection, model_id)}; or use another collection name or index folder."
        )
    if built_dim != dim or not same_model(str(built_model), model_id):
        raise ModelMismatchError(
            f"The index at {where} (collection {collection!r}) was built with model "
            f"{built_model!r} ({built_dim}-d), but you opened it with {model_id!r} ({dim}-d). "
            f"Open it with model {built_model!r}, or rebuild: ingest into a new index folder or collection "
            "(the existing one is untouched)."
        )


def adopt_command(where: str, collection: str, model_id: str) -> str:
    """The ``m3e-rag adopt`` command line for a collection at ``where`` (a folder or a server's address)."""
    if where == "the given Chroma client":
        return f"RAGPipeline(client=<this client>, collection={collection!r}, model_name=...).adopt()"
    flag = "--chroma-url" if "://" in where else "--index"
    quoted = [shlex.quote(part) for part in (where, collection, model_id)]
    return f"m3e-rag adopt {flag} {quoted[0]} --collection {quoted[1]} --model {quoted[2]}"


def describe_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the guard recorded: ``model``, ``dim``, ``normalize`` and ``chunker`` (None where absent)."""
    chunker = meta.get(f"{META_PREFIX}chunker")
    return {
        "model": meta.get(f"{META_PREFIX}model"),
        "dim": meta.get(f"{META_PREFIX}dim"),
        "normalize": meta.get(f"{META_PREFIX}normalize"),
        "chunker": json.loads(chunker) if isinstance(chunker, str) else None,
    }


def recorded_model(meta: Mapping[str, Any]) -> tuple[str, int] | None:
    """The (model id, dim) recorded in a collection's metadata, or None if either is missing."""
    model = meta.get(f"{META_PREFIX}model")
    dim = meta.get(f"{META_PREFIX}dim")
    if not isinstance(model, str) or not isinstance(dim, int):
        return None
    return model, dim
