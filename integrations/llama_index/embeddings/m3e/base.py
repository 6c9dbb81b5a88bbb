"""LlamaIndex ``BaseEmbedding`` over the shared :class:`m3e_rag.M3EEncoder`.

A shell: it forwards to the encoder and converts arrays to lists. ``embed_batch_size`` is how many
texts LlamaIndex hands over per call (large, so the encoder can sort a whole group by token length);
``batch_size`` is the encoder's forward-pass batch.

It takes the arguments a ``HuggingFaceEmbedding`` user types (``model_name``, ``query_instruction``,
``text_instruction``, ``normalize``, ``cache_folder``, ``trust_remote_code``, ``device``,
``embed_batch_size``, ``show_progress_bar``, ``parallel_process`` (CUDA), ``max_length`` equal to the
model's window, ``revision``) with the same meaning. Those that have no meaning for M3E (``pooling``,
``tokenizer_name``, ``target_devices``...) and any unknown name raise
:class:`~m3e_rag.errors.InputError` saying why.
"""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from m3e_rag.encode.encoder import ADAPTER_OPTIONS, DEFAULT_BATCH_SIZE, Backend, M3EEncoder, OnOverflow
from m3e_rag.encode.registry import DEFAULT_MODEL
from m3e_rag.errors import InputError, refuse_unknown

__all__ = ["M3EEmbedding"]

#: HuggingFaceEmbedding arguments that have no meaning here, and why.
_REFUSED: dict[str, str] = {
    "pooling": "M3E models are mean-pooled by their own sentence-transformers config; the pooling is not a choice",
    "tokenizer_name": "the model's own tokenizer is always used, so token budgets stay exact",
    "tokenizer": "the model's own tokenizer is always used, so token budgets stay exact",
    "model": "pass model_name (alias, hub id or folder); the model is loaded once and shared by every adapter",
    "target_devices": "parallel_process=True starts one worker per CUDA device (all of them); to use fewer, "
    "set CUDA_VISIBLE_DEVICES",
    "model_kwargs": "pass device=, backend=, trust_remote_code=, revision=, cache_folder= directly",
    "prompts": "use query_instruction= / text_instruction= (or query_prompt= / document_prompt=)",
    "query_encode_kwargs": "use query_instruction= and the named fields",
    "encode_kwargs": "use normalize=, batch_size=, show_progress_bar= and the named fields",
}
#: LlamaIndex's instruction names -> m3e-rag's prompt names (both are accepted; they must agree).
_ALIASES = {"query_instruction": "query_prompt", "text_instruction": "document_prompt"}


class M3EEmbedding(BaseEmbedding):
    """M3E embeddings for LlamaIndex.

    Example:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            from llama_index.embeddings.m3e import M3EEmbedding

            Settings.embed_model = M3EEmbedding(model_name="m3e-base")
            index = VectorStoreIndex.from_documents(documents)

    ``query_instruction`` / ``text_instruction`` (LlamaIndex's names) and ``query_prompt`` /
    ``document_prompt`` (m3e-rag's) set the text prepended to queries / passages, e.g. BGE-zh's
    ``"为这个句子生成表示以用于检索相关文章："``. None keeps the model's own prompts (M3E has none).
    """

    model_name: str = Field(
        default_factory=lambda: os.environ.get("M3E_MODEL") or DEFAULT_MODEL,
        description="Alias (m3e-small/m3e-base/m3e-large), hub id or local folder; default $M3E_MODEL.",
    )
    embed_batch_size: int = Field(default=256, gt=0, le=2048, description="Texts handed to the encoder per call.")
    device: str | None = Field(default=None, description="Torch device; None picks CUDA when available.")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalize vectors.")
    backend: Backend = Field(default="torch", description="torch (fp32), onnx, onnx-int8 or onnx-int8-fast.")
    on_overflow: OnOverflow = Field(default="warn", description="warn, truncate or error on over-long texts.")
    trust_remote_code: bool = Field(default=False, description="Let the model folder run its own code.")
    query_prompt: str | None = Field(
        default=None, description="Text prepended to queries (LlamaIndex: query_instruction); None: the model's."
    )
    document_prompt: str | None = Field(
        default=None, description="Text prepended to passages (LlamaIndex: text_instruction); None: the model's."
    )
    cache_folder: str | None = Field(default=None, description="Hugging Face cache folder for downloads.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) to load.")
    max_length: int | None = Field(
        default=None, description="The model's token window; only the window itself is accepted (512 for M3E)."
    )
    show_progress_bar: bool = Field(default=False, description="Show a progress bar over embedding batches.")
    parallel_process: bool = Field(
        default=False, description="Encode in one worker process per CUDA GPU (refused on CPU, with the reason)."
    )

    _encoder: M3EEncoder = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        accepted = set(type(self).model_fields) | set(_ALIASES)
        refuse_unknown("M3EEmbedding()", kwargs, accepted, _REFUSED)
        for llama_name, ours in _ALIASES.items():
            if llama_name in kwargs:
                value = kwargs.pop(llama_name)
                if kwargs.get(ours) is not None and kwargs[ours] != value:
                    raise InputError(
                        f"M3EEmbedding got {llama_name}={value!r} and {ours}={kwargs[ours]!r}; they name the same "
                        "prompt, so give one."
                    )
                kwargs[ours] = value
        super().__init__(**kwargs)
        self._encoder = M3EEncoder(
            self.model_name,
            **{name: getattr(self, name) for name in ADAPTER_OPTIONS},
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
            cache_folder=self.cache_folder,
            revision=self.revision,
            multi_process=self.parallel_process,
        )
        if self.max_length is not None and self.max_length != self._encoder.max_seq_length:
            raise InputError(
                f"M3EEmbedding(max_length={self.max_length}) cannot change the window of {self.model_name!r}, which "
                f"reads {self._encoder.max_seq_length} tokens; drop max_length, split long texts with "
                "M3ENodeParser, and choose what happens to over-long ones with on_overflow=."
            )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialization."""
        return "M3EEmbedding"

    @property
    def query_instruction(self) -> str | None:
        """LlamaIndex's name for :attr:`query_prompt`."""
        return self.query_prompt

    @property
    def text_instruction(self) -> str | None:
        """LlamaIndex's name for :attr:`document_prompt`."""
        return self.document_prompt

    @property
    def encoder(self) -> M3EEncoder:
        """The shared encoder doing the work."""
        return self._encoder

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed passages in groups of ``embed_batch_size`` (progress bar: this flag or ``show_progress_bar``)."""
        refuse_unknown("M3EEmbedding.get_text_embedding_batch()", kwargs, ["show_progress"])
        return super().get_text_embedding_batch(texts, show_progress=show_progress or self.show_progress_bar)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Async :meth:`get_text_embedding_batch`."""
        refuse_unknown("M3EEmbedding.aget_text_embedding_batch()", kwargs, ["show_progress"])
        return await super().aget_text_embedding_batch(texts, show_progress=show_progress or self.show_progress_bar)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.encode_query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._encoder.aencode_query(query)).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.encode_documents([text])[0].tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._encoder.aencode_documents([text]))[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.encode_documents(texts).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return (await self._encoder.aencode_documents(texts)).tolist()
