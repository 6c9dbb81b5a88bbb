"""Find a model's files: alias, hub id (optionally through a mirror) or local folder.

Kept apart from the encoder so that resolution fails fast, before torch or
sentence-transformers are even imported: with no network a hub id fails in seconds with a
message naming the three fixes, instead of minutes of retries inside huggingface_hub.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from m3e_rag.encode.registry import DEFAULT_MODEL, resolve_spec
from m3e_rag.errors import ModelLoadError

__all__ = ["resolve_model_name", "locate_model", "is_m3e"]

logger = logging.getLogger(__name__)

_TRUTHY = {"1", "true", "yes", "on"}
#: How an index records embeddings m3e-rag did not compute (see :mod:`m3e_rag.encode.external`).
EXTERNAL_PREFIXES = ("langchain:", "llamaindex:", "external:")
_DEFAULT_ENDPOINT = "https://huggingface.co"
#: How long the reachability probe of the hub (or mirror) may take before we give up.
PROBE_TIMEOUT_S = 5.0
#: Weight formats sentence-transformers never reads for a torch model; skipping them saves gigabytes.
_IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite"]


def resolve_model_name(model_name: str | None) -> str:
    """Return the model name to use: the argument, else ``$M3E_MODEL``, else ``m3e-base``.

    Aliases (``m3e-small``) become hub ids (``moka-ai/m3e-small``); other names are kept as given.
    """
    name = model_name if model_name is not None else os.environ.get("M3E_MODEL") or DEFAULT_MODEL
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(
            f"model_name must be a non-empty string (an alias like 'm3e-base', a hub id or a folder), "
            f"got {name!r}"
        )
    name = name.strip()
    folder = Path(name).expanduser()
    if folder.is_dir():
        # One folder, one name: "./models/m3e-base" and its absolute path must open the same index.
        return str(folder.resolve())
    spec = resolve_spec(name)
    if spec is not None and not folder.exists():
        return spec.hub_id
    return name


def is_m3e(name: str) -> bool:
    """Whether a resolved name or folder looks like one of the M3E models (for the licence note)."""
    spec = resolve_spec(name)
    if spec is not None:
        return spec.family == "m3e"
    return "m3e" in Path(name).name.lower()


def _fixes(repo_id: str) -> str:
    return (
        "Fix it one of three ways: (1) use a mirror, e.g. export HF_ENDPOINT=https://hf-mirror.com "
        "(and unset HF_HUB_OFFLINE); (2) pass a local folder, e.g. "
        f"model_name='/path/to/{repo_id.split('/')[-1]}' (a sentence-transformers folder with modules.json); "
        f"(3) pre-download it where there is network: huggingface-cli download {repo_id}, then copy the "
        "Hugging Face cache (~/.cache/huggingface) to this machine."
    )


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUTHY for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def _reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Return None when a TCP connection to the endpoint opens in time, else the reason it did not."""
    parsed = urlparse(endpoint)
    host = parsed.hostname
    if not host:
        return f"HF_ENDPOINT={endpoint!r} is not a URL"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def check_model_folder(path: Path) -> Path:
    """Refuse a folder that sentence-transformers would load wrongly or not at all."""
    if not path.is_dir():
        raise ModelLoadError(f"Model path {str(path)!r} is not a folder; pass the folder that holds modules.json.")
    if not (path / "modules.json").is_file():
        raise ModelLoadError(
            f"Model folder {str(path)!r} has no modules.json, so sentence-transformers would silently invent "
            "MEAN pooling and give wrong vectors; copy the complete model folder (modules.json, "
            "1_Pooling/config.json, config.json, tokenizer files and weights)."
        )
    return path


def is_external_identity(name: str) -> bool:
    """Whether ``name`` is an external embeddings' identity (:func:`m3e_rag.encode.external.external_identity`)."""
    return name.startswith(EXTERNAL_PREFIXES)


def locate_model(
    name: str, cache_folder: str | None = None, revision: str | None = None, *, local_files_only: bool = False,
    check: Callable[[Path], Path] = check_model_folder,
) -> Path:
    """Return a local folder holding the model named by ``name`` (a resolved name).

    Order: an existing local folder; the Hugging Face cache; a download from ``$HF_ENDPOINT``
    (default the Hub). Offline or unreachable, it raises :class:`ModelLoadError` within seconds.
    ``check`` vets the folder found (default: a sentence-transformers folder with modules.json).
    """
    local = Path(name).expanduser()
    if local.exists():
        return check(local)
    if is_external_identity(name):
        raise ModelLoadError(
            f"{name!r} names framework embeddings (recorded by an index built through LangChain or LlamaIndex with "
            "embeddings other than M3E), not a model m3e-rag can load. Open that index from Python with the same "
            "embeddings object: langchain_m3e.M3EVectorStore(embedding_function=...) or "
            "llama_index.vector_stores.m3e.M3EVectorStore(embed_model=...)."
        )
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if looks_like_path:
        raise ModelLoadError(
            f"Model folder {name!r} does not exist; check the path, or pass an alias like 'm3e-base' or a hub id."
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = snapshot_download(name, cache_dir=cache_folder, revision=revision, local_files_only=True)
        return check(Path(cached))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        pass
    if local_files_only:
        raise ModelLoadError(
            f"Model {name!r} is not in the local Hugging Face cache and local_files_only=True forbids downloading it. "
            + _fixes(name)
        )
    if _offline():
        raise ModelLoadError(
            f"Model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. "
            + _fixes(name)
        )
    endpoint = _endpoint()
    problem = _reachable(endpoint)
    if problem is not None:
        raise ModelLoadError(f"Cannot reach {endpoint} to download {name!r} ({problem}). " + _fixes(name))
    logger.info("Downloading %s from %s", name, endpoint)
    try:
        path = snapshot_download(
            name, cache_dir=cache_folder, revision=revision, ignore_patterns=_IGNORE_PATTERNS, etag_timeout=10
        )
    except Exception as exc:  # huggingface_hub raises many types; all mean the same to the user
        raise ModelLoadError(f"Downloading {name!r} from {endpoint} failed ({exc}). " + _fixes(name)) from exc
    return check(Path(path))
