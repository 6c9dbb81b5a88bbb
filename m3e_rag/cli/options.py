"""What the ``m3e-rag`` subcommands' options share: the parser class that shows defaults, the common options.

Every command-group module (ingest, evaluate, index, serve, choose) builds its subparsers from these, so the
help texts, defaults and the ``--index`` default are declared once.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["DEFAULT_INDEX", "RERANKER_HELP", "Parser", "add_common_options"]

DEFAULT_INDEX = ".m3e_index"
RERANKER_HELP = (
    "second stage: a cross-encoder alias (bge-reranker-base, bge-reranker-large, bge-reranker-v2-m3), "
    "hub id or CrossEncoder folder"
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


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults (used for every subcommand too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add an argument; an option given no help still shows its default."""
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "(default: %(default)s)"
        return action


def add_common_options(p: argparse.ArgumentParser, index: bool = True) -> None:
    """Add the model options and ``--json`` (and, with ``index``, the index location) to a subcommand."""
    p.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    if index:
        p.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})")
        p.add_argument("--chroma-url", default=None, help="Chroma server address instead of a folder")
        p.add_argument("--collection", default="m3e_rag", help="collection name (default: m3e_rag)")
