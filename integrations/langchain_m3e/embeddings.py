"""LangChain ``Embeddings`` over the shared :class:`m3e_rag.M3EEncoder`.

A shell: it converts arrays to lists of floats and forwards every option to the encoder, which
holds all the logic (batching, prompts, truncation accounting, dtype, backends). It accepts
``langchain_huggingface.HuggingFaceEmbeddings``' fields with the same meaning (``model_kwargs``,
``encode_kwargs``, ``query_encode_kwargs``, ``cache_folder``, ``show_progress``, ``multi_process``);
:mod:`m3e_rag.encode.hf_options` maps them, and refuses by name whatever has no meaning for M3E.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from m3e_rag.encode.encoder import ADAPTER_OPTIONS, DEFAULT_BATCH_SIZE, Backend, M3EEncoder, OnOverflow
from m3e_rag.encode.hf_options import encoder_kwargs_from_hf
from m3e_rag.errors import InputError

__all__ = ["M3EEmbeddings"]

#: Fields whose value goes to the encoder under the same name.
_DIRECT = (*ADAPTER_OPTIONS, "cache_folder", "show_progress", "multi_process", "query_prompt", "document_prompt")


def check_kwargs(owner: str, given: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """Raise InputError naming every unknown keyword and the accepted ones (shared by the adapters)."""
    names = set(accepted)
    unknown = sorted(set(given) - names)
    if unknown:
        accepted_text = ", ".join(sorted(names)) if names else "none (it takes no extra keyword arguments)"
        raise InputError(f"{owner} got unexpected (extra) argument(s) {unknown}; accepted: {accepted_text}.")


class M3EEmbeddings(BaseModel, Embeddings):
    """M3E embeddings for LangChain, a drop-in for ``HuggingFaceEmbeddings``.

    Example:
        .. code-block:: python

            from langchain_m3e import M3EEmbeddings

            emb = M3EEmbeddings(
                model_name="moka-ai/m3e-base",            # or an alias, a local folder, or $M3E_MODEL
                model_kwargs={"device": "cpu"},
                encode_kwargs={"normalize_embeddings": True},
            )
            vectors = emb.embed_documents(["大熊猫主要吃竹子。", "Pandas mostly eat bamboo."])
            query = emb.embed_query("大熊猫吃什么？")

    ``HuggingFaceEmbeddings`` fields and their meaning here:

    - ``model_kwargs``: ``device``, ``revision``, ``trust_remote_code``, ``cache_folder``, ``prompts``,
      ``default_prompt_name``, ``backend`` (torch/onnx), ``local_files_only``,
      ``model_kwargs={"torch_dtype": torch.float16}`` (CUDA only: half precision is refused on CPU,
      where it is emulated or unsupported and slower than float32).
    - ``encode_kwargs`` (documents; queries too when ``query_encode_kwargs`` is empty) and
      ``query_encode_kwargs`` (queries): ``normalize_embeddings``, ``batch_size``, ``prompt``,
      ``prompt_name``, ``show_progress_bar`` (and the defaults of ``precision``, ``convert_to_numpy``,
      ``convert_to_tensor``, ``output_value``).
    - ``show_progress``: a progress bar over batches. ``multi_process``: encode with one process per
      CUDA GPU (sentence-transformers' pool); refused on CPU, where torch already uses every core.

    Keys with no meaning for M3E (``token``, ``truncate_dim``, ``precision="int8"``...) raise
    :class:`~m3e_rag.errors.InputError` with the reason. Vectors are L2-normalized unless
    ``normalize_embeddings=False`` (sentence-transformers' own default is not to normalize).
    Every instance with the same model, device, backend and dtype shares one loaded model.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name: str = Field(default_factory=from_env("M3E_MODEL", default="m3e-base"))
    """Alias (``m3e-small``/``m3e-base``/``m3e-large``), hub id or local folder; default ``$M3E_MODEL``."""
    cache_folder: str | None = None
    """Hugging Face cache folder for downloads (as in HuggingFaceEmbeddings)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """SentenceTransformer constructor options, as in HuggingFaceEmbeddings (see the class docstring)."""
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """``encode`` options for documents (and queries when ``query_encode_kwargs`` is empty)."""
    query_encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """``encode`` options for queries; when non-empty they replace ``encode_kwargs`` for queries."""
    multi_process: bool = False
    """Encode with one worker process per CUDA GPU; refused on CPU (no gain: torch uses every core)."""
    show_progress: bool = False
    """Show a progress bar over batches."""
    device: str | None = None
    """Torch device; None picks CUDA when available, else CPU."""
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    """Texts per forward pass (batches are formed by token length)."""
    normalize: bool = True
    """L2-normalize vectors (recommended: cosine space)."""
    backend: Backend = "torch"
    """``torch`` (fp32 reference), ``onnx``, ``onnx-int8`` or ``onnx-int8-fast``."""
    on_overflow: OnOverflow = "warn"
    """Texts over the 512-token window: ``warn`` (truncate and log), ``truncate`` or ``error``."""
    trust_remote_code: bool = False
    """Let the model folder run its own code. Off unless you ask."""
    query_prompt: str | None = None
    """Text prepended to every query, e.g. BGE's ``为这个句子生成表示以用于检索相关文章：``; None: the model's own."""
    document_prompt: str | None = None
    """Text prepended to every document; None: the model's own (M3E has none)."""

    _encoder: M3EEncoder = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        check_kwargs(type(self).__name__, kwargs, type(self).model_fields)
        super().__init__(**kwargs)
        # Built here rather than in a validator so that refusals stay InputError, not pydantic errors.
        self._encoder = self._build_encoder()

    def _build_encoder(self) -> M3EEncoder:
        """Build the (cheap, lazy) encoder from the fields and the HuggingFace-style dicts."""
        options: dict[str, Any] = {name: getattr(self, name) for name in _DIRECT}
        mapped = encoder_kwargs_from_hf(
            model_kwargs=self.model_kwargs,
            encode_kwargs=self.encode_kwargs,
            query_encode_kwargs=self.query_encode_kwargs,
            owner=type(self).__name__,
        )
        for key, value in mapped.items():
            if key in self.model_fields_set and key in _DIRECT and options[key] != value:
                raise InputError(
                    f"{type(self).__name__}: {key}={options[key]!r} conflicts with {value!r} given in "
                    "model_kwargs/encode_kwargs; set it in one place."
                )
            options[key] = value
        return M3EEncoder(self.model_name, **options)

    @classmethod
    def from_encoder(cls, encoder: M3EEncoder) -> M3EEmbeddings:
        """Wrap an existing encoder: the same object does the work, so every option (prompts included) is kept."""
        opts = encoder.options()
        emb = cls(
            model_name=encoder.model_name,
            **{name: opts[name] for name in _DIRECT},
        )
        emb._encoder = encoder
        return emb

    @property
    def encoder(self) -> M3EEncoder:
        """The shared encoder doing the work."""
        return self._encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages; one list of floats per text."""
        return self._encoder.encode_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query prompt and query-side options)."""
        return self._encoder.encode_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages without blocking the event loop."""
        return (await self._encoder.aencode_documents(texts)).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one query without blocking the event loop."""
        return (await self._encoder.aencode_query(text)).tolist()
