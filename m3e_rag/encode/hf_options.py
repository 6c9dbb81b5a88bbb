"""Translate ``HuggingFaceEmbeddings``-style arguments into :class:`~m3e_rag.encode.encoder.M3EEncoder` options.

Users copy tutorials written for ``langchain_huggingface.HuggingFaceEmbeddings`` and LlamaIndex's
``HuggingFaceEmbedding``: ``model_kwargs`` (what ``SentenceTransformer(...)`` takes), ``encode_kwargs`` and
``query_encode_kwargs`` (what ``SentenceTransformer.encode(...)`` takes). Every key either maps to an
encoder option with the same meaning or is refused with the reason, so nothing is silently ignored.

Meaning, as in ``HuggingFaceEmbeddings``:

- ``encode_kwargs`` apply to documents, and to queries too when ``query_encode_kwargs`` is empty;
- a non-empty ``query_encode_kwargs`` replaces ``encode_kwargs`` for queries (keys it lacks take the
  document side's values for batch size and normalization, and the model's own query prompt).

The one deliberate difference: M3E vectors are L2-normalized unless ``normalize_embeddings=False`` is
given (sentence-transformers' default is not to normalize; the published M3E export does not
normalize either, and unnormalized vectors make Chroma's scores meaningless).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from m3e_rag.encode.options import normalize_dtype
from m3e_rag.errors import InputError

__all__ = ["encoder_kwargs_from_hf", "MODEL_KWARGS", "ENCODE_KWARGS"]

#: ``model_kwargs`` keys honoured (SentenceTransformer constructor arguments).
MODEL_KWARGS: tuple[str, ...] = (
    "device", "revision", "trust_remote_code", "cache_folder", "prompts", "default_prompt_name",
    "model_kwargs", "backend", "local_files_only", "similarity_fn_name",
)
#: ``encode_kwargs`` / ``query_encode_kwargs`` keys honoured (SentenceTransformer.encode arguments).
ENCODE_KWARGS: tuple[str, ...] = (
    "normalize_embeddings", "batch_size", "prompt", "prompt_name", "show_progress_bar",
    "precision", "convert_to_numpy", "convert_to_tensor", "output_value",
)
#: Keys inside ``model_kwargs["model_kwargs"]`` (transformers ``from_pretrained`` arguments) honoured.
_INNER_MODEL_KWARGS = ("torch_dtype", "dtype")

_REFUSED_MODEL_KWARGS = {
    "token": "m3e-rag downloads through huggingface_hub, which reads the token from $HF_TOKEN or "
    "`huggingface-cli login`; set it there",
    "use_auth_token": "m3e-rag downloads through huggingface_hub, which reads the token from $HF_TOKEN or "
    "`huggingface-cli login`; set it there",
    "truncate_dim": "the index records the model's full dimension and M3E was not trained for truncated "
    "(Matryoshka) vectors",
    "processor_kwargs": "m3e-rag counts tokens with the model's own tokenizer settings to budget chunks exactly",
    "tokenizer_kwargs": "m3e-rag counts tokens with the model's own tokenizer settings to budget chunks exactly",
    "config_kwargs": "changing the model config changes its vectors; edit the model folder instead",
    "model_card_data": "m3e-rag never writes model cards",
    "modules": "m3e-rag loads a model folder (modules.json) and checks it",
}
_REFUSED_ENCODE_KWARGS = {
    "device": "set the device once, in model_kwargs={'device': ...} (or device=...)",
    "truncate_dim": "the index records the model's full dimension and M3E was not trained for truncated vectors",
    "pool": "use multi_process=True, which keeps one pool for the process",
    "chunk_size": "use multi_process=True, which sizes the pool's chunks itself",
}


def _refuse(owner: str, where: str, key: str, reason: str, accepted: tuple[str, ...]) -> InputError:
    return InputError(f"{owner}: {where}[{key!r}] is not supported: {reason}. Accepted {where} keys: "
                      f"{', '.join(accepted)}.")


def _check_mapping(owner: str, where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{owner}: {where} must be a dict, got {type(value).__name__}.")
    return value


def _model_kwargs(owner: str, model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in model_kwargs.items():
        if key in ("device", "revision", "cache_folder"):
            out[key] = value
        elif key == "trust_remote_code":
            out["trust_remote_code"] = bool(value)
        elif key == "local_files_only":
            out["local_files_only"] = bool(value)
        elif key == "prompts":
            out["prompts"] = dict(value or {})
        elif key == "default_prompt_name":
            # sentence-transformers applies it to every encode() without a prompt: documents and queries.
            out["default_prompt_name"] = value
        elif key == "backend":
            if value not in ("torch", "onnx"):
                raise _refuse(owner, "model_kwargs", key, f"backend {value!r} is not available; m3e-rag runs "
                              "'torch', 'onnx', 'onnx-int8' or 'onnx-int8-fast' (pass backend=... for the int8 "
                              "ones)", MODEL_KWARGS)
            out["backend"] = value
        elif key == "similarity_fn_name":
            if value not in (None, "cosine"):
                raise _refuse(owner, "model_kwargs", key, f"the index always uses cosine space, not {value!r}",
                              MODEL_KWARGS)
        elif key == "model_kwargs":
            inner = _check_mapping(owner, "model_kwargs['model_kwargs']", value)
            for ikey, ivalue in inner.items():
                if ikey not in _INNER_MODEL_KWARGS:
                    raise _refuse(owner, "model_kwargs['model_kwargs']", ikey,
                                  "only the weights' dtype is supported there (other from_pretrained options "
                                  "change how the model runs in ways the index cannot record)", _INNER_MODEL_KWARGS)
                out["dtype"] = normalize_dtype(ivalue)
        elif key in _REFUSED_MODEL_KWARGS:
            raise _refuse(owner, "model_kwargs", key, _REFUSED_MODEL_KWARGS[key], MODEL_KWARGS)
        else:
            raise _refuse(owner, "model_kwargs", key, "it is not a SentenceTransformer option m3e-rag knows",
                          MODEL_KWARGS)
    return out


def _encode_kwargs(owner: str, where: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One side's encode options as {normalize, batch_size, prompt, prompt_name, show_progress}."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "normalize_embeddings":
            out["normalize"] = bool(value)
        elif key == "batch_size":
            out["batch_size"] = value
        elif key in ("prompt", "prompt_name"):
            if value is not None:
                out[key] = value
        elif key == "show_progress_bar":
            out["show_progress"] = bool(value)
        elif key == "precision":
            if value != "float32":
                raise _refuse(owner, where, key, f"precision {value!r} quantizes the output vectors, which Chroma "
                              "stores as float32 (backend='onnx-int8' quantizes the model's compute instead)",
                              ENCODE_KWARGS)
        elif key == "convert_to_numpy":
            if value is not True:
                raise _refuse(owner, where, key, "the embeddings are returned as lists of floats", ENCODE_KWARGS)
        elif key == "convert_to_tensor":
            if value is not False:
                raise _refuse(owner, where, key, "the embeddings are returned as lists of floats", ENCODE_KWARGS)
        elif key == "output_value":
            if value != "sentence_embedding":
                raise _refuse(owner, where, key, "only sentence embeddings can be stored and searched", ENCODE_KWARGS)
        elif key in _REFUSED_ENCODE_KWARGS:
            raise _refuse(owner, where, key, _REFUSED_ENCODE_KWARGS[key], ENCODE_KWARGS)
        else:
            raise _refuse(owner, where, key, "it is not a SentenceTransformer.encode option m3e-rag knows",
                          ENCODE_KWARGS)
    return out


def encoder_kwargs_from_hf(
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    encode_kwargs: Mapping[str, Any] | None = None,
    query_encode_kwargs: Mapping[str, Any] | None = None,
    owner: str = "M3EEmbeddings",
) -> dict[str, Any]:
    """Map HuggingFaceEmbeddings-style dicts to :class:`M3EEncoder` keyword arguments.

    Args:
        model_kwargs: SentenceTransformer constructor options (device, revision, trust_remote_code,
            prompts, default_prompt_name, backend, local_files_only, model_kwargs={"torch_dtype": ...}).
        encode_kwargs: encode options for documents (and queries when ``query_encode_kwargs`` is empty).
        query_encode_kwargs: encode options for queries.
        owner: the class name used in error messages.

    Returns:
        Only the options the dicts set (so callers can detect conflicts with their own fields).

    Raises:
        InputError: a key has no meaning for M3E; the message gives the reason and the accepted keys.
    """
    model = _model_kwargs(owner, _check_mapping(owner, "model_kwargs", model_kwargs))
    docs = _encode_kwargs(owner, "encode_kwargs", _check_mapping(owner, "encode_kwargs", encode_kwargs))
    query_given = _check_mapping(owner, "query_encode_kwargs", query_encode_kwargs)
    queries = _encode_kwargs(owner, "query_encode_kwargs", query_given) if query_given else dict(docs)

    out: dict[str, Any] = {k: v for k, v in model.items() if k != "default_prompt_name"}
    default_name = model.get("default_prompt_name")
    if "normalize" in docs:
        out["normalize"] = docs["normalize"]
    if "batch_size" in docs:
        out["batch_size"] = docs["batch_size"]
    if "normalize" in queries:
        out["query_normalize"] = queries["normalize"]
    if "batch_size" in queries:
        out["query_batch_size"] = queries["batch_size"]
    if docs.get("show_progress") or queries.get("show_progress"):
        out["show_progress"] = True
    for side, opts in (("document", docs), ("query", queries)):
        if "prompt" in opts:  # sentence-transformers: prompt wins over prompt_name
            out[f"{side}_prompt"] = opts["prompt"]
        elif "prompt_name" in opts:
            out[f"{side}_prompt_name"] = opts["prompt_name"]
        elif default_name is not None:
            out[f"{side}_prompt_name"] = default_name
    return out
