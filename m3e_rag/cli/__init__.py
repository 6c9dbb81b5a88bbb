"""The ``m3e-rag`` command: ingest, search, eval, compare, doctor, serve."""

from m3e_rag.cli.dispatch import build_parser, main

__all__ = ["build_parser", "main"]
