"""A frozen registry of the M3E model family.

Facts as data: the dimension and token window of each variant are known without loading
(or downloading) anything, so stores can be sized and checked before the weights arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSpec", "MODELS", "DEFAULT_MODEL", "resolve_spec", "MODEL_CARD_URL"]

MODEL_CARD_URL = "https://huggingface.co/{hub_id}"


@dataclass(frozen=True)
class ModelSpec:
    """One published M3E variant.

    Attributes:
        alias: short name accepted everywhere a model name is (``"m3e-base"``).
        hub_id: Hugging Face Hub repository id.
        dim: embedding dimension.
        max_tokens: token window including the two special tokens.
        languages: languages the model was trained for.
        params_millions: approximate parameter count.
    """

    alias: str
    hub_id: str
    dim: int
    max_tokens: int
    languages: tuple[str, ...]
    params_millions: int

    @property
    def model_card(self) -> str:
        """Address of the model card, where the weights' licence terms are stated."""
        return MODEL_CARD_URL.format(hub_id=self.hub_id)


MODELS: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("m3e-small", "moka-ai/m3e-small", 512, 512, ("zh",), 24),
        ModelSpec("m3e-base", "moka-ai/m3e-base", 768, 512, ("zh", "en"), 110),
        ModelSpec("m3e-large", "moka-ai/m3e-large", 1024, 512, ("zh",), 340),
    )
}

DEFAULT_MODEL = "m3e-base"


def resolve_spec(name: str) -> ModelSpec | None:
    """Return the registry entry for an alias or hub id (case-insensitive), else None.

    Local folders and other hub ids are valid models too; they simply have no entry here.
    """
    key = name.strip().lower()
    for spec in MODELS.values():
        if key in (spec.alias, spec.hub_id.lower()):
            return spec
    return None
