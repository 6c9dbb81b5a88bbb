"""m3e-rag's file loaders as a LlamaIndex reader: GBK / GB18030 / Big5 files decode correctly.

``SimpleDirectoryReader`` reads text as UTF-8 and garbles (or drops) GBK-encoded Chinese files;
``M3EReader`` uses :func:`m3e_rag.ingest.loaders.load_paths`, which detects each file's encoding, and the
same formats as ``m3e-rag ingest`` (txt, md, html, pdf, docx, json, jsonl, csv).

Each document's ``doc_id`` is its file's absolute path (with ``#page=N`` / ``#record=N`` / ``#row=N``
when a file yields several), so re-loading a file gives the same ids and
``index.delete_ref_doc(path)`` / ``M3EVectorStore.delete(path)`` remove it. Metadata: the loader's
(``source``, ``file_name``, ``file_type``, ``encoding``, page/record/row) plus ``file_path`` (LlamaIndex's
name); the bookkeeping keys are kept out of the text the embedder and the LLM see.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from m3e_rag.errors import InputError, refuse_unknown
from m3e_rag.ingest.loaders import DEFAULT_MAX_FILE_BYTES, SkippedFile, load_paths

__all__ = ["M3EReader"]

logger = logging.getLogger(__name__)

_PARTS = ("page", "record", "row")
_NOT_EMBEDDED = ["source", "file_path", "file_name", "file_type", "encoding", "decode_errors", *_PARTS]
_NOT_FOR_LLM = ["source", "file_type", "encoding", "decode_errors"]
_REFUSED = {
    "input_dir": "pass folders and files to load_data(paths)",
    "input_files": "pass folders and files to load_data(paths)",
    "recursive": "folders are always walked recursively; narrow them with include=/exclude= patterns",
    "required_exts": "use include=['*.txt', '*.md'] (glob patterns)",
    "exclude_hidden": "hidden files and folders (names starting with '.') are always left out",
    "encoding": "each file's encoding is detected (UTF-8, GB18030/GBK, Big5, BOMs); a fixed one would garble "
    "the others",
    "errors": "undecodable bytes are replaced and reported (decode_errors in the metadata)",
    "file_extractor": "m3e-rag's loaders handle txt, md, html, pdf, docx, json, jsonl and csv",
    "filename_as_id": "doc ids are always the file's absolute path",
    "num_files_limit": "filter with include=/exclude= patterns",
    "file_metadata": "pass extra_info= to load_data() for metadata added to every document",
}


class M3EReader(BaseReader):
    """Read files and folders with m3e-rag's encoding-aware loaders.

    Args:
        include: glob patterns a file must match (``*.md``, ``docs/**``); None: all files.
        exclude: glob patterns that leave files (and folders) out.
        text_field: the key holding the text in JSON / JSONL records.
        text_column: the column holding the text in CSV / TSV files.
        follow_symlinks: follow links whose target lies outside the given paths.
        max_file_bytes: skip (and report) larger files; None for no limit.
        raise_on_error: raise when a file cannot be loaded (default: log a warning per file and
            keep them in :attr:`skipped`).

    Example:
        .. code-block:: python

            from llama_index.readers.m3e import M3EReader

            documents = M3EReader(include=["*.txt", "*.md"]).load_data("./docs")
    """

    def __init__(
        self,
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        text_field: str = "text",
        text_column: str = "text",
        follow_symlinks: bool = False,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        raise_on_error: bool = False,
        **kwargs: Any,
    ) -> None:
        accepted = ("include", "exclude", "text_field", "text_column", "follow_symlinks", "max_file_bytes",
                    "raise_on_error")
        refuse_unknown("M3EReader()", kwargs, accepted, _REFUSED)
        self.include = include
        self.exclude = exclude
        self.text_field = text_field
        self.text_column = text_column
        self.follow_symlinks = follow_symlinks
        self.max_file_bytes = max_file_bytes
        self.raise_on_error = raise_on_error
        #: Files (or records) the last :meth:`load_data` could not load, with the reason.
        self.skipped: list[SkippedFile] = []

    def load_data(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: Mapping[str, Any] | None = None,
        **load_kwargs: Any,
    ) -> list[Document]:
        """Load files and folders (walked recursively) into LlamaIndex documents.

        Args:
            paths: a file, a folder, or a list of them.
            extra_info: metadata added to every document (values str, int, float or bool).
            **load_kwargs: refused by name (SimpleDirectoryReader's options say where they went).
        """
        refuse_unknown("M3EReader.load_data()", load_kwargs, ["paths", "extra_info"], _REFUSED)
        path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        result = load_paths(
            path_list, include=self.include, exclude=self.exclude, text_field=self.text_field,
            text_column=self.text_column, follow_symlinks=self.follow_symlinks, max_file_bytes=self.max_file_bytes,
        )
        self.skipped = list(result.skipped)
        for skipped in result.skipped:
            logger.warning("M3EReader skipped %s: %s", skipped.path, skipped.reason)
        if self.raise_on_error and result.skipped:
            first = result.skipped[0]
            raise InputError(
                f"M3EReader could not load {len(result.skipped)} file(s), first {first.path}: {first.reason}. "
                "Pass raise_on_error=False to load the rest and read reader.skipped."
            )
        extra = dict(extra_info or {})
        counts: dict[str, int] = {}
        for doc in result.documents:
            counts[doc.source] = counts.get(doc.source, 0) + 1
        out = []
        for doc in result.documents:
            meta: dict[str, Any] = {**doc.metadata, **extra, "file_path": doc.source}
            doc_id = doc.source
            if counts[doc.source] > 1:
                part = next((f"{k}={meta[k]}" for k in _PARTS if k in meta), None)
                if part is None:
                    raise InputError(f"{doc.source} gave several documents with no page/record/row to tell them apart.")
                doc_id = f"{doc.source}#{part}"
            out.append(
                Document(
                    id_=doc_id,
                    text=doc.text,
                    metadata=meta,
                    excluded_embed_metadata_keys=[k for k in _NOT_EMBEDDED if k in meta],
                    excluded_llm_metadata_keys=[k for k in _NOT_FOR_LLM if k in meta],
                )
            )
        return out
