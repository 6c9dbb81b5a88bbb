"""The ``m3e-rag ingest`` and ``m3e-rag search`` subcommands: fill an index, then query it.

Their options (what to read, ``--max-file-size``, ``--where`` filters) and handlers live here; the pipeline,
Chroma and the model load inside the handlers, never when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3e_rag.cli.hits import print_hits, why_no_results
from m3e_rag.cli.options import RERANKER_HELP, add_common_options, check_index_folder
from m3e_rag.cli.output import escape_text, out, print_json
from m3e_rag.errors import InputError

__all__ = ["INGEST_COMMANDS", "DEFAULT_MAX_FILE_SIZE", "add_ingest_commands", "parse_json_filter"]

DEFAULT_MAX_FILE_SIZE = 512 * 1024 * 1024
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def _file_size(text: str) -> int | None:
    """Parse ``--max-file-size``: ``1048576``, ``200M``, ``1.5G`` (units of 1024), or ``none``."""
    value = text.strip().lower()
    if value in ("none", "off", "unlimited"):
        return None
    number = value.rstrip("kmgtib")
    unit = value[len(number):]
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; use bytes or a number with K, M, G or T (e.g. 200M), or 'none'"
        ) from None
    if not size >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 byte (or 'none' for no limit)")
    return int(size)


def add_ingest_commands(sub: Any) -> None:
    """Add the ``ingest`` and ``search`` subcommands to the ``m3e-rag`` parser."""
    p_ingest = sub.add_parser("ingest", help="load, chunk, embed and store files and folders")
    p_ingest.add_argument("paths", nargs="+", help="files or folders (walked recursively)")
    p_ingest.add_argument("--include", action="append", default=None, help="glob a file must match (repeatable)")
    p_ingest.add_argument("--exclude", action="append", default=None, help="glob that skips a file (repeatable)")
    p_ingest.add_argument("--chunk-tokens", type=int, default=None,
                        help="chunk budget in model tokens (default: 256, within the model's window)")
    p_ingest.add_argument("--overlap-tokens", type=int, default=None,
                        help="overlap between chunks in tokens (default: 32, whole sentences)")
    p_ingest.add_argument(
        "--follow-symlinks", action="store_true",
        help="follow symbolic links that lead out of the given folders (default: skip and report them)",
    )
    p_ingest.add_argument(
        "--max-file-size", type=_file_size, default=DEFAULT_MAX_FILE_SIZE, metavar="SIZE",
        help="skip (and report) files larger than this, and .docx files that expand to more once unzipped: bytes "
        "or with a unit, e.g. 200M, 2G; 'none' for no limit (default: 512M; text files stream, so memory does not "
        "grow with them)",
    )
    p_ingest.add_argument(
        "--sync", action="store_true",
        help="also remove the chunks of files no longer present under the folders given (only files confirmed gone, "
        "only under these folders and --include/--exclude; a file skipped this run keeps its chunks) (default: off: "
        "an ingest deletes nothing unasked)",
    )
    p_ingest.add_argument("--text-column", default="text", metavar="NAME",
                          help="the column holding the text in CSV/TSV files (default: %(default)s)")
    p_ingest.add_argument("--text-field", default="text", metavar="KEY",
                          help="the key holding the text in JSON and JSONL records (default: %(default)s)")
    add_common_options(p_ingest)

    p_search = sub.add_parser("search", help="search an index")
    p_search.add_argument("query", help="what to look for: a question or words, Chinese or English")
    p_search.add_argument("-k", type=int, default=4, help="number of results (default 4)")
    p_search.add_argument("--where", default=None, help='metadata filter as JSON, e.g. \'{"file_type": "md"}\'')
    p_search.add_argument(
        "--where-document", default=None,
        help='document text filter as JSON, e.g. \'{"$contains": "熊猫"}\' ($not_contains, $regex, $and, $or too)',
    )
    p_search.add_argument(
        "--mode", default=None, choices=["dense", "sparse", "hybrid"],
        help="dense (M3E), sparse (BM25) or hybrid (both, fused per query) (default: hybrid)",
    )
    p_search.add_argument(
        "--sparse", default="auto", choices=["auto", "bm25", "learned"],
        help="the sparse list of --mode sparse/hybrid: the model's own learned-sparse output when it has a sparse "
             "head (BGE-M3), else BM25 (auto, default); or bm25 / learned by name",
    )
    p_search.add_argument("--colbert", action="store_true",
                          help="rescore the fused candidates with the model's ColBERT, dense and lexical scores "
                               "(a model with BGE-M3's heads)")
    p_search.add_argument("--reranker", default=None, help=RERANKER_HELP)
    p_search.add_argument("--rerank-top-n", type=int, default=None,
                          help="candidates given to the reranker (default: max(20, k))")
    add_common_options(p_search)


def _model_for_index(args: argparse.Namespace) -> str | None:
    """--model, else $M3E_MODEL, else the model recorded in an existing index, else None (default)."""
    if args.model or os.environ.get("M3E_MODEL"):
        return args.model or os.environ.get("M3E_MODEL")
    from m3e_rag.index.chroma import read_index_model

    recorded = read_index_model(None if args.chroma_url else args.index, args.chroma_url, args.collection)
    return recorded[0] if recorded else None


def _pipeline(args: argparse.Namespace, **kwargs: Any) -> Any:
    from m3e_rag.pipeline import RAGPipeline

    return RAGPipeline(
        args.index,
        model_name=_model_for_index(args),
        chroma_url=args.chroma_url,
        collection=args.collection,
        device=args.device,
        backend=args.backend,
        **kwargs,
    )


def _print_ingest_report(report: Any, as_json: bool) -> None:
    """Print an ingest report (JSON on stdout, or a summary plus one line per skipped file)."""
    if as_json:
        print_json(report.to_dict())
        return
    out(
        f"{report.files_seen} files seen, {len(report.files_skipped)} skipped; "
        f"{report.chunks_added} chunks added, {report.chunks_unchanged} unchanged, "
        f"{report.chunks_removed} removed; {report.texts_embedded} texts embedded in {report.seconds:.1f} s"
        + (" (interrupted: committed up to here; run the same command again to finish)" if report.interrupted
           else "")
    )
    for skipped in report.files_skipped:
        out(f"  skipped {escape_text(skipped.path)}: {escape_text(skipped.reason)}")
    for note in report.notes:
        out(f"  note {escape_text(note.path)}: {escape_text(note.reason)}")
    if report.synced:
        out(f"sync: {len(report.sources_removed)} files no longer present, their chunks removed")
    for gone in report.sources_removed:
        out(f"  removed {escape_text(gone.source)}: {gone.chunks} chunks (the file is gone)")
    for kept in report.sources_kept:
        out(f"  kept {escape_text(kept.path)}: {escape_text(kept.reason)}")


def _terminal_bar(args: argparse.Namespace, rag: Any, encoder: Any) -> Any:
    """The ingest's progress bar on a terminal, moved per batch by ``encoder`` (see :mod:`.progress`)."""
    from m3e_rag.cli.progress import IngestBar, estimate_chunks, walk_totals

    files, sizes = walk_totals(args.paths, args.include, args.exclude, args.follow_symlinks, args.max_file_size)
    bar = IngestBar(files, sum(sizes), estimate_chunks(sizes, rag.chunk_tokens, rag.overlap_tokens))
    encoder.on_embedded = bar.embedded
    return bar


def cmd_ingest(args: argparse.Namespace) -> int:
    """``m3e-rag ingest PATH...``: the ingest report; exit 130 when interrupted (what was committed stays)."""
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise InputError(f"Path {p!r} does not exist; pass existing files or folders.")
    kwargs: dict[str, Any] = {}
    if args.chunk_tokens is not None:
        kwargs["chunk_tokens"] = args.chunk_tokens
    if args.overlap_tokens is not None:
        kwargs["overlap_tokens"] = args.overlap_tokens
    terminal = sys.stderr.isatty()  # a bar with a total, rate and ETA; piped and --json output stay as they were
    if terminal:
        from m3e_rag.cli.progress import CountingEncoder

        kwargs["encoder"] = CountingEncoder(_model_for_index(args), device=args.device, backend=args.backend)
    rag = _pipeline(args, **kwargs)
    bar = _terminal_bar(args, rag, kwargs["encoder"]) if terminal else None

    log = logging.getLogger("m3e_rag.cli")

    def progress(done: int, total: int) -> None:
        log.info("ingest progress: %d/%d chunks", done, total)
        if bar is not None:
            bar.step(done, total)

    from m3e_rag.ingest.run import IngestInterrupted

    try:
        report = rag.ingest(
            args.paths, include=args.include, exclude=args.exclude, progress=progress,
            follow_symlinks=args.follow_symlinks, max_file_bytes=args.max_file_size, sync=args.sync,
            text_field=args.text_field, text_column=args.text_column,
        )
    except IngestInterrupted as stop:
        if bar is not None:
            bar.close()
            bar = None
        _print_ingest_report(stop.report, args.json)
        sys.stderr.write("error: interrupted; what is reported above was committed\n")
        return 130
    finally:
        if bar is not None:
            bar.close()
    _print_ingest_report(report, args.json)
    return 0


def parse_json_filter(text: str | None, flag: str, example: str) -> dict[str, Any] | None:
    """Parse a ``--where``-style option: None/empty gives None, a JSON object gives a dict, else InputError."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise InputError(f"{flag} is not valid JSON ({reason}); e.g. {flag} '{example}'.") from exc
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object, got {type(value).__name__}; e.g. {flag} '{example}'.")
    return value


def cmd_search(args: argparse.Namespace) -> int:
    """``m3e-rag search QUERY``: ranked results, as lines or JSON."""
    where = parse_json_filter(args.where, "--where", '{"source": "a.md"}')
    where_document = parse_json_filter(args.where_document, "--where-document", '{"$contains": "熊猫"}')
    from m3e_rag.index.boundary import check_filters

    check_filters(where, where_document)  # refuse a bad filter before the model loads
    if args.chroma_url is None:
        check_index_folder(args.index)
    rag = _pipeline(args)
    if args.rerank_top_n is not None and args.reranker is None:
        raise InputError("--rerank-top-n needs --reranker NAME_OR_FOLDER.")
    results = rag.search(args.query, k=args.k, where=where, where_document=where_document, mode=args.mode,
                         reranker=args.reranker, rerank_top_n=args.rerank_top_n, sparse=args.sparse,
                         colbert=args.colbert)
    if args.json:
        print_json([{"id": r.id, "text": r.text, "score": r.score, "metadata": r.metadata} for r in results])
    mode = args.mode or ("hybrid" if rag.use_sparse else "dense")
    if not results:  # never silence: say so, and why when the index or a filter explains it
        target = (f"--chroma-url {args.chroma_url} --collection {args.collection}" if args.chroma_url
                  else f"--index {args.index}")
        why = f"no results: {why_no_results(rag, mode, where, where_document, target)}"
        if args.json:
            sys.stderr.write(escape_text(why) + "\n")  # stdout stays the JSON list scripts parse: []
        else:
            out(why)
    elif not args.json:
        learned = mode == "sparse" and args.sparse != "bm25" and rag.has_learned
        print_hits(results, args.query, "colbert" if args.colbert else "lexical" if learned else mode)
    return 0


INGEST_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"ingest": cmd_ingest, "search": cmd_search}
