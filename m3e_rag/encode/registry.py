"""A frozen registry of the embedding models m3e-rag knows by name: M3E and the BGE models beside it.

The BGE models are the ones a Chinese-English user weighs against M3E.

Facts as data: the dimension, token window, prompts, languages and licence of each model are known
without loading (or downloading) anything, so stores can be sized and checked, chunks budgeted and
prompts chosen before the weights arrive. Any other sentence-transformers model (a hub id or a local
folder) works too; it simply has no entry here, and its facts are read from the model once loaded.

Prompts are applied by :class:`~m3e_rag.encode.encoder.M3EEncoder` when the caller gives none and the model
folder defines none: the BGE ``*-zh-v1.5`` models get their retrieval instruction on queries only
(never on passages, never for sentence similarity), as their model cards say.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError

__all__ = [
    "ModelSpec",
    "MODELS",
    "DEFAULT_MODEL",
    "MODEL_CARD_URL",
    "DEFAULT_CHUNK_CAP",
    "BGE_ZH_QUERY_INSTRUCTION",
    "OUTPUTS",
    "resolve_spec",
    "spec_for",
    "register_model",
]

MODEL_CARD_URL = "https://huggingface.co/{hub_id}"
#: Largest chunk budget (tokens) a long-window model gets unless the caller asks for more: a 512-token
#: model's room. bge-m3 reads 8,192 tokens, but one vector per 8k-token chunk blurs retrieval and costs
#: quadratic attention; pass ``chunk_tokens`` to go higher.
DEFAULT_CHUNK_CAP = 510
#: The outputs a model can give: dense vectors, learned lexical weights, ColBERT multi-vectors.
OUTPUTS = ("dense", "sparse", "colbert")
#: The s2p (short query -> passage) retrieval instruction of bge-*-zh-v1.5, for queries only.
BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："


@dataclass(frozen=True)
class ModelSpec:
    """One published embedding model, described without loading it.

    Attributes:
        alias: short name accepted everywhere a model name is (``"m3e-base"``).
        hub_id: Hugging Face Hub repository id.
        dim: embedding dimension.
        max_tokens: token window including the special tokens.
        languages: languages the model was trained for (``"multilingual"`` for 100+).
        params_millions: approximate parameter count.
        family: ``"m3e"`` or ``"bge"`` (or your own label for registered models).
        query_prompt: text prepended to retrieval queries ('' for none).
        document_prompt: text prepended to passages ('' for none).
        licence: short licence name of the weights as their card states it, or ``"see model card"``.
        licence_url: where the licence terms are (default: the model card).
        pooling: how token vectors become one (``"mean"`` or ``"cls"``), for information.
        notes: one line a chooser should know.
        outputs: what the model gives: ``"dense"``, plus ``"sparse"`` (learned lexical weights) and
            ``"colbert"`` (multi-vectors) where its folder ships BGE-M3's heads (:mod:`~m3e_rag.encode.bge_m3`).
    """

    alias: str
    hub_id: str
    dim: int
    max_tokens: int
    languages: tuple[str, ...]
    params_millions: int
    family: str = "m3e"
    query_prompt: str = ""
    document_prompt: str = ""
    licence: str = "see model card"
    licence_url: str = ""
    pooling: str = "mean"
    notes: str = ""
    outputs: tuple[str, ...] = ("dense",)

    def __post_init__(self) -> None:
        if not self.alias.strip() or not self.hub_id.strip():
            raise InputError("a ModelSpec needs a non-empty alias and hub_id.")
        if self.dim < 1 or self.max_tokens < 3:
            raise InputError(f"ModelSpec {self.alias!r}: dim must be >= 1 and max_tokens >= 3.")
        if "dense" not in self.outputs or not set(self.outputs) <= set(OUTPUTS):
            raise InputError(
                f"ModelSpec {self.alias!r}: outputs must hold 'dense' and only {', '.join(OUTPUTS)}; "
                f"got {self.outputs!r}."
            )

    @property
    def model_card(self) -> str:
        """Address of the model card, where the weights' licence terms are stated."""
        return MODEL_CARD_URL.format(hub_id=self.hub_id)

    @property
    def licence_link(self) -> str:
        """Where to read the weights' licence: ``licence_url`` or the model card."""
        return self.licence_url or self.model_card

    @property
    def vector_bytes(self) -> int:
        """Bytes of one stored float32 vector (Chroma keeps float32)."""
        return 4 * self.dim

    def chunk_budget(self, cap: int = DEFAULT_CHUNK_CAP) -> int:
        """The largest chunk (tokens, special tokens excluded) this model should get by default.

        The window minus ``[CLS]``/``[SEP]``, capped at ``cap`` for long-window models.
        """
        return min(self.max_tokens - 2, cap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts, with the model card and licence link added."""
        data = asdict(self)
        data["languages"] = list(self.languages)
        data["outputs"] = list(self.outputs)
        data["model_card"] = self.model_card
        data["licence_url"] = self.licence_link
        data["vector_bytes"] = self.vector_bytes
        return data


_M3E_LICENCE = "see model card"
_M3E_NOTE = "weights' terms on the model card, widely summarised as research / non-commercial use"
_BGE_ZH_NOTE = "s2p query instruction on queries only; none for passages or sentence similarity"

MODELS: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("m3e-small", "moka-ai/m3e-small", 512, 512, ("zh",), 24, licence=_M3E_LICENCE, notes=_M3E_NOTE),
        ModelSpec("m3e-base", "moka-ai/m3e-base", 768, 512, ("zh", "en"), 110, licence=_M3E_LICENCE, notes=_M3E_NOTE),
        ModelSpec("m3e-large", "moka-ai/m3e-large", 1024, 512, ("zh",), 340, licence=_M3E_LICENCE, notes=_M3E_NOTE),
        ModelSpec(
            "bge-small-zh-v1.5", "BAAI/bge-small-zh-v1.5", 512, 512, ("zh",), 24, family="bge",
            query_prompt=BGE_ZH_QUERY_INSTRUCTION, licence="MIT", pooling="cls", notes=_BGE_ZH_NOTE,
        ),
        ModelSpec(
            "bge-base-zh-v1.5", "BAAI/bge-base-zh-v1.5", 768, 512, ("zh",), 102, family="bge",
            query_prompt=BGE_ZH_QUERY_INSTRUCTION, licence="MIT", pooling="cls", notes=_BGE_ZH_NOTE,
        ),
        ModelSpec(
            "bge-large-zh-v1.5", "BAAI/bge-large-zh-v1.5", 1024, 512, ("zh",), 326, family="bge",
            query_prompt=BGE_ZH_QUERY_INSTRUCTION, licence="MIT", pooling="cls", notes=_BGE_ZH_NOTE,
        ),
        ModelSpec(
            "bge-m3", "BAAI/bge-m3", 1024, 8192, ("multilingual",), 568, family="bge", licence="MIT",
            pooling="cls", outputs=("dense", "sparse", "colbert"),
            notes="dense, learned-sparse and ColBERT outputs from its heads (M3EEncoder.encode_outputs); "
            f"chunks capped at {DEFAULT_CHUNK_CAP} tokens unless chunk_tokens says more",
        ),
    )
}

DEFAULT_MODEL = "m3e-base"


def resolve_spec(name: str) -> ModelSpec | None:
    """Return the registry entry for an alias or hub id (case-insensitive), else None.

    Local folders and other hub ids are valid models too; they simply have no entry here
    (:func:`spec_for` also recognises a folder by its name).
    """
    key = name.strip().lower()
    for spec in MODELS.values():
        if key in (spec.alias.lower(), spec.hub_id.lower()):
            return spec
    return None


def spec_for(name_or_path: str | Path) -> ModelSpec | None:
    """The registry entry for a model name, or for a local folder recognisably holding a known model.

    A folder matches when its own name is a registered alias or the name part of a hub id
    (``/models/bge-base-zh-v1.5``), or when it lies in a Hugging Face cache folder
    (``models--BAAI--bge-base-zh-v1.5/snapshots/<hash>``). Only names match: the folder's contents
    are not read, so rename a folder that holds something else.
    """
    text = str(name_or_path)
    spec = resolve_spec(text)
    if spec is not None:
        return spec
    path = Path(text).expanduser()
    own = path.name.lower()
    cache = [p.lower() for p in path.parts if p.lower().startswith("models--")]
    for spec in MODELS.values():
        org_name = spec.hub_id.lower()
        if own in (spec.alias.lower(), org_name.split("/")[-1]) or "models--" + org_name.replace("/", "--") in cache:
            return spec
    return None


_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model to the registry, so its alias works everywhere and its facts are known unloaded.

    Args:
        spec: the model's facts. ``hub_id`` may be a local folder.
        replace: allow replacing an entry with the same alias (else :class:`InputError`).

    Returns:
        The registered spec.
    """
    if not isinstance(spec, ModelSpec):
        raise InputError(f"register_model() takes a ModelSpec, got {type(spec).__name__}.")
    if not _ALIAS_RE.match(spec.alias) or "/" in spec.alias:
        raise InputError(f"alias {spec.alias!r} must be letters, digits, '.', '_' or '-' (no '/').")
    if spec.alias in MODELS and not replace:
        raise InputError(f"a model named {spec.alias!r} is already registered; pass replace=True to replace it.")
    MODELS[spec.alias] = spec
    return spec
