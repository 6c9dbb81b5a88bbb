"""The ``m3e-rag eval`` subcommand: retrieval evaluation (``--queries``) or sentence pairs (``--pairs``).

Its options are declared once, in :func:`_add_eval_arguments`: the ``eval`` subparser is built from it, and so
are the defaults that ``eval --pairs`` checks the retrieval-only options against.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3e_rag.cli.options import RERANKER_HELP, Parser, add_model_options
from m3e_rag.cli.output import out, print_json
from m3e_rag.errors import InputError

__all__ = ["EVAL_COMMANDS", "add_eval_command", "cmd_eval", "cmd_eval_pairs"]

_HELP = "score retrieval (recall@1/5/k, MRR@k, nDCG@k per mode) on SQuAD-format or JSONL data"
_DESCRIPTION = (
    "Index a corpus through the pipeline (chunking included) and score every query per search "
    "mode. --queries is a SQuAD file (paragraphs are the corpus, questions the queries) or JSONL lines "
    '{"query": ..., "relevant_ids": [...]}; --corpus is another SQuAD file (questions of --queries run '
    'against its paragraphs, paired by qa id, else by position) or JSONL {"id": ..., "text": ...} lines.'
)


def add_eval_command(sub: Any) -> None:
    """Add the ``eval`` subcommand to the ``m3e-rag`` parser."""
    _add_eval_arguments(sub.add_parser("eval", help=_HELP, description=_DESCRIPTION))


def _add_pairs_options(p_eval: argparse.ArgumentParser) -> None:
    """Add ``--pairs``, ``--threshold`` and ``--prompt`` to the ``eval`` parser."""
    p_eval.add_argument(
        "--pairs", default=None,
        help="sentence-pair file instead of --queries: JSONL {sentence1, sentence2, label} or TSV "
        "(LCQMC / PAWS-X / STS-B style); reports Spearman, Pearson and best-threshold accuracy "
        "(--limit N: the first N pairs)",
    )
    p_eval.add_argument("--threshold", type=float, default=None,
                        help="with --pairs and 0/1 labels: score accuracy at this cosine instead of fitting one")
    p_eval.add_argument("--prompt", default=None,
                        help="with --pairs: prompt for both sentences (default: the model's document prompt)")


def _add_eval_arguments(p_eval: argparse.ArgumentParser) -> None:
    """Every option of ``eval``, in the order ``--help`` lists them."""
    p_eval.add_argument("--queries", default=None, help="SQuAD file, or JSONL queries with relevant_ids")
    _add_pairs_options(p_eval)
    p_eval.add_argument("--corpus", default=None, help="SQuAD file or JSONL {id, text} corpus (default: --queries)")
    p_eval.add_argument("--modes", default="dense,sparse,hybrid", help="comma-separated (default: dense,sparse,hybrid)")
    p_eval.add_argument("-k", type=int, default=10, help="metric cutoff (default 10)")
    p_eval.add_argument("--limit", type=int, default=None, help="score only the first N queries (quick runs)")
    p_eval.add_argument("--chunk-tokens", type=int, default=None,
                        help="chunk budget in model tokens (default: 256, within the model's window)")
    p_eval.add_argument("--overlap-tokens", type=int, default=None,
                        help="overlap between chunks in tokens (default: 32, whole sentences)")
    p_eval.add_argument("--index", default=None, help="index folder to build or reuse (default: a temporary one)")
    add_model_options(p_eval, model_help=(
        "M3E alias, hub id or local folder (default: $M3E_MODEL, else the model recorded in a reused --index, "
        "else m3e-base)"))
    p_eval.add_argument("--json", action="store_true", help='print {"mode": {"metric": value}} as JSON on stdout')
    p_eval.add_argument("--reranker", default=None,
                        help=RERANKER_HELP + "; every mode is then scored as MODE and MODE+rerank")
    p_eval.add_argument("--rerank-top-n", type=int, default=None,
                        help="chunks of the first stage given to the reranker (default: all fetched)")
    p_eval.add_argument("--granularity", default="paragraph", choices=["paragraph", "document"],
                        help="SQuAD corpus passages: paragraphs, or each article's paragraphs joined (long documents)")
    p_eval.add_argument("--context-budgets", default=None, metavar="B1,B2,...",
                        help="also score answer-in-context recall at these token budgets (e.g. 256,512,1024,2048): "
                        "each mode's top-k pieces and the pipeline's context(), SQuAD sets with answer offsets")
    p_eval.add_argument(
        "--compare", default=None, metavar="A,B[;C,D]",
        help="paired per-query comparison of MRR@k, B against A (wins, losses, bootstrap 95%% CI of B - A); "
        "default: hybrid against dense, and each MODE+rerank against MODE, where evaluated",
    )


def _eval_defaults(pairs: str) -> dict[str, Any]:
    """What ``m3e-rag eval --pairs PAIRS`` parses to: the values the other eval options are checked against."""
    parser = Parser(prog="m3e-rag eval", description=_DESCRIPTION)
    _add_eval_arguments(parser)
    return vars(parser.parse_args(["--pairs", pairs]))


def cmd_eval(args: argparse.Namespace) -> int:
    """``m3e-rag eval``: the metrics table (or JSON) per mode, and the paired comparisons."""
    import tempfile

    from m3e_rag.evaluate.context_recall import parse_budgets, require_answers
    from m3e_rag.evaluate.tasks import load_task
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
    args.budgets = parse_budgets(args.context_budgets) if args.context_budgets is not None else None
    task = load_task(args.queries, args.corpus, granularity=args.granularity).limit(args.limit)
    if args.budgets is not None:
        require_answers(task)
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
    from m3e_rag.cli.progress import StageBars

    progress = StageBars("eval", {"index": ("index", "chunk"), "encode": ("embed queries", "query")}, unit="query")
    try:
        report = evaluate(task, rag, modes, k=args.k, progress=progress, reranker=args.reranker,
                          rerank_top_n=args.rerank_top_n)
    finally:
        progress.close()
    comparisons = [report.compare(a, b) for a, b in args.compare_pairs]
    context = None
    if args.budgets is not None:
        from m3e_rag.evaluate.context_run import evaluate_context

        try:
            context = evaluate_context(task, rag, args.budgets, modes=modes, k=args.k, progress=progress)
        finally:
            progress.close()
    if args.json:
        data: dict[str, Any] = dict(report.to_dict())
        if args.compare is not None:
            data["paired"] = [c.to_dict() for c in comparisons]
        if context is not None:
            data["context"] = context.to_dict()
        print_json(data)
    else:
        out(report.format_table())
        if comparisons:
            out("paired per query (bootstrap 95% CI of the mean difference; an interval holding 0 is noise):")
            for comparison in comparisons:
                out("  " + comparison.format())
        if context is not None:
            out(context.format_table())
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


def cmd_eval_pairs(args: argparse.Namespace) -> int:
    """``m3e-rag eval --pairs FILE``: correlations and threshold accuracy of one model."""
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.evaluate.pairs import evaluate_pairs, load_pairs

    # Every other eval option belongs to retrieval evaluation: refuse any that was set, by name.
    defaults = _eval_defaults(str(args.pairs))
    allowed = {"pairs", "threshold", "prompt", "limit", "model", "device", "backend", "json", "verbose", "command"}
    given = [("-" if len(dest) == 1 else "--") + dest.replace("_", "-")
             for dest, value in vars(args).items() if dest not in allowed and value != defaults.get(dest)]
    if given:
        raise InputError(
            f"{', '.join(given)} belong to retrieval evaluation; with --pairs only --model, --device, --backend, "
            "--limit, --threshold, --prompt and --json apply: leave the others out (or run them separately)."
        )
    pairs = load_pairs(args.pairs).limit(args.limit)
    encoder = M3EEncoder(args.model, device=args.device, backend=args.backend)
    bar: Any = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(pairs.pairs), unit="pair", desc="pairs", file=sys.stderr, leave=False)
    log = logging.getLogger("m3e_rag.cli")

    def progress(done: int, total: int) -> None:
        log.info("pairs: %d/%d", done, total)
        if bar is not None:
            bar.update(done - bar.n)

    try:
        report = evaluate_pairs(pairs, encoder, prompt=args.prompt, threshold=args.threshold, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json(report.to_dict())
    else:
        out(report.format_table())
    return 0


EVAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"eval": cmd_eval}
