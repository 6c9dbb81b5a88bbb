"""The ``m3e-rag`` subcommands for choosing a model: ``models``, ``similarity``, ``compare``.

Kept out of :mod:`m3e_rag.cli.dispatch` so that file only wires them in (``eval --pairs`` lives with ``eval``, in
:mod:`m3e_rag.cli.evaluate`). Nothing heavy is imported here: torch, Chroma and sentence-transformers load
inside the handlers that need them.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

from m3e_rag.cli.options import BACKEND_HELP, DEVICE_HELP, add_model_options
from m3e_rag.cli.output import out, print_json
from m3e_rag.encode.options import BACKENDS
from m3e_rag.errors import InputError

__all__ = ["add_choose_commands", "CHOOSE_COMMANDS"]


def _width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _split(value: str, flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise InputError(f"{flag} is empty; give a comma-separated list, e.g. {flag} m3e-small,m3e-base.")
    return items


def add_choose_commands(sub: Any) -> None:
    """Add the ``models``, ``similarity`` and ``compare`` subcommands to the ``m3e-rag`` parser."""
    p_models = sub.add_parser(
        "models", help="list the models known by name (dimension, window, outputs, prompts, licence)"
    )
    p_models.add_argument("folders", nargs="*", metavar="FOLDER",
                          help="model folders to describe too (outputs read from their files)")
    p_models.add_argument("--json", action="store_true", help="print JSON on stdout")

    p_sim = sub.add_parser(
        "similarity", help="cosine similarity of two sentences (s2s)",
        description="Embed both sentences alike (document-side prompt, never a retrieval instruction) and print "
        "their cosine. M3E's cosines cluster high: compare scores with each other, not with a fixed threshold.",
    )
    p_sim.add_argument("sentence1", help="the first sentence")
    p_sim.add_argument("sentence2", help="the second sentence")
    add_model_options(p_sim, model_help="M3E alias, hub id or local folder (default: $M3E_MODEL, else m3e-base)")
    p_sim.add_argument("--prompt", default=None, help="prompt for both sentences (default: the document prompt)")
    p_sim.add_argument("--json", action="store_true", help="print JSON on stdout")

    p_cmp = sub.add_parser(
        "compare",
        help="compare models on your data: retrieval per mode, pair Spearman, speed, memory, licence",
        description="Run the same evaluation as `m3e-rag eval` for each model, each in its own index under "
        "--cache-dir, and print one table. Resumable: run it again after an interruption and finished models "
        "are read back, finished indexes reused.",
    )
    p_cmp.add_argument("--models", required=True, help="comma-separated aliases, hub ids or folders")
    p_cmp.add_argument("--queries", required=True, help="SQuAD file, or JSONL queries with relevant_ids")
    p_cmp.add_argument("--corpus", default=None, help="SQuAD file or JSONL {id, text} corpus (default: --queries)")
    p_cmp.add_argument("--pairs", default=None, help="sentence-pair file also scored for each model")
    p_cmp.add_argument("--modes", default="dense,sparse,hybrid",
                       help="comma-separated (default: dense,sparse,hybrid); sparse/hybrid use a model's own learned "
                            "sparse output when it has one (BGE-M3), BM25 otherwise; also sparse-bm25, hybrid-bm25 "
                            "(BM25 by name) and hybrid+colbert (ColBERT second stage, BGE-M3's heads)")
    p_cmp.add_argument("-k", type=int, default=10, help="metric cutoff (default 10)")
    p_cmp.add_argument("--limit", type=int, default=None, help="score only the first N queries (quick runs)")
    p_cmp.add_argument("--pairs-limit", type=int, default=None, help="score only the first N pairs")
    p_cmp.add_argument("--latency-queries", type=int, default=50, help="single queries timed (default 50)")
    p_cmp.add_argument("--chunk-tokens", type=int, default=None, help="chunk budget in model tokens")
    p_cmp.add_argument("--overlap-tokens", type=int, default=None, help="overlap between chunks in tokens")
    p_cmp.add_argument("--device", default=None, help=DEVICE_HELP)
    p_cmp.add_argument("--backend", default="torch", choices=list(BACKENDS),
                       help=BACKEND_HELP + " (default: %(default)s)")
    p_cmp.add_argument("--cache-dir", default=None, help="indexes and results (default: .m3e_compare)")
    p_cmp.add_argument("--fresh", action="store_true", help="measure again even if a result is cached")
    p_cmp.add_argument("--in-process", action="store_true",
                       help="run every model in this process (faster start; RSS is then the process's peak)")
    p_cmp.add_argument("--plot", default=None, help="also write a PNG of quality against speed (needs m3e-rag[plot])")
    p_cmp.add_argument("--plot-mode", default=None, help="mode whose nDCG@k the plot shows (default: the first)")
    p_cmp.add_argument("--json", action="store_true", help="print JSON on stdout")


def _folder_rows(folders: list[str]) -> list[dict[str, Any]]:
    """What ``m3e-rag models FOLDER...`` says of each folder: its outputs (by its files), dim and window."""
    from pathlib import Path

    from m3e_rag.encode.bge_m3 import outputs_of
    from m3e_rag.encode.light import light_shape

    rows = []
    for name in folders:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise InputError(f"{name!r} is not a model folder; give the path of a local model folder.")
        dim, window = light_shape(folder)
        rows.append({"path": str(folder), "dim": dim, "max_tokens": window, "outputs": list(outputs_of(folder))})
    return rows


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out("  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out("  ".join("-" * w for w in widths))


def cmd_models(args: argparse.Namespace) -> int:
    """``m3e-rag models [FOLDER...]``: the registry (and any folders given), as a table or JSON."""
    from m3e_rag.encode.registry import MODELS

    specs = list(MODELS.values())
    folders = _folder_rows(list(args.folders))
    if args.json:
        print_json([spec.to_dict() for spec in specs] + folders)
        return 0
    header = ["model", "hub id", "dim", "window", "params", "languages", "outputs", "query prompt", "licence"]
    _print_table([header] + [
        [s.alias, s.hub_id, str(s.dim), str(s.max_tokens), f"{s.params_millions}M", ",".join(s.languages),
         "+".join(s.outputs), s.query_prompt or "-", s.licence]
        for s in specs
    ])
    out("Facts from the models' cards (not measured here); licence terms: each model card "
        "(`m3e-rag models --json` has the links). Any other sentence-transformers model works too.")
    if folders:
        out("")
        _print_table([["folder", "dim", "window", "outputs"]] + [
            [f["path"], str(f["dim"] or "?"), str(f["max_tokens"] or "?"), "+".join(f["outputs"])] for f in folders
        ])
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """``m3e-rag similarity A B``: one cosine."""
    from m3e_rag.encode.encoder import M3EEncoder

    encoder = M3EEncoder(args.model, device=args.device, backend=args.backend)
    score = encoder.similarity(args.sentence1, args.sentence2, prompt=args.prompt)
    if args.json:
        print_json({"model": encoder.model_name, "sentence1": args.sentence1, "sentence2": args.sentence2,
                     "cosine": score, "prompt": encoder.document_prompt if args.prompt is None else args.prompt})
    else:
        out(f"{score:.4f}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``m3e-rag compare``: the comparison table (and plot); exit 2 when a model failed."""
    from m3e_rag.evaluate.compare import DEFAULT_CACHE_DIR, compare_models
    from m3e_rag.evaluate.compare_cache import CompareSettings
    from m3e_rag.evaluate.compare_report import plot_comparison

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 - checked before hours of work, not after
        except ImportError as exc:
            from m3e_rag.errors import MissingExtraError

            raise MissingExtraError("matplotlib", "plot", "--plot") from exc
    settings = CompareSettings(
        modes=tuple(_split(args.modes, "--modes")),
        k=args.k,
        limit=args.limit,
        chunk_tokens=args.chunk_tokens,
        overlap_tokens=args.overlap_tokens,
        backend=args.backend,
        device=args.device,
        latency_queries=args.latency_queries,
        pairs_limit=args.pairs_limit,
    )
    comparison = compare_models(
        _split(args.models, "--models"),
        args.queries,
        args.corpus,
        pairs=args.pairs,
        settings=settings,
        cache_dir=args.cache_dir or DEFAULT_CACHE_DIR,
        fresh=args.fresh,
        isolate=not args.in_process,
        verbose=args.verbose,
    )
    plot_path = None
    if args.plot is not None and len(comparison.errors) < len(comparison.results):
        plot_path = plot_comparison(comparison, args.plot, mode=args.plot_mode)
    if args.json:
        data = comparison.to_dict()
        data["plot"] = str(plot_path) if plot_path else None
        print_json(data)
    else:
        out(comparison.format_table())
        if plot_path is not None:
            out(f"plot: {plot_path}")
    for model, error in comparison.errors.items():
        sys.stderr.write(f"error: {model}: {error}\n")
    return 2 if comparison.errors else 0


CHOOSE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": cmd_models,
    "similarity": cmd_similarity,
    "compare": cmd_compare,
}
