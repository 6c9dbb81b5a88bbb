"""The ``m3e-rag`` command: ingest, search, info (and eval).

A stable interface that scripts depend on: ``--json`` prints machine-readable output on stdout,
progress bars go to stderr (only on a terminal), and bad input exits non-zero with a one-line
``error: ...`` on stderr. The model comes from ``--model`` or ``$M3E_MODEL``; for an existing index
with neither given, the model recorded in the index is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, M3ERagError

__all__ = ["main", "build_parser"]

DEFAULT_INDEX = ".m3e_index"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="m3e-rag", description="M3E retrieval over Chroma: ingest files, search them, evaluate retrieval."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, index: bool = True) -> None:
        p.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
        p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
        p.add_argument("--json", action="store_true", help="print JSON on stdout")
        if index:
            p.add_argument("--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})")
            p.add_argument("--chroma-url", default=None, help="Chroma server address instead of a folder")
            p.add_argument("--collection", default="m3e_rag", help="collection name (default: m3e_rag)")

    p_ingest = sub.add_parser("ingest", help="load, chunk, embed and store files and folders")
    p_ingest.add_argument("paths", nargs="+", help="files or folders (walked recursively)")
    p_ingest.add_argument("--include", action="append", default=None, help="glob a file must match (repeatable)")
    p_ingest.add_argument("--exclude", action="append", default=None, help="glob that skips a file (repeatable)")
    p_ingest.add_argument("--chunk-tokens", type=int, default=None, help="chunk budget in model tokens")
    p_ingest.add_argument("--overlap-tokens", type=int, default=None, help="overlap between chunks in tokens")
    common(p_ingest)

    p_search = sub.add_parser("search", help="search an index")
    p_search.add_argument("query")
    p_search.add_argument("-k", type=int, default=4, help="number of results (default 4)")
    p_search.add_argument("--where", default=None, help='metadata filter as JSON, e.g. \'{"file_type": "md"}\'')
    p_search.add_argument("--mode", default="dense", choices=["dense", "sparse", "hybrid"])
    common(p_search)

    p_info = sub.add_parser("info", help="describe the model, or an index with --index")
    p_info.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
    p_info.add_argument("--device", default=None)
    p_info.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p_info.add_argument("--json", action="store_true", help="print JSON on stdout")
    p_info.add_argument("--index", default=None, help="describe this index folder")
    p_info.add_argument("--chroma-url", default=None, help="describe this Chroma server's collection")
    p_info.add_argument("--collection", default="m3e_rag")
    return parser


def _model_for_index(args: argparse.Namespace) -> str | None:
    """--model, else $M3E_MODEL, else the model recorded in an existing index, else None (default)."""
    if args.model or os.environ.get("M3E_MODEL"):
        return args.model or os.environ.get("M3E_MODEL")
    from .store import read_index_model

    recorded = read_index_model(None if args.chroma_url else args.index, args.chroma_url, args.collection)
    return recorded[0] if recorded else None


def _pipeline(args: argparse.Namespace, **kwargs: Any) -> Any:
    from .pipeline import RAGPipeline

    return RAGPipeline(
        args.index,
        model_name=_model_for_index(args),
        chroma_url=args.chroma_url,
        collection=args.collection,
        device=args.device,
        backend=args.backend,
        **kwargs,
    )


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _cmd_ingest(args: argparse.Namespace) -> int:
    for p in args.paths:
        if not Path(p).expanduser().exists():
            raise InputError(f"Path {p!r} does not exist; pass existing files or folders.")
    kwargs: dict[str, Any] = {}
    if args.chunk_tokens is not None:
        kwargs["chunk_tokens"] = args.chunk_tokens
    if args.overlap_tokens is not None:
        kwargs["overlap_tokens"] = args.overlap_tokens
    rag = _pipeline(args, **kwargs)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="chunk", desc="ingest", file=sys.stderr)

    log = logging.getLogger("m3e_rag.cli")

    def progress(done: int, total: int) -> None:
        log.info("ingest progress: %d/%d chunks", done, total)
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        report = rag.ingest(args.paths, include=args.include, exclude=args.exclude, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(
            f"{report.files_seen} files seen, {len(report.files_skipped)} skipped; "
            f"{report.chunks_added} chunks added, {report.chunks_unchanged} unchanged, "
            f"{report.chunks_removed} removed; {report.texts_embedded} texts embedded in {report.seconds:.1f} s"
        )
        for skipped in report.files_skipped:
            print(f"  skipped {skipped.path}: {skipped.reason}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    where = None
    if args.where:
        try:
            where = json.loads(args.where)
        except json.JSONDecodeError as exc:
            raise InputError(f"--where is not valid JSON ({exc.msg}); e.g. --where '{{\"source\": \"a.md\"}}'") from exc
        if not isinstance(where, dict):
            raise InputError("--where must be a JSON object, e.g. '{\"file_type\": \"md\"}'.")
    if args.chroma_url is None and not Path(args.index).expanduser().is_dir():
        raise InputError(f"Index folder {args.index!r} does not exist; run `m3e-rag ingest PATH --index {args.index}`.")
    rag = _pipeline(args)
    results = rag.search(args.query, k=args.k, where=where, mode=args.mode)
    if args.json:
        _print_json([{"id": r.id, "text": r.text, "score": r.score, "metadata": r.metadata} for r in results])
    else:
        for rank, r in enumerate(results, 1):
            text = " ".join(r.text.split())
            print(f"{rank}. [{r.score:.4f}] {r.source}\n   {text[:200]}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    if args.index or args.chroma_url:
        if args.chroma_url is None and not Path(args.index).expanduser().is_dir():
            raise InputError(f"Index folder {args.index!r} does not exist.")
        args.index = args.index or DEFAULT_INDEX
        rag = _pipeline(args)
        data: dict[str, Any] = rag.stats()
    else:
        from .encoder import M3EEncoder

        data = M3EEncoder(args.model, device=args.device, backend=args.backend).info()
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m3e-rag`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    commands = {"ingest": _cmd_ingest, "search": _cmd_search, "info": _cmd_info}
    handler = commands[args.command]
    try:
        return handler(args)
    except M3ERagError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
