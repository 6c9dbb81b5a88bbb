"""The ``m3e-rag delete`` subcommand: remove the chunks of files (sources) from an index, BM25 included.

Each ``--source`` names a file as it was ingested: the path as typed, absolute, or resolved through
symbolic links all find it (:meth:`m3e_rag.RAGPipeline.delete`). ``--where`` narrows every ``--source``
to the chunks matching a metadata filter, or alone deletes what it matches. One line per source says
how many chunks went; a source that matches nothing is named, so a typo is not mistaken for success.

Exit codes: 0 when every ``--source`` (or the ``--where`` given alone) matched and its chunks were
deleted; :data:`EXIT_NO_MATCH` (4) when at least one matched nothing (the others were still deleted);
2 for bad input, nothing deleted. Not 1: that is "a bug in m3e-rag" for every command, and a script
must be able to tell a typo from a crash.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3e_rag.cli.ingest import _pipeline, parse_json_filter
from m3e_rag.cli.options import add_common_options
from m3e_rag.cli.output import escape_text, out, print_json
from m3e_rag.errors import InputError

__all__ = ["DELETE_COMMANDS", "EXIT_NO_MATCH", "add_delete_command"]

#: Exit code when a ``--source`` (or the ``--where`` alone) matched no chunk.
EXIT_NO_MATCH = 4

_WHERE_EXAMPLE = '{"file_type": "csv"}'


def add_delete_command(sub: Any) -> None:
    """Add the ``delete`` subcommand to the ``m3e-rag`` parser."""
    p = sub.add_parser(
        "delete", help="remove the chunks of files (sources) from an index",
        description="Deletes the chunks of each --source (a file as ingested) from the index, in Chroma and BM25 "
        "alike, and prints how many went per source. To remove every file gone from a folder, use "
        "`m3e-rag ingest FOLDER --sync`. Exit 0: every --source matched; 4: at least one matched nothing (the "
        "others were deleted); 2: bad input (nothing deleted).",
    )
    p.add_argument("--source", action="append", default=None, metavar="PATH",
                   help="a file as ingested (as typed, absolute or through links); repeatable (default: none)")
    p.add_argument("--where", default=None, metavar="JSON",
                   help=f"metadata filter as JSON, e.g. '{_WHERE_EXAMPLE}': with --source, only its chunks that "
                   "match; alone, every chunk that matches (default: none)")
    add_common_options(p)


def _check(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --where filter, once the arguments and the index folder are known good (before any model loads)."""
    where = parse_json_filter(args.where, "--where", _WHERE_EXAMPLE)
    if where == {}:
        raise InputError("--where '{}' is an empty filter (it would match every chunk); leave it out or name a key.")
    if not args.source and where is None:
        raise InputError(f"delete needs --source PATH (repeatable) or --where JSON, e.g. --where '{_WHERE_EXAMPLE}'.")
    if any(not s for s in args.source or []):
        raise InputError("--source needs a path; got an empty one.")
    from m3e_rag.index.boundary import check_filters
    from m3e_rag.index.chroma import read_index_model

    check_filters(where, None)
    if args.chroma_url is None and not Path(args.index).expanduser().is_dir():
        raise InputError(f"Index folder {args.index!r} does not exist; pass --index DIR of an existing index.")
    if read_index_model(None if args.chroma_url else args.index, args.chroma_url, args.collection) is None:
        where_at = args.chroma_url or args.index
        raise InputError(f"No m3e-rag index (collection {args.collection!r}) at {where_at}; nothing to delete.")
    return where


def cmd_delete(args: argparse.Namespace) -> int:
    """``m3e-rag delete --source PATH``: chunks deleted per source; exit :data:`EXIT_NO_MATCH` if one matched none."""
    where = _check(args)
    rag = _pipeline(args)
    counts: list[tuple[str | None, int]] = []
    for source in args.source or [None]:
        counts.append((source, rag.delete(source=source, where=where) if source else rag.delete(where=where)))
    unmatched = [source for source, n in counts if n == 0]
    if args.json:
        print_json({
            "deleted": sum(n for _, n in counts),
            "sources": [{"source": s, "chunks": n} for s, n in counts if s is not None],
            "where": where,
            "unmatched": [s if s is not None else "--where" for s in unmatched],
        })
    else:
        narrowed = " matching --where" if where is not None else ""
        for source, n in counts:
            what = f"of {escape_text(source)}{narrowed}" if source is not None else f"matching --where {args.where}"
            out(f"deleted {n} chunks {what}" if n else f"no chunks {what} in the index: nothing deleted")
    return EXIT_NO_MATCH if unmatched else 0


DELETE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"delete": cmd_delete}
