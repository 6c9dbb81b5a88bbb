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

    p_eval = sub.add_parser(
        "eval",
        help="score retrieval (recall@1/5/k, MRR@k, nDCG@k per mode) on SQuAD-format or JSONL data",
        description="Index a corpus through the pipeline (chunking included) and score every query per search "
        "mode. --queries is a SQuAD file (paragraphs are the corpus, questions the queries) or JSONL lines "
        '{"query": ..., "relevant_ids": [...]}; --corpus is another SQuAD file (questions of --queries run '
        'against its paragraphs, paired by qa id, else by position) or JSONL {"id": ..., "text": ...} lines.',
    )
    p_eval.add_argument("--queries", required=True, help="SQuAD file, or JSONL queries with relevant_ids")
    p_eval.add_argument("--corpus", default=None, help="SQuAD file or JSONL {id, text} corpus (default: --queries)")
    p_eval.add_argument("--modes", default="dense,sparse,hybrid", help="comma-separated (default: dense,sparse,hybrid)")
    p_eval.add_argument("-k", type=int, default=10, help="metric cutoff (default 10)")
    p_eval.add_argument("--limit", type=int, default=None, help="score only the first N queries (quick runs)")
    p_eval.add_argument("--chunk-tokens", type=int, default=None, help="chunk budget in model tokens")
    p_eval.add_argument("--overlap-tokens", type=int, default=None, help="overlap between chunks in tokens")
    p_eval.add_argument("--index", default=None, help="index folder to build or reuse (default: a temporary one)")
    p_eval.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
    p_eval.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p_eval.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p_eval.add_argument("--json", action="store_true", help='print {"mode": {"metric": value}} as JSON on stdout')

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


def _cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from .evaluation import load_task
    from .retriever import check_k, check_mode

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise InputError("--modes is empty; give e.g. --modes dense,sparse,hybrid.")
    modes = [check_mode(m) for m in dict.fromkeys(modes)]
    check_k(args.k, "-k")
    if args.limit is not None:
        check_k(args.limit, "--limit")
    task = load_task(args.queries, args.corpus).limit(args.limit)
    kwargs: dict[str, Any] = {}
    if args.chunk_tokens is not None:
        kwargs["chunk_tokens"] = args.chunk_tokens
    if args.overlap_tokens is not None:
        kwargs["overlap_tokens"] = args.overlap_tokens
    if args.index is not None:
        return _run_eval(args, task, modes, Path(args.index), kwargs)
    with tempfile.TemporaryDirectory(prefix="m3e-rag-eval-", ignore_cleanup_errors=True) as tmp:
        try:
            return _run_eval(args, task, modes, Path(tmp), kwargs)
        finally:
            from chromadb.api.client import SharedSystemClient

            SharedSystemClient.clear_system_cache()  # let go of the folder before it is removed


def _recorded_model(index: str | None) -> str | None:
    """The model an existing --index was built with (so a reused index needs no --model)."""
    if index is None:
        return None
    from .store import read_index_model

    recorded = read_index_model(index)
    return recorded[0] if recorded else None


def _run_eval(args: argparse.Namespace, task: Any, modes: list[str], index: Path, kwargs: dict[str, Any]) -> int:
    from .evaluation import evaluate
    from .pipeline import RAGPipeline

    rag = RAGPipeline(
        index,
        model_name=args.model or os.environ.get("M3E_MODEL") or _recorded_model(args.index),
        device=args.device,
        backend=args.backend,
        **kwargs,
    )
    bar: dict[str, Any] = {}  # the stage being shown and its tqdm bar (one at a time)
    log = logging.getLogger("m3e_rag.cli")
    labels = {"index": ("index", "chunk"), "encode": ("embed queries", "query")}

    def progress(stage: str, done: int, total: int) -> None:
        log.info("eval %s: %d/%d", stage, done, total)
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if bar.get("stage") != stage:
            if "bar" in bar:
                bar["bar"].close()
            desc, unit = labels.get(stage, (stage, "query"))
            bar.update(stage=stage, bar=tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=False))
        current = bar["bar"]
        current.total = total
        current.update(done - current.n)

    try:
        report = evaluate(task, rag, modes, k=args.k, progress=progress)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m3e-rag`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # An application may quiet its libraries: transformers draws a bar for every weight load.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    commands = {"ingest": _cmd_ingest, "search": _cmd_search, "info": _cmd_info, "eval": _cmd_eval}
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
