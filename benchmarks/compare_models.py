"""Model comparison on the shared evaluation data: CMRC 2018 (zh -> zh) and XQuAD (zh questions -> en paragraphs).

One command runs ``m3e_rag.evaluate.compare.compare_models`` on both tasks and prints one table per task::

    nice -n 10 .venv/bin/python benchmarks/compare_models.py --data ../shared/data

Default models are the offline stand-ins (no M3E/BGE weights here): the converted multilingual-e5-small
(``e5-standin``, real zh/en semantics) and all-MiniLM-L6-v2 (``minilm``, English only). Their figures are
figures of these stand-ins through the m3e-rag pipeline, NOT of M3E or BGE. With network or a local copy,
name the real models instead: ``--models m3e-small,m3e-base,bge-base-zh-v1.5``.

Resumable (indexes and finished results are cached under ``--cache-dir``); writes
``benchmarks/results/compare_models.json`` and one PNG per task (quality against speed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _measure as M  # noqa: E402

from m3e_rag.evaluate.compare import compare_models  # noqa: E402
from m3e_rag.evaluate.compare_cache import CompareSettings  # noqa: E402
from m3e_rag.evaluate.compare_report import plot_comparison  # noqa: E402

STANDINS = {"e5-standin": "bilingual_standin", "minilm": "minilm_path"}


def _model_paths(names: list[str]) -> list[str]:
    """Stand-in names become their folders (built once by tests/support/standins.py); others pass through."""
    from tests.support import standins

    return [str(getattr(standins, STANDINS[n])()) if n in STANDINS else n for n in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder with cmrc2018/ and xquad/")
    parser.add_argument("--models", default="e5-standin,minilm",
                        help="comma-separated: e5-standin, minilm, registry aliases, hub ids or folders")
    parser.add_argument("--tasks", default="cmrc2018,xquad-zh-en", help="comma-separated: cmrc2018, xquad-zh-en")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N queries of each task")
    parser.add_argument("--pairs", default=None, help="sentence-pair file scored for each model too")
    parser.add_argument("--pairs-limit", type=int, default=None)
    parser.add_argument("--modes", default="dense,sparse,hybrid")
    parser.add_argument("--latency-queries", type=int, default=50)
    parser.add_argument("--cache-dir", default=str(REPO / "benchmarks" / ".cache" / "compare"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "compare_models.json"))
    parser.add_argument("--in-process", action="store_true", help="no worker processes (RSS then shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    data = Path(args.data)
    all_tasks = {
        "cmrc2018": (data / "cmrc2018" / "cmrc2018_dev.json", None),
        "xquad-zh-en": (data / "xquad" / "xquad.zh.json", data / "xquad" / "xquad.en.json"),
    }
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = _model_paths(names)
    settings = CompareSettings(modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()), limit=args.limit,
                               latency_queries=args.latency_queries, pairs_limit=args.pairs_limit)
    out: dict = {"machine": M.machine(), "versions": M.versions(), "models": dict(zip(names, models, strict=True)),
                 "standins": {n: True for n in names if n in STANDINS}, "tasks": {}}
    started = time.perf_counter()
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        queries, corpus = all_tasks[task]
        comparison = compare_models(models, queries, corpus, pairs=args.pairs, settings=settings,
                                    cache_dir=Path(args.cache_dir) / task, isolate=not args.in_process)
        print(f"\n== {task} ==" + (" (stand-in models: pipeline figures, not M3E's)" if out["standins"] else ""))
        print(comparison.format_table())
        plot = Path(args.out).with_name(f"compare_models_{task}.png")
        try:
            plot_comparison(comparison, plot)
            print(f"plot: {plot}")
        except ImportError as exc:  # MissingExtraError: matplotlib not installed
            print(f"no plot: {exc}")
        out["tasks"][task] = comparison.to_dict()
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["loadavg_at_end"] = M.load_average()
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
