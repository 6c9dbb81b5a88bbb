"""Second-stage rerankers: cross-encoders by name or folder, callables, the facts of known ones, reranking.

A reranker re-scores the first stage's top candidates of one query, reading query and passage
together (a cross-encoder), which a bi-encoder such as M3E cannot. Hybrid search finds the
passages; the reranker puts the best one first. :func:`load_reranker` turns what a user passes as
``reranker=`` (or ``--reranker``) into an object with a ``predict(pairs)`` method:

- an alias of :data:`RERANKERS` (``"bge-reranker-base"``), a hub id (``"BAAI/bge-reranker-large"``)
  or a local folder of a sentence-transformers ``CrossEncoder`` (a folder with ``config.json``): a
  :class:`CrossEncoderReranker`, found like the encoder's model (local folder, the Hugging Face
  cache, then a download from ``$HF_ENDPOINT``; offline, a :class:`~m3e_rag.errors.ModelLoadError`
  naming the fixes within seconds). Loading happens on first use (or :meth:`CrossEncoderReranker.load`)
  and is shared by every reranker of the same name and options in the process. Model code is never
  run unless ``trust_remote_code=True``;
- any callable ``fn(query, texts) -> scores`` (one score per text, higher is better): a
  :class:`CallableReranker`;
- an object that already has ``predict`` (a ``CrossEncoder`` you built): returned as is.

:func:`rerank` applies one to a query's results (what ``RAGPipeline.search(reranker=...)`` runs).

Facts as data: :data:`RERANKERS` describes the cross-encoders Chinese RAG stacks use, without
loading anything.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from m3e_rag.errors import InputError, ModelLoadError
from m3e_rag.types import RetrievedChunk

__all__ = [
    "Reranker",
    "rerank",
    "RerankerSpec",
    "RERANKERS",
    "RerankerLike",
    "CrossEncoderReranker",
    "CallableReranker",
    "load_reranker",
    "resolve_reranker_name",
]

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    """Anything with a sentence-transformers ``CrossEncoder``-like ``predict`` method."""

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> Any:
        """Score each (query, passage) pair; higher is more relevant."""
        ...


def rerank(
    reranker: Reranker, query: str, results: Sequence[RetrievedChunk], batch_size: int = 32
) -> list[RetrievedChunk]:
    """Re-order results by a cross-encoder's score (stored as the new score; the old one is kept).

    The previous score is kept in metadata as ``retrieval_score``.
    """
    if not results:
        return []
    pairs = [(query, r.text) for r in results]
    scores = np.asarray(reranker.predict(pairs, batch_size=batch_size, show_progress_bar=False), dtype=np.float64)
    if scores.shape[0] != len(results):
        raise InputError(
            f"The reranker returned {scores.shape[0]} scores for {len(results)} passages; pass a model whose "
            "predict() scores each (query, passage) pair, such as a sentence_transformers.CrossEncoder."
        )
    order = np.argsort(-scores.reshape(len(results), -1)[:, 0], kind="stable")
    out = []
    for i in order:
        r = results[int(i)]
        meta = {**r.metadata, "retrieval_score": r.score}
        out.append(RetrievedChunk(r.id, r.text, float(scores.reshape(len(results), -1)[int(i), 0]), meta))
    return out


#: What ``reranker=`` accepts: a name or folder, a ``(query, texts) -> scores`` callable, or an
#: object with a CrossEncoder-like ``predict``.
RerankerLike = str | Path | Reranker | Callable[[str, list[str]], Sequence[float]]


@dataclass(frozen=True)
class RerankerSpec:
    """One published cross-encoder, described without loading it.

    Attributes:
        alias: short name accepted wherever a reranker is (``"bge-reranker-base"``).
        hub_id: Hugging Face Hub repository id.
        max_tokens: window for query + passage together, special tokens included.
        languages: languages it was trained for.
        params_millions: approximate parameter count.
        licence: licence of the weights as the model card states it.
        notes: one line a chooser should know.
    """

    alias: str
    hub_id: str
    max_tokens: int
    languages: tuple[str, ...]
    params_millions: int
    licence: str
    notes: str = ""

    @property
    def model_card(self) -> str:
        """Address of the model card."""
        return f"https://huggingface.co/{self.hub_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts, with the model card added."""
        data = asdict(self)
        data["languages"] = list(self.languages)
        data["model_card"] = self.model_card
        return data


RERANKERS: dict[str, RerankerSpec] = {
    spec.alias: spec
    for spec in (
        RerankerSpec(
            "bge-reranker-base", "BAAI/bge-reranker-base", 512, ("zh", "en"), 278, "MIT",
            notes="XLM-RoBERTa-base cross-encoder; the common choice beside M3E/BGE in Chinese RAG stacks",
        ),
        RerankerSpec(
            "bge-reranker-large", "BAAI/bge-reranker-large", 512, ("zh", "en"), 560, "MIT",
            notes="XLM-RoBERTa-large cross-encoder: better, about 3x slower than -base on CPU",
        ),
        RerankerSpec(
            "bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", 8192, ("multilingual",), 568, "Apache-2.0",
            notes="multilingual (bge-m3 backbone); long inputs cost quadratic attention, keep passages short",
        ),
    )
}


def resolve_reranker_name(name: str) -> str:
    """An alias of :data:`RERANKERS` becomes its hub id (unless a folder of that name exists); else as given."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(
            f"reranker must be a non-empty name (e.g. 'bge-reranker-base'), a folder or a callable, got {name!r}."
        )
    name = name.strip()
    spec = RERANKERS.get(name) or RERANKERS.get(name.lower())
    if spec is not None and not Path(name).expanduser().exists():
        return spec.hub_id
    return name


def _check_cross_encoder_folder(path: Path) -> Path:
    """Refuse a folder that cannot hold a transformers / sentence-transformers cross-encoder."""
    if not path.is_dir():
        raise ModelLoadError(
            f"Reranker path {str(path)!r} is not a folder; pass the folder of a CrossEncoder (with config.json)."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"Reranker folder {str(path)!r} has no config.json, so it is not a cross-encoder model folder; "
            "pass the complete folder (config.json, tokenizer files and weights), e.g. one saved by "
            "CrossEncoder.save()."
        )
    return path


_SHARED: dict[tuple[str, str | None, int | None, bool], Any] = {}
_SHARED_LOCK = threading.Lock()


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` named by alias, hub id or folder, loaded on first use.

    Construction is cheap (nothing is read). The model is loaded by :meth:`load` or the first
    :meth:`predict`, once per process for the same name, device, ``max_length`` and
    ``trust_remote_code``, and shared by every reranker that asks for it.

    Args:
        name: an alias of :data:`RERANKERS`, a hub id or a local folder.
        device: torch device (default: sentence-transformers' choice).
        max_length: token window for query + passage (default: the model's).
        trust_remote_code: allow the model folder to run its own code. Off unless you ask.
        cache_folder: Hugging Face cache folder for downloads.
        revision: hub revision to load.
        local_files_only: never download; only a local folder or the cache.
    """

    def __init__(
        self,
        name: str | Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 8):
            raise InputError(f"max_length must be an integer >= 8 or None, got {max_length!r}.")
        self.name = resolve_reranker_name(str(name))
        self.device = device
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.cache_folder = cache_folder
        self.revision = revision
        self.local_files_only = local_files_only

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.name!r})"

    @property
    def spec(self) -> RerankerSpec | None:
        """The registry entry of this reranker, if it has one."""
        for spec in RERANKERS.values():
            if self.name.lower() in (spec.hub_id.lower(), spec.alias.lower()):
                return spec
        return None

    def _key(self) -> tuple[str, str | None, int | None, bool]:
        return (self.name, self.device, self.max_length, self.trust_remote_code)

    @property
    def is_loaded(self) -> bool:
        """Whether the model is already in memory (in this process)."""
        return self._key() in _SHARED

    def load(self) -> Any:
        """Load (once per process) and return the underlying ``CrossEncoder``.

        Raises:
            ModelLoadError: the model cannot be found (offline, no such folder) or loaded.
        """
        key = self._key()
        model = _SHARED.get(key)
        if model is not None:
            return model
        with _SHARED_LOCK:
            model = _SHARED.get(key)
            if model is None:
                model = self._load()
                _SHARED[key] = model
        return model

    def _load(self) -> Any:
        from m3e_rag.encode.loading import locate_model

        try:
            path = locate_model(
                self.name, self.cache_folder, self.revision, local_files_only=self.local_files_only,
                check=_check_cross_encoder_folder,
            )
        except ModelLoadError as exc:
            raise ModelLoadError(f"Cannot load reranker {self.name!r}: {exc}") from exc
        from sentence_transformers import CrossEncoder

        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code, "local_files_only": True}
        if self.device is not None:
            kwargs["device"] = self.device
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        try:
            model = CrossEncoder(str(path), **kwargs)
        except Exception as exc:  # transformers raises many types for a broken folder
            raise ModelLoadError(
                f"Cannot load reranker {self.name!r} from {str(path)!r} ({type(exc).__name__}: {exc}); pass a "
                "CrossEncoder folder (config.json, tokenizer, weights) or a hub id such as 'BAAI/bge-reranker-base'"
                + ("" if self.trust_remote_code else ", or trust_remote_code=True if its card asks for it")
                + "."
            ) from exc
        labels = getattr(getattr(model, "config", None), "num_labels", 1)
        if labels not in (None, 1):
            logger.warning("reranker %s has %s output labels; ranking by the first", self.name, labels)
        logger.info("loaded reranker %s from %s", self.name, path)
        return model

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        """Score each (query, passage) pair with the cross-encoder; higher is more relevant."""
        return np.asarray(self.load().predict(sentences, **kwargs), dtype=np.float64)


class CallableReranker:
    """Wrap ``fn(query, texts) -> scores`` as a reranker (one call per distinct query of a batch).

    Args:
        fn: returns one finite score per text, higher more relevant (a list, tuple or array).
        name: a label for logs and ``repr``.
    """

    def __init__(self, fn: Callable[[str, list[str]], Sequence[float]], name: str | None = None) -> None:
        if not callable(fn):
            raise InputError(f"CallableReranker needs a callable fn(query, texts) -> scores, got {fn!r}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __repr__(self) -> str:
        return f"CallableReranker({self.name!r})"

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        """Score (query, passage) pairs by calling ``fn`` once per query (batch options are ignored)."""
        out = np.empty(len(sentences), dtype=np.float64)
        groups: dict[str, list[int]] = {}
        for i, (query, _text) in enumerate(sentences):
            groups.setdefault(query, []).append(i)
        for query, rows in groups.items():
            texts = [sentences[i][1] for i in rows]
            scores = np.asarray(self.fn(query, texts), dtype=np.float64).reshape(-1)
            if scores.shape[0] != len(texts):
                raise InputError(
                    f"reranker {self.name!r} returned {scores.shape[0]} scores for {len(texts)} texts; it must "
                    "return one score per text."
                )
            if not np.isfinite(scores).all():
                raise InputError(f"reranker {self.name!r} returned a score that is not a finite number.")
            out[rows] = scores
        return out


def _takes_two_args(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind("query", ["text"])
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): let the first call tell
        return True
    return True


def load_reranker(
    spec: RerankerLike,
    *,
    device: str | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> Reranker:
    """Turn what a user passes as ``reranker=`` into a reranker (cheap: nothing loads yet).

    Args:
        spec: an alias of :data:`RERANKERS`, a hub id, a CrossEncoder folder, an object with
            ``predict(pairs)``, or a callable ``fn(query, texts) -> scores``.
        device: torch device (name or folder only, as every option below).
        max_length: token window for query + passage (default: the model's).
        trust_remote_code: allow the model folder to run its own code.
        cache_folder: Hugging Face cache folder for downloads.
        revision: hub revision to load.
        local_files_only: never download.

    Returns:
        An object with ``predict(pairs, **kwargs) -> scores``.

    Raises:
        InputError: ``spec`` is none of the above, or options were given with an object or callable
            (they would be ignored).
    """
    options = {"device": device, "max_length": max_length, "cache_folder": cache_folder, "revision": revision}
    given = [k for k, v in options.items() if v is not None]
    given += [k for k, v in (("trust_remote_code", trust_remote_code), ("local_files_only", local_files_only)) if v]
    if isinstance(spec, (str, Path)):
        return CrossEncoderReranker(
            spec, device=device, max_length=max_length, trust_remote_code=trust_remote_code,
            cache_folder=cache_folder, revision=revision, local_files_only=local_files_only,
        )
    if given:
        raise InputError(
            f"load_reranker options {', '.join(given)} apply to a reranker name or folder only; "
            f"got a {type(spec).__name__}. Configure that object yourself."
        )
    if callable(getattr(spec, "predict", None)):
        return spec  # type: ignore[return-value]
    if callable(spec):
        if not _takes_two_args(spec):
            raise InputError(
                "a reranker callable must take (query, texts) and return one score per text; "
                f"{getattr(spec, '__name__', spec)!r} does not accept two arguments."
            )
        return CallableReranker(spec)
    raise InputError(
        f"reranker must be a name (e.g. {', '.join(RERANKERS)}), a hub id, a CrossEncoder folder, an object with "
        f"predict(), or a callable (query, texts) -> scores; got {type(spec).__name__}."
    )

