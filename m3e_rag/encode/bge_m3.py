"""BGE-M3's own outputs: dense vectors, learned lexical weights and ColBERT multi-vectors, from one forward pass.

BGE-M3 (FlagEmbedding's ``BGEM3FlagModel``) ships two small heads beside its transformer: ``sparse_linear.pt``
(hidden -> 1: one weight per token) and ``colbert_linear.pt`` (hidden -> hidden: one vector per token). Any
model folder holding these files gets these outputs here: the check is on the files, never on the model's
name. The maths is FlagEmbedding 1.4.2's (``inference/embedder/encoder_only/m3.py`` and
``finetune/embedder/encoder_only/m3/modeling.py``), so that vectors and scores agree with it:

- dense: the model's sentence vector (BGE-M3: the CLS hidden state), L2-normalised;
- lexical weights: ``relu(sparse_linear(hidden))`` per token, the largest per token id, the tokenizer's
  cls / eos / pad / unk tokens dropped and zero weights left out; keys are ``str(token id)``;
- ColBERT: ``colbert_linear`` over every real token but the first (CLS), each vector L2-normalised;
- scores: lexical = sum over shared tokens of q * d; ColBERT = mean over query vectors of the best dot product
  with a document vector; the combination = the weighted mean of the three (:data:`DEFAULT_WEIGHTS`).

One tokenizer pass and one transformer forward give all three: a forward hook on the transformer keeps its
last hidden state while the loaded model computes its own sentence vector, through the same batching, prompts,
window and counters as :meth:`~m3e_rag.encode.encoder.M3EEncoder.encode_documents`. :class:`ModelOutputsMixin`
gives :class:`~m3e_rag.encode.encoder.M3EEncoder` its ``outputs`` and ``encode_outputs``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from m3e_rag.encode.batching import _capped_lengths, _encode_batches
from m3e_rag.encode.inputs import _validate_texts
from m3e_rag.encode.torch_backend import _is_sentence_transformer, _st_embeddings
from m3e_rag.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    import torch

    from m3e_rag.encode.cache import SentenceModel, _LoadedModel
    from m3e_rag.encode.options import Backend

__all__ = [
    "DEFAULT_WEIGHTS",
    "HEAD_FILES",
    "ModelOutputs",
    "ModelOutputsMixin",
    "colbert_score",
    "combined_score",
    "head_files",
    "lexical_score",
    "outputs_of",
]

#: The file of each head in a model folder, as BGE-M3 ships them and FlagEmbedding loads them.
HEAD_FILES: Final[dict[str, str]] = {"sparse": "sparse_linear.pt", "colbert": "colbert_linear.pt"}
#: Weights of (dense, lexical, ColBERT) in :func:`combined_score`: FlagEmbedding 1.4.2's ``compute_score``
#: default (``[1., 1., 1.]``, divided by their sum: the plain mean). BGE-M3's model card shows
#: ``[0.4, 0.2, 0.4]`` in its example; pass ``weights=`` for that.
DEFAULT_WEIGHTS: Final[tuple[float, float, float]] = (1.0, 1.0, 1.0)
#: The key under which a batch's row indices ride from ``prepare`` to ``forward`` (see :func:`_run`).
_ROWS: Final = "_m3e_rows"


@dataclass(frozen=True)
class ModelOutputs:
    """What :meth:`~m3e_rag.encode.encoder.M3EEncoder.encode_outputs` returns, in the order of the texts.

    Attributes:
        dense: float32 array (n, dim), unit rows.
        lexical: one ``{str(token id): weight}`` per text (positive weights only), or None when not asked for.
        colbert: one float32 array (tokens, dim) of unit rows per text, or None when not asked for.
    """

    dense: np.ndarray
    lexical: list[dict[str, float]] | None = None
    colbert: list[np.ndarray] | None = None


def head_files(folder: Path) -> dict[str, Path]:
    """The heads the model folder ``folder`` ships: ``{"sparse": path, "colbert": path}``, those present only."""
    folder = Path(folder)
    return {kind: folder / name for kind, name in HEAD_FILES.items() if (folder / name).is_file()}


def outputs_of(folder: Path) -> tuple[str, ...]:
    """The outputs a model folder gives: ``("dense",)`` plus ``"sparse"`` / ``"colbert"`` for each head it ships."""
    return ("dense", *head_files(folder))


# ------------------------------------------------------------------------------------------------ scores
def lexical_score(q: Mapping[str, float], d: Mapping[str, float]) -> float:
    """Lexical matching score: the sum over the tokens both hold of ``q[t] * d[t]`` (FlagEmbedding's)."""
    return float(sum(weight * d[token] for token, weight in q.items() if token in d))


def colbert_score(q: np.ndarray, d: np.ndarray) -> float:
    """ColBERT score: for each query vector its best dot product with a document vector, averaged over the query.

    ``q`` is (query tokens, dim), ``d`` is (document tokens, dim), as :attr:`ModelOutputs.colbert` holds them.
    """
    q = np.asarray(q, dtype=np.float32)
    d = np.asarray(d, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise InputError(
            f"colbert_score() takes two 2-D arrays (tokens, dim) of the same width, got shapes {q.shape} and "
            f"{d.shape}; pass one entry of ModelOutputs.colbert for each side."
        )
    if q.shape[0] == 0 or d.shape[0] == 0:
        raise InputError("colbert_score() got an array without vectors; each side needs at least one token vector.")
    return float((q @ d.T).max(axis=1).astype(np.float64).mean())


def combined_score(
    dense: float, lexical: float | None, colbert: float | None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> float:
    """The weighted mean of the three scores, as FlagEmbedding's ``compute_score`` forms it.

    ``weights`` are (dense, lexical, ColBERT); the result is ``sum(w * s) / sum(w)`` over the scores given.
    A score passed as None is left out of both sums: ``combined_score(d, s, None)`` is FlagEmbedding's
    ``"sparse+dense"``, ``combined_score(d, s, c)`` its ``"colbert+sparse+dense"``.
    """
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence) or len(weights) != 3:
        raise InputError(f"weights must be three numbers (dense, lexical, colbert), got {weights!r}.")
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
               for w in weights):
        raise InputError(f"weights must be finite numbers >= 0, got {tuple(weights)!r}.")
    parts = [(float(w), float(s)) for w, s in zip(weights, (dense, lexical, colbert), strict=True) if s is not None]
    total = sum(w for w, _ in parts)
    if total <= 0:
        raise InputError(
            f"weights {tuple(weights)!r} give no weight to the scores passed; give a positive weight to at least one."
        )
    return sum(w * s for w, s in parts) / total


# ------------------------------------------------------------------------------------------------ heads
@dataclass
class _Heads:
    """The loaded heads of one loaded model (None where the folder ships none or none was asked for yet)."""

    sparse: torch.nn.Linear | None = None
    colbert: torch.nn.Linear | None = None


_HEADS: dict[tuple[str, str, str], _Heads] = {}
_HEADS_LOCK = threading.Lock()


def _load_linear(path: Path, kind: str, hidden: int) -> torch.nn.Linear:
    """A Linear layer from the state dict at ``path`` (``weights_only``: a head file runs no code)."""
    import torch

    def bad(problem: str) -> ModelLoadError:
        return ModelLoadError(
            f"The {kind} head {str(path)!r} {problem}; it must be the state dict of a Linear layer over the model's "
            f"{hidden}-wide hidden states, as BGE-M3 ships it. Re-download the model folder, or remove the file "
            "to use the model without that output."
        )

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file; the message names it
        raise bad(f"cannot be read ({type(exc).__name__}: {exc})") from exc
    weight = state.get("weight") if isinstance(state, Mapping) else None
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden \
            or (kind == "sparse" and weight.shape[0] != 1):
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
        raise bad(f"holds no fitting 'weight' (found shape {shape})")
    linear = torch.nn.Linear(hidden, int(weight.shape[0]), bias="bias" in state)
    try:
        linear.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise bad(f"does not fit a Linear layer ({exc})") from exc
    return linear.eval()


def _auto_model(st: SentenceModel) -> torch.nn.Module:
    """The Hugging Face transformer inside a loaded model (its last hidden state is what the heads read)."""
    model = getattr(st, "auto_model", None)
    if model is None and _is_sentence_transformer(st):
        model = getattr(st[0], "auto_model", None)  # type: ignore[index]
    if model is None:
        raise ModelLoadError("BGE-M3 heads need a Hugging Face transformer as the model's first module; none found.")
    return model


def _heads(model: _LoadedModel, kinds: Sequence[str]) -> _Heads:
    """The heads ``kinds`` of ``model``, loaded once per loaded model, on its device and in its dtype."""
    auto = _auto_model(model.st)
    param = next(auto.parameters())
    key = (str(Path(model.path).resolve()), str(param.device), str(param.dtype))
    with _HEADS_LOCK:
        heads = _HEADS.setdefault(key, _Heads())
        files = head_files(model.path)
        hidden = int(getattr(auto, "config").hidden_size)  # noqa: B009 - a Module's attribute, typed loosely
        for kind in kinds:
            if getattr(heads, kind) is None:
                linear = _load_linear(files[kind], kind, hidden).to(device=param.device, dtype=param.dtype)
                setattr(heads, kind, linear)
        return heads


# ------------------------------------------------------------------------------------------------ forward
def _unused_ids(tokenizer: Any) -> np.ndarray:
    """Token ids FlagEmbedding drops from lexical weights: the tokenizer's cls, eos, pad and unk tokens."""
    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk")]
    return np.asarray([i for i in ids if isinstance(i, int)], dtype=np.int64)


def _lexical(weights: np.ndarray, ids: np.ndarray, unused: np.ndarray) -> dict[str, float]:
    """``{str(token id): largest weight}`` over one text's real tokens, special tokens and zeros left out."""
    keep = (weights > 0) & ~np.isin(ids, unused)
    ids, weights = ids[keep], weights[keep]
    unique, inverse = np.unique(ids, return_inverse=True)
    best = np.zeros(len(unique), dtype=np.float32)
    np.maximum.at(best, inverse, weights)
    return {str(token): float(w) for token, w in zip(unique.tolist(), best.tolist(), strict=True)}


def _forward(st: SentenceModel, features: dict[str, Any]) -> tuple[np.ndarray, torch.Tensor]:
    """One forward pass: the model's own sentence vectors (float32) and the transformer's last hidden state.

    sentence-transformers hands the token states back in its output; the native model does not, so a forward
    hook on its transformer keeps them while it computes its sentence vectors.
    """
    import torch

    if _is_sentence_transformer(st):
        moved = {k: v.to(st.device, non_blocking=v.is_pinned()) if isinstance(v, torch.Tensor) else v
                 for k, v in features.items()}
        out = st(moved)
        return out["sentence_embedding"].detach().to(torch.float32).cpu().numpy(), out["token_embeddings"]
    captured: list[torch.Tensor] = []
    hook = _auto_model(st).register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
    try:
        dense = _st_embeddings(st, features)
    finally:
        hook.remove()
    return dense, captured[-1]


def _batch_outputs(
    model: _LoadedModel, features: dict[str, Any], heads: _Heads, unused: np.ndarray,
    lexical: list[Any], colbert: list[Any],
) -> np.ndarray:
    """Run one batch: its sentence vectors (returned) and its heads' outputs (stored at the batch's rows)."""
    import torch

    rows: np.ndarray = features.pop(_ROWS)
    dense, hidden = _forward(model.st, features)
    mask = features["attention_mask"].to(hidden.device).bool()
    if heads.sparse is not None:
        weights = torch.relu(heads.sparse(hidden)).squeeze(-1).float().cpu().numpy()
        ids = features["input_ids"].cpu().numpy()
        real = mask.cpu().numpy()
        for r, row in enumerate(rows):
            lexical[row] = _lexical(weights[r][real[r]], ids[r][real[r]], unused)
    if heads.colbert is not None:
        for r, row in enumerate(rows):
            vectors = heads.colbert(hidden[r][mask[r]][1:])  # every real token but the first (CLS)
            colbert[row] = torch.nn.functional.normalize(vectors, dim=-1).float().cpu().numpy()
    return dense


def _run(encoder: Any, texts: list[str], prompt: str, batch_size: int, kinds: Sequence[str]) -> ModelOutputs:
    """The outputs ``kinds`` (and dense) of ``texts``: batched, counted and truncated as the encoder does."""
    import torch

    model: _LoadedModel = encoder._loaded()
    loaded = _heads(model, kinds)
    heads = _Heads(**{kind: getattr(loaded, kind) for kind in kinds})  # only those asked for run
    unused = _unused_ids(model.st.tokenizer)
    lexical: list[Any] = [None] * len(texts)
    colbert: list[Any] = [None] * len(texts)

    def prepare(idx: np.ndarray) -> dict[str, Any]:
        features = dict(encoder._prepare(model, [texts[i] for i in idx], prompt))
        features[_ROWS] = idx
        return features

    with model.lock, torch.inference_mode():
        capped = _capped_lengths(model, encoder.count_tokens(texts, prompt), encoder.on_overflow)
        dense = _encode_batches(
            model, capped, batch_size, prepare,
            lambda features: _batch_outputs(model, features, heads, unused, lexical, colbert), encoder.show_progress,
        )
        model.stats.texts += len(texts)
        model.stats.tokens += int(capped.sum())
    dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
    return ModelOutputs(dense, lexical if "sparse" in kinds else None, colbert if "colbert" in kinds else None)


# ------------------------------------------------------------------------------------------------ the encoder's part
class ModelOutputsMixin:
    """:class:`~m3e_rag.encode.encoder.M3EEncoder`'s ``outputs`` and ``encode_outputs`` (the logic lives here)."""

    if TYPE_CHECKING:  # what the mixin reads of M3EEncoder (for the type checker only)
        model_name: str
        backend: Backend
        multi_process: bool
        batch_size: int
        query_batch_size: int | None

        def _model_folder(self) -> Path: ...
        def _encode(self, texts: list[str], prompt: str, *, batch_size: int | None = None,
                    normalize: bool | None = None) -> np.ndarray: ...
        @property
        def query_prompt(self) -> str:
            """The query-side prompt."""
        @property
        def document_prompt(self) -> str:
            """The document-side prompt."""
        @property
        def dim(self) -> int:
            """The dense width."""

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs this model gives: ``("dense",)``, or with ``"sparse"`` / ``"colbert"`` for each head it ships.

        Read from the model folder's files (``sparse_linear.pt``, ``colbert_linear.pt``), without loading weights.
        """
        return outputs_of(self._model_folder())

    def encode_outputs(
        self, texts: Sequence[str], kind: Literal["document", "query"] = "document", *,
        sparse: bool = True, colbert: bool = False,
    ) -> ModelOutputs:
        """Dense vectors, and lexical weights (``sparse``) and ColBERT vectors (``colbert``), of ``texts``.

        ``kind`` picks the side: its prompt and batch size, as :meth:`encode_documents` / :meth:`encode_queries`
        use them. Dense rows are unit length whatever ``normalize`` says. Asking for a head the model does not
        ship raises :class:`~m3e_rag.errors.InputError` naming what is missing; the heads need the torch backend
        in one process (``backend="torch"``, no ``multi_process``).
        """
        if kind not in ("document", "query"):
            raise InputError(f"kind must be 'document' or 'query', got {kind!r}.")
        for name, flag in (("sparse", sparse), ("colbert", colbert)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} must be True or False, got {flag!r}.")
        items = _validate_texts(texts, "queries" if kind == "query" else "texts")
        kinds = [name for name, flag in (("sparse", sparse), ("colbert", colbert)) if flag]
        self._check_heads(kinds)
        prompt = self.query_prompt if kind == "query" else self.document_prompt
        size = (self.query_batch_size or self.batch_size) if kind == "query" else self.batch_size
        if not items:
            empty: list[Any] = []
            return ModelOutputs(np.zeros((0, self.dim), dtype=np.float32), empty if sparse else None,
                                [] if colbert else None)
        if not kinds:
            return ModelOutputs(self._encode(items, prompt, batch_size=size, normalize=True))
        return _run(self, items, prompt, size, kinds)

    def _check_heads(self, kinds: Sequence[str]) -> None:
        """Raise InputError if a head in ``kinds`` is missing from the folder or cannot run on this backend."""
        if not kinds:
            return
        folder = self._model_folder()
        present = head_files(folder)
        missing = [kind for kind in kinds if kind not in present]
        if missing:
            lacks = " and ".join(f"a {kind} head ({HEAD_FILES[kind]})" for kind in missing)
            flags = ", ".join(f"{kind}=False" for kind in missing)
            raise InputError(
                f"Model {self.model_name!r} has no {' or '.join(missing)} output: its folder {str(folder)!r} lacks "
                f"{lacks}. Pass {flags}, or use a model that ships these heads (such as bge-m3)."
            )
        if self.backend != "torch" or self.multi_process:
            raise InputError(
                f"The {' and '.join(kinds)} output(s) of {self.model_name!r} need backend='torch' in one process; "
                f"this encoder has backend={self.backend!r}, multi_process={self.multi_process}. Use "
                "M3EEncoder(..., backend='torch') for them (dense vectors alone work on every backend)."
            )
