"""The ``m3e-rag info`` and ``m3e-rag doctor`` subcommands: describe a model or an index, check an index folder.

Both read what an index records without loading a model (``info`` without ``--index`` describes the model).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from m3e_rag.cli.options import DEFAULT_INDEX, add_model_options, check_index_folder
from m3e_rag.cli.output import format_fields, out, print_json

__all__ = ["INDEX_COMMANDS", "add_index_commands"]


def add_index_commands(sub: Any) -> None:
    """Add the ``info`` and ``doctor`` subcommands to the ``m3e-rag`` parser."""
    p_info = sub.add_parser("info", help="describe the model, or an index with --index")
    add_model_options(p_info, model_help=(
        "M3E alias, hub id or local folder to describe (default: $M3E_MODEL, else m3e-base); with --index, it "
        "must be the model the index was built with"))
    p_info.add_argument("--json", action="store_true", help="print JSON on stdout")
    p_info.add_argument("--index", default=None, help="describe this index folder (default: describe the model)")
    p_info.add_argument("--chroma-url", default=None, help="describe this Chroma server's collection")
    p_info.add_argument("--collection", default="m3e_rag", help="collection name (default: %(default)s)")

    p_doctor = sub.add_parser(
        "doctor", help="check an index folder for damage; --repair rebuilds what can be rebuilt",
        description="Checks the Chroma database, the collection, the recorded model, the HNSW vectors against the "
        "record count, the BM25 file and m3e-rag's manifest, reading the files without changing them. --repair "
        "re-embeds lost vectors from the stored texts (with the recorded model), rebuilds the BM25 file and the "
        "manifest; nothing is deleted before its replacement is complete. Exit 0: healthy; 3: damaged.",
    )
    p_doctor.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})")
    p_doctor.add_argument("--collection", default="m3e_rag", help="collection name (default: m3e_rag)")
    p_doctor.add_argument("--repair", action="store_true", help="rebuild what can be rebuilt (default: report only)")
    p_doctor.add_argument("--model", default=None,
                          help="model to re-embed with (default: the one recorded in the index; must match it)")
    p_doctor.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def cmd_doctor(args: argparse.Namespace) -> int:
    """``m3e-rag doctor``: the report; exit 0 when healthy, 3 when damaged."""
    from m3e_rag.index.doctor import run

    check_index_folder(args.index)  # a typo in --index is "not found" (exit 2), not a damaged index (exit 3)
    report = run(args.index, args.collection, do_repair=args.repair, model_name=args.model)
    if args.json:
        print_json(report.to_dict())
    else:
        out(report.format_text())
    return report.exit_code


def cmd_info(args: argparse.Namespace) -> int:
    """``m3e-rag info``: the model's facts, or with ``--index``/``--chroma-url`` the index's."""
    if args.index or args.chroma_url:
        if args.chroma_url is None:
            check_index_folder(args.index)
        args.index = args.index or DEFAULT_INDEX
        from m3e_rag.index.info import index_stats  # reads what the index records: no model is loaded

        data: dict[str, Any] = index_stats(args.index, url=args.chroma_url, collection=args.collection,
                                           model_name=args.model or os.environ.get("M3E_MODEL"))
    else:
        from m3e_rag.encode.encoder import M3EEncoder

        data = M3EEncoder(args.model, device=args.device, backend=args.backend).info()
    if args.json:
        print_json(data)
    else:
        out(format_fields(data))
    return 0


INDEX_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"info": cmd_info, "doctor": cmd_doctor}
