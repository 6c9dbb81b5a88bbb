"""The ``m3e-rag adopt`` subcommand: take over a Chroma collection written by langchain_chroma or LlamaIndex.

The checks and the work are :func:`m3e_rag.ingest.adopt.adopt_collection`'s; here are the options, a
progress bar on a terminal (stderr), and the result as one line or as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3e_rag.cli.options import DEFAULT_INDEX, add_model_options
from m3e_rag.cli.output import escape_text, out, print_json
from m3e_rag.errors import InputError

__all__ = ["ADOPT_COMMANDS", "add_adopt_command"]


def add_adopt_command(sub: Any) -> None:
    """Add the ``adopt`` subcommand to the ``m3e-rag`` parser."""
    p = sub.add_parser(
        "adopt", help="take over a Chroma collection written by langchain_chroma or LlamaIndex (records the model)",
        description="Checks that an existing Chroma collection (written by langchain_chroma.Chroma or LlamaIndex's "
        "ChromaVectorStore) was embedded by the model (its vectors' dimension, and a sample of its texts embedded "
        "again) in cosine space, then records the model in the collection's metadata and builds the BM25 index from "
        "the stored texts. Ids, texts, metadata and vectors are never rewritten. A collection in Chroma's l2 or ip "
        "space cannot be searched as cosine: --copy-to NAME copies it (vectors unchanged) into a new cosine "
        "collection and leaves it as it is.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--index", default=None,
                       help=f"the Chroma folder (persist_directory) holding the collection (default: {DEFAULT_INDEX})")
    where.add_argument("--chroma-url", default=None, help="a Chroma server's address instead of a folder")
    p.add_argument("--collection", required=True, help="the collection to adopt")
    p.add_argument("--copy-to", default=None, metavar="NAME",
                   help="copy the records into this NEW cosine collection (needed for an l2 or ip collection)")
    p.add_argument("--chunk-tokens", type=int, default=None,
                   help="chunk budget recorded for later ingests (default: 256)")
    p.add_argument("--overlap-tokens", type=int, default=None,
                   help="overlap recorded for later ingests (default: 32)")
    add_model_options(p, model_help="M3E alias, hub id or folder that built the collection (default: $M3E_MODEL, "
                      "then m3e-base)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def cmd_adopt(args: argparse.Namespace) -> int:
    """``m3e-rag adopt``: the report as one line (or JSON); exit 2 with one line when refused."""
    index = args.index or DEFAULT_INDEX
    if args.chroma_url is None and not Path(index).expanduser().is_dir():
        raise InputError(f"Index folder {index!r} does not exist; pass the folder the collection was written to.")
    from m3e_rag.cli.progress import StageBars
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.ingest.adopt import adopt_collection
    from m3e_rag.pipeline import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS

    encoder = M3EEncoder(args.model or os.environ.get("M3E_MODEL"), device=args.device, backend=args.backend)
    progress = StageBars("adopt", unit="record", leave=True)
    try:
        report = adopt_collection(
            None if args.chroma_url else index, chroma_url=args.chroma_url, collection=args.collection,
            encoder=encoder, copy_to=args.copy_to, progress=progress,
            chunk_tokens=DEFAULT_CHUNK_TOKENS if args.chunk_tokens is None else args.chunk_tokens,
            overlap_tokens=DEFAULT_OVERLAP_TOKENS if args.overlap_tokens is None else args.overlap_tokens,
        )
    finally:
        progress.close()
    if args.json:
        print_json(report.to_dict())
        return 0
    how = f"copied to the new cosine collection {report.copied_to!r}" if report.copied_to else "adopted in place"
    flag = "--chroma-url" if args.chroma_url else "--index"
    out(
        f"{escape_text(report.source)}: {report.records} records {how} ({report.space} space, model "
        f"{escape_text(report.model)}, {report.dim}-d, median cosine {report.sample_cosine:.4f} over "
        f"{report.sample_size} sampled texts{', BM25 index built' if report.bm25_built else ''}); search it with "
        f"`m3e-rag search QUERY {flag} {escape_text(report.location)} --collection {escape_text(report.collection)}`."
    )
    return 0


ADOPT_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"adopt": cmd_adopt}
