"""``M3ETextSplitter``: m3e-rag's Chinese-aware chunker as a LangChain ``TextSplitter``.

A shell over :class:`m3e_rag.ingest.chunking.Chunker` (sentence ends 。！？；… and line breaks, whole-sentence
overlap), budgeted in the embedding model's own tokens, so every chunk fits M3E's 512-token window.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document

from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError
from m3e_rag.ingest.chunking import Chunker

from .embeddings import M3EEmbeddings, check_kwargs

try:
    from langchain_text_splitters import TextSplitter
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "M3ETextSplitter needs langchain-text-splitters, which is not installed; run: pip install 'm3e-rag[langchain]'"
    ) from exc

__all__ = ["M3ETextSplitter"]

_REFUSED = {
    "length_function": "chunks are measured in the embedding model's own tokens, so they always fit its window",
    "keep_separator": "the chunker cuts after sentence ends and keeps the punctuation with its sentence",
    "strip_whitespace": "every chunk is an exact slice of the text with surrounding whitespace trimmed",
}


class M3ETextSplitter(TextSplitter):
    """Split text with m3e-rag's Chinese-aware chunker, ``chunk_size`` and ``chunk_overlap`` in MODEL TOKENS.

    Args:
        chunk_size: most model tokens per chunk (special tokens and the document prompt not counted;
            8 to the model's window minus 2 and the prompt, 510 for M3E).
        chunk_overlap: most tokens of whole trailing sentences repeated at the start of the next chunk
            (less than half of ``chunk_size``).
        model_name: the model whose tokenizer budgets the chunks (default ``$M3E_MODEL``).
        embeddings: an :class:`M3EEmbeddings` whose model to use (instead of ``model_name``).
        encoder: an :class:`m3e_rag.M3EEncoder` to use (instead of ``model_name``).
        add_start_index: record ``metadata["start_index"]``, the chunk's exact character offset.

    Example:
        .. code-block:: python

            from langchain_m3e import M3ETextSplitter

            splitter = M3ETextSplitter(chunk_size=256, chunk_overlap=32, add_start_index=True)
            docs = splitter.split_documents(loaded_docs)
    """

    def __init__(
        self,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        *,
        model_name: str | None = None,
        embeddings: M3EEmbeddings | None = None,
        encoder: M3EEncoder | None = None,
        add_start_index: bool = False,
        **kwargs: Any,
    ) -> None:
        for name, reason in _REFUSED.items():
            if name in kwargs:
                value = kwargs.pop(name)
                default = {"length_function": len, "keep_separator": False, "strip_whitespace": True}[name]
                if value is not default and value != default:
                    raise InputError(f"M3ETextSplitter: {name}={value!r} is not supported: {reason}.")
        check_kwargs("M3ETextSplitter", kwargs, ())
        given = [n for n, v in (("model_name", model_name), ("embeddings", embeddings), ("encoder", encoder)) if v]
        if len(given) > 1:
            raise InputError(f"M3ETextSplitter: give one of model_name, embeddings and encoder; got {given}.")
        if embeddings is not None and not isinstance(embeddings, M3EEmbeddings):
            raise InputError(f"M3ETextSplitter: embeddings must be M3EEmbeddings, got {type(embeddings).__name__}.")
        super().__init__(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=add_start_index)
        self.encoder = encoder or (embeddings.encoder if embeddings is not None else M3EEncoder(model_name))
        self._chunker: Chunker | None = None

    @property
    def chunker(self) -> Chunker:
        """The engine's chunker, built on first use with the model's tokenizer (loads the model)."""
        if self._chunker is None:
            prompt = self.encoder.document_prompt
            prompt_tokens = self.encoder.count_tokens([prompt])[0] - 2 if prompt else 0
            room = self.encoder.max_seq_length - 2 - max(0, prompt_tokens)
            if self._chunk_size > room:
                raise InputError(
                    f"chunk_size={self._chunk_size} tokens does not fit the model: its window leaves room for "
                    f"{room} tokens per chunk (after [CLS], [SEP] and the document prompt); pass chunk_size<={room}."
                )
            self._chunker = Chunker(self.encoder.tokenizer, max_tokens=self._chunk_size,
                                    overlap_tokens=self._chunk_overlap)
        return self._chunker

    def split_text(self, text: str) -> list[str]:
        """Split one text into chunk texts (each an exact slice of ``text``)."""
        return [chunk.text for chunk in self.chunker.split_text(text)]

    def create_documents(self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None) -> list[Document]:
        """One Document per chunk; with ``add_start_index`` its exact offset in the text (not a search)."""
        if metadatas is not None and len(metadatas) != len(texts):
            raise InputError(f"Got {len(metadatas)} metadatas for {len(texts)} texts; give one per text.")
        docs = []
        for i, text in enumerate(texts):
            for chunk in self.chunker.split_text(text):
                meta = copy.deepcopy(metadatas[i]) if metadatas else {}
                if self._add_start_index:
                    meta["start_index"] = chunk.start
                docs.append(Document(page_content=chunk.text, metadata=meta))
        return docs

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """Split documents (LangChain's document-transformer interface); no options are accepted."""
        check_kwargs("M3ETextSplitter.transform_documents", kwargs, ())
        return self.split_documents(list(documents))
