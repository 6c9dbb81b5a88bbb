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
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3e_rag.cli.choose import CHOOSE_COMMANDS, add_choose_commands, add_pairs_options, cmd_eval_pairs
from m3e_rag.errors import IndexDamagedError, InputError, M3ERagError

__all__ = ["main", "build_parser"]

DEFAULT_INDEX = ".m3e_index"
RERANKER_HELP = (
    "second stage: a cross-encoder alias (bge-reranker-base, bge-reranker-large, bge-reranker-v2-m3), "
    "hub id or CrossEncoder folder"
)
#: Exit codes: bad input or a refused operation (the message says what to do), a damaged index
#: (``m3e-rag doctor``), and a bug in m3e-rag.
EXIT_INPUT = 2
EXIT_DAMAGED = 3
EXIT_BUG = 1


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


class _Parser(argparse.ArgumentParser):
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="m3e-rag", description="M3E retrieval over Chroma: ingest files, search them, evaluate retrieval."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details and the model's loading bars to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
        help="skip (and report) files larger than this: bytes or with a unit, e.g. 200M, 2G; 'none' for no "
        "limit (default: 512M; text files stream, so memory does not grow with them)",
    )
    common(p_ingest)

    p_search = sub.add_parser("search", help="search an index")
    p_search.add_argument("query")
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
    p_search.add_argument("--reranker", default=None, help=RERANKER_HELP)
    p_search.add_argument("--rerank-top-n", type=int, default=None,
                          help="candidates given to the reranker (default: max(20, k))")
    common(p_search)

    p_eval = sub.add_parser(
        "eval",
        help="score retrieval (recall@1/5/k, MRR@k, nDCG@k per mode) on SQuAD-format or JSONL data",
        description="Index a corpus through the pipeline (chunking included) and score every query per search "
        "mode. --queries is a SQuAD file (paragraphs are the corpus, questions the queries) or JSONL lines "
        '{"query": ..., "relevant_ids": [...]}; --corpus is another SQuAD file (questions of --queries run '
        'against its paragraphs, paired by qa id, else by position) or JSONL {"id": ..., "text": ...} lines.',
    )
    p_eval.add_argument("--queries", default=None, help="SQuAD file, or JSONL queries with relevant_ids")
    add_pairs_options(p_eval)
    p_eval.add_argument("--corpus", default=None, help="SQuAD file or JSONL {id, text} corpus (default: --queries)")
    p_eval.add_argument("--modes", default="dense,sparse,hybrid", help="comma-separated (default: dense,sparse,hybrid)")
    p_eval.add_argument("-k", type=int, default=10, help="metric cutoff (default 10)")
    p_eval.add_argument("--limit", type=int, default=None, help="score only the first N queries (quick runs)")
    p_eval.add_argument("--chunk-tokens", type=int, default=None,
                        help="chunk budget in model tokens (default: 256, within the model's window)")
    p_eval.add_argument("--overlap-tokens", type=int, default=None,
                        help="overlap between chunks in tokens (default: 32, whole sentences)")
    p_eval.add_argument("--index", default=None, help="index folder to build or reuse (default: a temporary one)")
    p_eval.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
    p_eval.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p_eval.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p_eval.add_argument("--json", action="store_true", help='print {"mode": {"metric": value}} as JSON on stdout')
    p_eval.add_argument("--reranker", default=None,
                        help=RERANKER_HELP + "; every mode is then scored as MODE and MODE+rerank")
    p_eval.add_argument("--rerank-top-n", type=int, default=None,
                        help="chunks of the first stage given to the reranker (default: all fetched)")
    p_eval.add_argument(
        "--compare", default=None, metavar="A,B[;C,D]",
        help="paired per-query comparison of MRR@k, B against A (wins, losses, bootstrap 95%% CI of B - A); "
        "default: hybrid against dense, and each MODE+rerank against MODE, where evaluated",
    )

    p_info = sub.add_parser("info", help="describe the model, or an index with --index")
    p_info.add_argument("--model", default=None, help="M3E alias, hub id or local folder (default: $M3E_MODEL)")
    p_info.add_argument("--device", default=None)
    p_info.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p_info.add_argument("--json", action="store_true", help="print JSON on stdout")
    p_info.add_argument("--index", default=None, help="describe this index folder")
    p_info.add_argument("--chroma-url", default=None, help="describe this Chroma server's collection")
    p_info.add_argument("--collection", default="m3e_rag")

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

    from m3e_rag.serve.config import add_serve_arguments  # settings only: FastAPI/uvicorn load when serving

    add_serve_arguments(sub.add_parser(
        "serve", help="serve OpenAI-compatible /v1/embeddings, /v1/rerank and /v1/search over HTTP",
        description="A warm HTTP service (needs pip install 'm3e-rag[serve]'): OpenAI /v1/embeddings, /v1/models, "
        "Jina/Cohere /v1/rerank, /v1/search and /v1/ingest over an index, /health, /metrics; requests are batched "
        "together. Binds 127.0.0.1 unless --host says otherwise (then --api-key is required).",
    ))
    add_choose_commands(sub)  # models, similarity, compare (m3e_rag/cli_choose.py)
    return parser


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


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


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


def _print_ingest_report(report: Any, as_json: bool) -> None:
    """Print an ingest report (JSON on stdout, or a summary plus one line per skipped file)."""
    if as_json:
        _print_json(report.to_dict())
        return
    print(
        f"{report.files_seen} files seen, {len(report.files_skipped)} skipped; "
        f"{report.chunks_added} chunks added, {report.chunks_unchanged} unchanged, "
        f"{report.chunks_removed} removed; {report.texts_embedded} texts embedded in {report.seconds:.1f} s"
        + (" (interrupted: committed up to here; run the same command again to finish)" if report.interrupted
           else "")
    )
    for skipped in report.files_skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    for note in report.notes:
        print(f"  note {note.path}: {note.reason}")


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

        bar = tqdm(total=None, unit="chunk", desc="ingest", file=sys.stderr)

    log = logging.getLogger("m3e_rag.cli.main")

    def progress(done: int, total: int) -> None:
        log.info("ingest progress: %d/%d chunks", done, total)
        if bar is not None:  # an ingest streams: the total is known only at the end
            bar.n = done
            bar.refresh()

    from m3e_rag.ingest.run import IngestInterrupted

    try:
        report = rag.ingest(
            args.paths, include=args.include, exclude=args.exclude, progress=progress,
            follow_symlinks=args.follow_symlinks, max_file_bytes=args.max_file_size,
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


def _cmd_search(args: argparse.Namespace) -> int:
    where = parse_json_filter(args.where, "--where", '{"source": "a.md"}')
    where_document = parse_json_filter(args.where_document, "--where-document", '{"$contains": "熊猫"}')
    from m3e_rag.index.boundary import check_filters

    check_filters(where, where_document)  # refuse a bad filter before the model loads
    if args.chroma_url is None and not Path(args.index).expanduser().is_dir():
        raise InputError(f"Index folder {args.index!r} does not exist; run `m3e-rag ingest PATH --index {args.index}`.")
    rag = _pipeline(args)
    if args.rerank_top_n is not None and args.reranker is None:
        raise InputError("--rerank-top-n needs --reranker NAME_OR_FOLDER.")
    results = rag.search(args.query, k=args.k, where=where, where_document=where_document, mode=args.mode,
                         reranker=args.reranker, rerank_top_n=args.rerank_top_n)
    if args.json:
        _print_json([{"id": r.id, "text": r.text, "score": r.score, "metadata": r.metadata} for r in results])
    else:
        for rank, r in enumerate(results, 1):
            text = " ".join(r.text.split())
            print(f"{rank}. [{r.score:.4f}] {r.source}\n   {text[:200]}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from m3e_rag.index.doctor import run, to_json

    report = run(args.index, args.collection, do_repair=args.repair, model_name=args.model)
    if args.json:
        sys.stdout.write(to_json(report) + "\n")
    else:
        print(report.format_text())
    return report.exit_code


def _cmd_info(args: argparse.Namespace) -> int:
    if args.index or args.chroma_url:
        if args.chroma_url is None and not Path(args.index).expanduser().is_dir():
            raise InputError(f"Index folder {args.index!r} does not exist.")
        args.index = args.index or DEFAULT_INDEX
        from m3e_rag.index.info import index_stats  # reads what the index records: no model is loaded

        data: dict[str, Any] = index_stats(args.index, url=args.chroma_url, collection=args.collection,
                                           model_name=args.model or os.environ.get("M3E_MODEL"))
    else:
        from m3e_rag.encode.encoder import M3EEncoder

        data = M3EEncoder(args.model, device=args.device, backend=args.backend).info()
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key}: {value}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from m3e_rag.evaluate.retrieval import load_task
    from m3e_rag.retrieve.modes import check_k, check_mode

    if args.pairs is not None:
        return cmd_eval_pairs(args)
    if args.queries is None:
        raise InputError("eval needs --queries FILE (retrieval) or --pairs FILE (sentence pairs).")
    if args.threshold is not None or args.prompt is not None:
        raise InputError("--threshold and --prompt apply to --pairs only.")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise InputError("--modes is empty; give e.g. --modes dense,sparse,hybrid.")
    modes = [check_mode(m) for m in dict.fromkeys(modes)]
    check_k(args.k, "-k")
    if args.limit is not None:
        check_k(args.limit, "--limit")
    if args.rerank_top_n is not None and args.reranker is None:
        raise InputError("--rerank-top-n needs --reranker NAME_OR_FOLDER.")
    args.compare_pairs = _compare_pairs(args.compare, modes, args.reranker is not None)
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
    from m3e_rag.index.chroma import read_index_model

    recorded = read_index_model(index)
    return recorded[0] if recorded else None


def _run_eval(args: argparse.Namespace, task: Any, modes: list[str], index: Path, kwargs: dict[str, Any]) -> int:
    from m3e_rag.evaluate.retrieval import evaluate
    from m3e_rag.pipeline import RAGPipeline

    rag = RAGPipeline(
        index,
        model_name=args.model or os.environ.get("M3E_MODEL") or _recorded_model(args.index),
        device=args.device,
        backend=args.backend,
        **kwargs,
    )
    bar: dict[str, Any] = {}  # the stage being shown and its tqdm bar (one at a time)
    log = logging.getLogger("m3e_rag.cli.main")
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
        report = evaluate(task, rag, modes, k=args.k, progress=progress, reranker=args.reranker,
                          rerank_top_n=args.rerank_top_n)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    comparisons = [report.compare(a, b) for a, b in args.compare_pairs]
    if args.json:
        data: dict[str, Any] = dict(report.to_dict())
        if args.compare is not None:
            data["paired"] = [c.to_dict() for c in comparisons]
        _print_json(data)
    else:
        print(report.format_table())
        if comparisons:
            print("paired per query (bootstrap 95% CI of the mean difference; an interval holding 0 is noise):")
            for comparison in comparisons:
                print("  " + comparison.format())
    return 0


def _compare_pairs(spec: str | None, modes: list[str], reranked: bool) -> list[tuple[str, str]]:
    """The (baseline, other) mode pairs of ``--compare`` (checked against what will be evaluated)."""
    names = [*modes, *([f"{m}+rerank" for m in modes] if reranked else [])]
    if spec is None:
        pairs = [("dense", "hybrid")] if {"dense", "hybrid"} <= set(modes) else []
        return pairs + ([(m, f"{m}+rerank") for m in modes] if reranked else [])
    pairs = []
    for part in spec.split(";"):
        items = [x.strip() for x in part.split(",")]
        if len(items) != 2 or not all(items):
            raise InputError(f"--compare takes pairs like 'dense,hybrid' (several joined by ';'), got {part!r}.")
        for item in items:
            if item not in names:
                raise InputError(f"--compare names {item!r}, which is not evaluated; evaluated: {', '.join(names)}.")
        pairs.append((items[0], items[1]))
    return pairs


def _cmd_serve(args: argparse.Namespace) -> int:
    from m3e_rag.serve import run
    from m3e_rag.serve.config import config_from_args

    return run(config_from_args(args), log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m3e-rag`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # An application may quiet its libraries: transformers draws a bar for every weight load. Through
        # the environment (read when transformers loads), so commands that load no model never import it.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    commands = {"ingest": _cmd_ingest, "search": _cmd_search, "info": _cmd_info, "eval": _cmd_eval,
                "serve": _cmd_serve, **CHOOSE_COMMANDS}
    commands["doctor"] = _cmd_doctor
    handler = commands[args.command]
    try:
        return handler(args)
    except IndexDamagedError as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_DAMAGED
    except M3ERagError as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug in m3e-rag: say so, briefly; the traceback with -v
        if args.verbose:
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}{at}: {_one_line(exc)} (a bug in m3e-rag; rerun with -v for the "
            "traceback and report it)\n"
        )
        return EXIT_BUG


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (the CLI prints exactly one ``error:`` line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
