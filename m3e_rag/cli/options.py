"""What the ``m3e-rag`` subcommands' options share: the parser class that shows defaults, the common options.

Every command-group module (ingest, evaluate, index, serve, choose) builds its subparsers from these, so the
help texts, defaults and the ``--index`` default are declared once.
"""

from __future__ import annotations

import argparse
import re
from functools import partial
from pathlib import Path
from typing import Any

from m3e_rag.encode.options import BACKENDS

__all__ = [
    "BACKEND_HELP", "DEFAULT_INDEX", "DEVICE_HELP", "MODEL_HELP", "RERANKER_HELP", "Parser", "add_common_options",
    "add_model_options", "FLAG_OF_ARGUMENT", "name_the_flags", "check_index_folder",
]

DEFAULT_INDEX = ".m3e_index"
RERANKER_HELP = (
    "second stage: a cross-encoder alias (bge-reranker-base, bge-reranker-large, bge-reranker-v2-m3), "
    "hub id or CrossEncoder folder (default: none, no reranking)"
)
MODEL_HELP = (
    "M3E alias, hub id or local folder (default: $M3E_MODEL, else the model recorded in an existing index, "
    "else m3e-base)"
)
DEVICE_HELP = "torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)"
BACKEND_HELP = (
    "how the model runs: torch, onnx (ONNX Runtime, needs m3e-rag[onnx]), onnx-int8 (quantized, faster on "
    "CPU, slightly different vectors) or onnx-int8-fast (every matrix product quantized: fastest on CPU, "
    "vectors further from fp32's)"
)


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Show every option's default in ``--help`` unless its help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text.lower()
            and default not in (None, False, argparse.SUPPRESS)
            and not isinstance(default, list)
        ):
            text += " (default: %(default)s)"
        return text


#: The help of the options every model-loading subcommand shares, by flag: an option declared without help
#: gets it from here (one wording everywhere); any other option must bring its own.
SHARED_HELP = {"--backend": BACKEND_HELP, "--device": DEVICE_HELP, "--json": "print JSON on stdout",
               "--collection": "collection name"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults (used for every subcommand too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add an argument; a shared option declared without help gets the shared wording (:data:`SHARED_HELP`)."""
        action = super().add_argument(*args, **kwargs)
        if not action.help:
            action.help = next((SHARED_HELP[o] for o in action.option_strings if o in SHARED_HELP), action.help)
        return action



def check_index_folder(index: str) -> None:
    """Refuse an index folder that is not there: ``not found: PATH`` (exit 2), before a model or Chroma loads.

    A typo in ``--index`` is the likely cause; calling it damaged (exit 3) would send the user to repair an index
    that does not exist.
    """
    from m3e_rag.errors import InputError

    if not Path(index).expanduser().is_dir():
        raise InputError(f"not found: {index} (no index folder there; check --index, or build one with "
                         f"`m3e-rag ingest PATH --index {index}`)")


def add_model_options(p: argparse.ArgumentParser, model_help: str = MODEL_HELP) -> None:
    """Add ``--model``, ``--device`` and ``--backend`` (one wording for every subcommand that loads a model)."""
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--backend", default="torch", choices=list(BACKENDS), help=BACKEND_HELP)


def add_common_options(p: argparse.ArgumentParser, index: bool = True) -> None:
    """Add the model options and ``--json`` (and, with ``index``, the index location) to a subcommand."""
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    if index:
        p.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})")
        p.add_argument("--chroma-url", default=None, help="Chroma server address instead of a folder")
        p.add_argument("--collection", default="m3e_rag", help="collection name (default: m3e_rag)")


#: The library's argument names and the ``m3e-rag`` flag that sets each: the one place where an error raised
#: by the library (which names its Python arguments) is translated for the command line, by
#: :func:`name_the_flags`. ``max_tokens`` is the chunker's name for ``--chunk-tokens``.
FLAG_OF_ARGUMENT: dict[str, str] = {
    "chunk_tokens": "--chunk-tokens",
    "max_tokens": "--chunk-tokens",
    "overlap_tokens": "--overlap-tokens",
    "model_name": "--model",
    "text_column": "--text-column",
    "text_field": "--text-field",
    "max_file_bytes": "--max-file-size",
    "follow_symlinks": "--follow-symlinks",
    "rerank_top_n": "--rerank-top-n",
    "where_document": "--where-document",
    "chroma_url": "--chroma-url",
    # Plain words as well as argument names: translated only where they read as an argument (below).
    "k": "-k",
    "where": "--where",
    "reranker": "--reranker",
    "mode": "--mode",
    "sparse": "--sparse",
    "backend": "--backend",
    "device": "--device",
    "collection": "--collection",
}

#: A value after ``name=``: quoted, or up to a space or a closing punctuation mark.
_VALUE = r"""=(?P<value>'[^']*'|"[^"]*"|[^\s,;)\]]+)?"""
#: Not inside a path, a flag or a longer name.
_BEFORE = r"(?<![\w./\\-])"


def _argument_pattern(name: str) -> re.Pattern[str]:
    """The pattern of ``name`` used as an argument.

    A name with ``_`` anywhere; a plain word only as ``word=``, ``word must``, ``word filter`` or ``word /``
    (so "where" in a sentence stays a word).
    """
    if "_" in name:
        return re.compile(rf"{_BEFORE}{name}\b(?:{_VALUE})?")
    return re.compile(rf"{_BEFORE}{name}(?:{_VALUE}|(?=\s+(?:must|filter)\b|\s+/))")


_ARGUMENTS = [(_argument_pattern(name), flag) for name, flag in FLAG_OF_ARGUMENT.items()]


def name_the_flags(message: str) -> str:
    """``message`` with the library's argument names replaced by their flags.

    ``chunk_tokens=300`` becomes ``--chunk-tokens 300``: a command-line user reads the option they typed, not
    a Python spelling.
    """
    for pattern, flag in _ARGUMENTS:
        message = pattern.sub(partial(_flag_with_value, flag), message)
    return message


def _flag_with_value(flag: str, match: re.Match[str]) -> str:
    value = match.group("value")
    return f"{flag} {value}" if value else flag
