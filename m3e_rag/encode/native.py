"""Run a plain sentence-transformers folder (Transformer, Pooling, optional Normalize) with transformers alone.

Why: ``import sentence_transformers`` imports its trainers, evaluators, scikit-learn and scipy, none of which
encoding needs: a process that loads a model through it holds more memory after loading, and starts
slower, than one that loads it through transformers alone, and every ``m3e-rag`` process that encodes
would pay both (a one-shot ``m3e-rag search``, an ingest whose peak is bounded, a server) (figures:
benchmarks/README.md, 'Design figures').

What: the M3E folders (and most sentence-transformers text encoders: BGE, E5, text2vec) are a Hugging Face
encoder, a mean or CLS pooling, and sometimes an L2 normalisation, described by ``modules.json``. For
exactly such a folder, :func:`plan_for` returns a :class:`Plan` and :class:`NativeSentenceModel` runs it:
the tokenizer call and the pooling are sentence-transformers' own (the tests compare token ids and
vectors with sentence-transformers on the M3E, E5 and MiniLM folders and a CLS variant, with and without
a prompt, on short texts and one truncated at the window).
Any other folder (other modules, other pooling modes, a prompt excluded from pooling, lower-casing,
extra model or tokenizer arguments, remote code) returns None, and the encoder loads it with
sentence-transformers as before. The multi-process pool and the ONNX backends use sentence-transformers
too. Only the encoder imports this module, when it loads a model.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Plan", "plan_for", "NativeSentenceModel"]

#: The module types accepted, as ``modules.json`` names them (the classic names and those of sentence-transformers 6).
_TRANSFORMER = {"sentence_transformers.models.Transformer", "sentence_transformers.base.modules.Transformer",
                "sentence_transformers.base.modules.transformer.Transformer"}
_POOLING = {"sentence_transformers.models.Pooling", "sentence_transformers.sentence_transformer.modules.Pooling",
            "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}
_NORMALIZE = {"sentence_transformers.models.Normalize", "sentence_transformers.base.modules.Normalize",
              "sentence_transformers.base.modules.normalize.Normalize"}
#: Pooling config keys, older (``word_embedding_dimension`` and ``pooling_mode_*`` flags) and newer
#: (``embedding_dimension``, ``pooling_mode``); any other key means sentence-transformers loads the folder.
_POOLING_KEYS = {"word_embedding_dimension", "embedding_dimension", "pooling_mode", "include_prompt",
                 "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                 "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"}
_FLAG_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
_CONFIG_KEYS = {"max_seq_length", "do_lower_case"}
_MODULE_KEYS = {"idx", "name", "path", "type"}


@dataclass(frozen=True)
class Plan:
    """What :class:`NativeSentenceModel` needs to know about a folder, read from its JSON files."""

    pooling: str  # "mean" or "cls"
    dim: int
    normalize: bool
    max_seq_length: int | None
    prompts: dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooling(config: Any) -> tuple[str, int] | None:
    """(mode, dim) of a pooling config that is mean or CLS alone over all tokens, else None."""
    if not isinstance(config, dict) or set(config) - _POOLING_KEYS or config.get("include_prompt", True) is not True:
        return None
    modes: set[str | None] = set()
    mode = config.get("pooling_mode")
    named = [] if mode is None else [mode] if isinstance(mode, str) else mode if isinstance(mode, list) else [None]
    modes.update(name if isinstance(name, str) else None for name in named)  # None: a mode this cannot run
    for key, value in config.items():
        if key.startswith("pooling_mode_") and value is not False:
            modes.add(_FLAG_MODES.get(key) if value is True else None)
    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if len(modes) != 1 or not isinstance(dim, int) or isinstance(dim, bool):
        return None
    only = modes.pop()
    return (only, dim) if only in ("mean", "cls") else None


def plan_for(path: Path) -> Plan | None:
    """The :class:`Plan` for the sentence-transformers folder ``path``; None: sentence-transformers must load it."""
    modules = _json(path / "modules.json")
    if not isinstance(modules, list) or not 2 <= len(modules) <= 3 \
            or not all(isinstance(m, dict) and set(m) <= _MODULE_KEYS for m in modules):  # "kwargs": call options
        return None
    kinds = [m.get("type") for m in modules]
    if kinds[0] not in _TRANSFORMER or modules[0].get("path") not in ("", None) or kinds[1] not in _POOLING:
        return None
    if len(kinds) == 3 and kinds[2] not in _NORMALIZE:
        return None
    config = _json(path / "sentence_bert_config.json") or {}
    if not isinstance(config, dict) or set(config) - _CONFIG_KEYS or config.get("do_lower_case", False) is not False:
        return None
    max_len = config.get("max_seq_length")
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len <= 0):
        return None
    pooling = _pooling(_json(path / str(modules[1].get("path") or "") / "config.json"))
    st_config = _json(path / "config_sentence_transformers.json") or {}
    if pooling is None or not isinstance(st_config, dict) or st_config.get("default_prompt_name") is not None \
            or st_config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        return None
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        return None
    return Plan(pooling[0], pooling[1], len(kinds) == 3, max_len, dict(prompts))


class NativeSentenceModel(torch.nn.Module):
    """A Hugging Face encoder with sentence-transformers' tokenizer call and pooling (see the module docstring).

    It offers the part of ``SentenceTransformer``'s interface the encoder uses: ``tokenizer``,
    ``max_seq_length``, ``prompts``, ``device``, ``preprocess(texts, prompt=None)``, calling it on the
    features (``{"sentence_embedding": ...}``), ``get_embedding_dimension()``, and ``auto_model``.
    """

    def __init__(self, path: Path, plan: Plan, device: str) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.plan = plan
        self.auto_model = AutoModel.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        limit = {} if plan.max_seq_length is None else {"model_max_length": plan.max_seq_length}  # as ST does
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                                       **limit)
        if plan.max_seq_length is not None:
            self.max_seq_length = plan.max_seq_length
        else:  # as sentence-transformers does without a max_seq_length: the smaller of the two limits
            limits = [v for v in (getattr(self.auto_model.config, "max_position_embeddings", None),
                                  getattr(self.tokenizer, "model_max_length", None))
                      if isinstance(v, int) and 0 < v < 1 << 30]
            self.max_seq_length = min(limits) if limits else 512
        self.prompts = dict(plan.prompts)
        try:
            self._inputs = set(inspect.signature(self.auto_model.forward).parameters)
        except (TypeError, ValueError):
            self._inputs = {"input_ids", "attention_mask", "token_type_ids"}
        self.to(device)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    def get_embedding_dimension(self) -> int:
        """Width of the sentence vectors."""
        return self.plan.dim

    def preprocess(self, texts: list[str], prompt: str | None = None) -> dict[str, Any]:
        """Token tensors of ``texts`` with ``prompt`` prepended, as sentence-transformers tokenizes them."""
        if prompt:
            texts = [prompt + text for text in texts]
        features = self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt",
                                  max_length=self.max_seq_length)
        return dict(features)

    def forward(self, features: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"sentence_embedding": (batch, dim) tensor}`` for the token tensors of :meth:`preprocess`."""
        inputs = {k: v for k, v in features.items() if k in self._inputs and isinstance(v, torch.Tensor)}
        tokens = self.auto_model(**inputs, return_dict=True).last_hidden_state
        if self.plan.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.plan.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return {"sentence_embedding": pooled}
