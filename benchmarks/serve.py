"""Embedding service throughput and latency: m3e-rag serve vs infinity-emb (defaults and its CPU setting).

Side by side in one run, on one machine, against the same model folder (servers: see
``benchmarks/_serve_servers.py``): ``m3e-rag serve`` with its defaults and with ``--backend onnx-int8``,
infinity-emb with its defaults (torch) and with the setting it recommends for CPU (``--engine optimum``
over a quantized ONNX file; also over the fp32 file), optionally a naive FastAPI + sentence-transformers
endpoint and the same ``m3e-rag serve`` from an older checkout (``--baseline-tree``: before/after).

A benchmark that cannot flatter us:

- it refuses to run on a busy machine: the 1-minute load average must fall below ``--max-load`` (default
  0.75 per CPU) before any server starts (it waits up to ``--wait-quiet`` seconds); ``--force-busy`` runs
  anyway and the JSON says so (``forced_busy``);
- the load generator (this process, :mod:`_serve_load`) is pinned to the last CPU and every server may use
  every CPU, the same for each; the generator's own CPU seconds and the load average are kept per cell;
- every cell runs ``--repeats`` times (default 3), the servers' order rotating each time; the table gives the
  median and the spread (min-max), ratios are of medians;
- the ``32x32+1`` cell adds one client sending one-text requests while 32 clients send 32 texts each: the
  small request's p99 under big-request load.

Requests hold 1 text or 32 texts (short queries, 5-20 characters or words: chat apps embed short chunks and
questions). Model: the m3e-base shape with random weights (speed does not depend on weight values); the
bilingual stand-in (multilingual-e5-small) with ``--models``. Figures are the service's, not M3E quality.

Run on a quiet machine (nothing else running; results in benchmarks/results/serve.json)::

    .venv/bin/python benchmarks/serve.py                                   # the grid, 3 repeats
    .venv/bin/python benchmarks/serve.py --baseline-tree /tmp/before      # plus the older checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402
import _measure as M  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _serve_load import pin_to_last_cpu, run_cell  # noqa: E402
from _serve_servers import (  # noqa: E402
    INFINITY_KINDS,
    INFINITY_PINS,
    INFINITY_SPEC,
    Server,
    all_cpus,
    ensure_infinity,
    free_port,
    infinity_versions,
    start_server,
)

__all__ = ["Server", "free_port", "log_dir", "run_cell", "start_server"]

RESULTS = REPO / "benchmarks" / "results" / "serve.json"
DEFAULT_SERVERS = "m3e-rag,m3e-rag-int8,m3e-rag-int8-fast,infinity,infinity-onnx,infinity-onnx-int8"
DEFAULT_GRID = "1x1,1x32,32x1,32x32,32x32+1"


def log_dir() -> Path:
    """Where the servers' logs go."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / "m3e-rag-serve-bench-logs"


def wait_quiet(max_load: float, wait_s: float) -> tuple[bool, list[float] | None]:
    """Wait up to ``wait_s`` for the 1-minute load average to fall below ``max_load``; (quiet?, last reading)."""
    deadline = time.monotonic() + wait_s
    while True:
        load = M.load_average()
        if load is None or load[0] < max_load:
            return True, load
        if time.monotonic() >= deadline:
            return False, load
        time.sleep(10)


def parse_grid(spec: str) -> list[tuple[int, int, bool]]:
    """``"1x1,32x32+1"`` -> [(texts, clients, probe)]."""
    cells = []
    for cell in spec.split(","):
        probe = cell.endswith("+1")
        size, conc = cell.removesuffix("+1").split("x")
        cells.append((int(size), int(conc), probe))
    return cells


def cell_name(size: int, conc: int, probe: bool) -> str:
    return f"{size}x{conc}{'+1' if probe else ''}"


def start_all(kinds: list[str], model_dir: Path, infinity: Path | None, args: argparse.Namespace,
              errors: list[dict[str, Any]], model_name: str) -> dict[str, Server]:
    """Start every server of the run on ``model_dir`` and warm each up; the ones that failed go to ``errors``."""
    logs = log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    variants = dict(v.split("=", 1) for v in args.variant)
    running: dict[str, Server] = {}
    for kind in kinds:
        base = "m3e-rag" if kind.removeprefix("m3e-rag-") in variants else kind
        server = start_server(base, model_dir, infinity, logs, extra=variants.get(kind.removeprefix("m3e-rag-"),
                              "").split(), baseline_tree=args.baseline_tree)
        server.name = kind
        try:
            ready_s = server.wait_ready()
        except RuntimeError as exc:
            server.stop()
            errors.append({"model": model_name, "server": kind, "error": str(exc)[-800:]})
            print(f"{kind} failed: {exc}", file=sys.stderr)
            continue
        running[kind] = server
        print(f"{kind} on {model_name}: ready in {ready_s:.0f} s", file=sys.stderr)
    pool = _corpus.short_queries(args.data, 512, seed=7)
    for server in running.values():  # warm-up: lazy initialisations, first-batch effects, oneDNN packing
        for size in (1, 32):
            run_cell(server.url, "bench", pool, size, 1, 0.0)
        run_cell(server.url, "bench", pool, 32, 8, 2.0)
    return running


def fidelity(running: dict[str, Server], pool: list[str], reference: str = "m3e-rag") -> dict[str, Any]:
    """Each server's vectors of 64 of the texts against the reference server's (fp32 torch): cosine min/mean."""
    texts = pool[:64]
    vectors = {}
    for kind, server in running.items():
        data = httpx.post(server.url, json={"input": texts, "model": "bench"}, timeout=600).json()["data"]
        rows = np.asarray([d["embedding"] for d in sorted(data, key=lambda d: d["index"])], dtype=np.float64)
        vectors[kind] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    if reference not in vectors:
        return {}
    out = {}
    for kind, rows in vectors.items():
        cos = (rows * vectors[reference]).sum(axis=1)
        out[kind] = {"cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5)}
    return out


def encoder_rows(model_dir: Path, data: Path | None) -> dict[str, Any]:
    """The encoders alone on the same texts, in a process of their own with every CPU (see the script)."""
    argv = [sys.executable, str(REPO / "benchmarks" / "_serve_encoder_rows.py"), str(model_dir)]
    argv += ["--data", str(data)] if data else []
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, preexec_fn=all_cpus)  # noqa: PLW1509
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of a cell's repeated runs."""
    tps = [r["texts_per_s"] for r in runs if r.get("texts_per_s")]
    out: dict[str, Any] = {
        "texts_per_s": round(statistics.median(tps), 2) if tps else None,
        "texts_per_s_min": min(tps, default=None), "texts_per_s_max": max(tps, default=None),
        "p50_ms": _median(r.get("p50_ms") for r in runs), "p99_ms": _median(r.get("p99_ms") for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "loadavg_1min": [r["loadavg"][0] if r.get("loadavg") else None for r in runs],
        "generator_cpu_share": _median(r["generator_cpu_s"] / r["wall_s"] for r in runs if r.get("wall_s")),
    }
    if any("probe" in r for r in runs):
        out["probe_p50_ms"] = _median(r["probe"].get("p50_ms") for r in runs if "probe" in r)
        out["probe_p99_ms"] = _median(r["probe"].get("p99_ms") for r in runs if "probe" in r)
        out["probe_p99_ms_max"] = max((r["probe"].get("p99_ms") or 0 for r in runs if "probe" in r), default=None)
    return out


def _median(values: Any) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 3) if kept else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="issuing time per cell and run (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of every cell (default 3; median and spread)")
    ap.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma-separated (default {DEFAULT_SERVERS}; "
                    "also naive, m3e-rag-before)")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="an older checkout: adds m3e-rag-before, the same serve command run from that tree")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="also run m3e-rag serve with extra arguments, e.g. --variant 'bs32=--batch-size 32'")
    ap.add_argument("--models", default="m3e-base-shape", help="comma-separated: m3e-base-shape, bilingual-standin")
    ap.add_argument("--grid", default=DEFAULT_GRID, help=f"cells TEXTSxCLIENTS[+1] (default {DEFAULT_GRID}; +1: a "
                    "one-text client runs beside the load)")
    ap.add_argument("--max-load", type=float, default=0.75 * (os.cpu_count() or 2),
                    help="refuse to start while the 1-minute load average is at or above this (default 0.75 per CPU)")
    ap.add_argument("--wait-quiet", type=float, default=180.0, help="seconds to wait for a quiet machine (180)")
    ap.add_argument("--force-busy", action="store_true", help="run on a busy machine anyway (recorded in the JSON)")
    ap.add_argument("--encoder-rows", action="store_true",
                    help="first measure the encoders alone on the same texts (benchmarks/_serve_encoder_rows.py)")
    ap.add_argument("--data", type=Path, default=None, help="shared evaluation data for real query texts")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    quiet, load_before = wait_quiet(args.max_load, args.wait_quiet)
    if not quiet and not args.force_busy:
        sys.exit(f"error: the machine is busy (1-minute load average {load_before[0] if load_before else '?'} >= "
                 f"{args.max_load}) after waiting {args.wait_quiet:.0f} s: figures taken now would flatter whichever "
                 "server ran in a quiet moment. Stop the other jobs, or pass --force-busy (recorded in the JSON).")
    generator_cpu = pin_to_last_cpu()
    from tests.support import standins

    builders = {"m3e-base-shape": lambda: standins.m3e_shape("base"), "bilingual-standin": standins.bilingual_standin}
    grid = parse_grid(args.grid)
    kinds = args.servers.split(",") + [f"m3e-rag-{v.split('=', 1)[0]}" for v in args.variant]
    if args.baseline_tree is not None and "m3e-rag-before" not in kinds:
        kinds.append("m3e-rag-before")
    infinity, why_not = None, None
    if any(k in INFINITY_KINDS for k in kinds):
        infinity, why_not = ensure_infinity()
        if infinity is None:
            kinds = [k for k in kinds if k not in INFINITY_KINDS]
            print(f"infinity-emb unavailable: {why_not}", file=sys.stderr)
    pool = _corpus.short_queries(args.data, 512, seed=7)
    started = time.time()
    runs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    meta = {"command": " ".join(["python", "benchmarks/serve.py", *sys.argv[1:]]), "machine": M.machine(),
            "versions": M.versions(), "quiet_before_run": quiet, "loadavg_before_servers": load_before,
            "forced_busy": bool(args.force_busy and not quiet), "max_load": args.max_load,
            "generator_pinned_to_cpu": generator_cpu,
            "infinity": {"spec": INFINITY_SPEC, "pins": INFINITY_PINS, "available": infinity is not None,
                         "why_not": why_not, "versions": infinity_versions() if infinity else None},
            "settings": {"seconds_per_run": args.seconds, "repeats": args.repeats, "grid": args.grid,
                         "variants": args.variant, "baseline_tree": str(args.baseline_tree or ""),
                         "texts": "short queries, 5-20 characters (zh) or words (en)"}}
    for model_name in args.models.split(","):
        if args.encoder_rows:
            meta.setdefault("encoder_rows", {})[model_name] = encoder_rows(builders[model_name](), args.data)
            print(json.dumps(meta["encoder_rows"][model_name]), file=sys.stderr)
        running = start_all(kinds, builders[model_name](), infinity, args, errors, model_name)
        meta.setdefault("fidelity_vs_m3e_rag_fp32", {})[model_name] = fidelity(running, pool)
        print(json.dumps(meta["fidelity_vs_m3e_rag_fp32"][model_name]), file=sys.stderr)
        try:
            turn = 0
            for rep in range(args.repeats):
                for size, conc, probe in grid:
                    order = list(running)[turn % max(1, len(running)):] + list(running)[: turn % max(1, len(running))]
                    turn += 1
                    for kind in order:
                        res = run_cell(running[kind].url, "bench", pool, size, conc, args.seconds, probe=probe)
                        run = {"model": model_name, "server": kind, "cell": cell_name(size, conc, probe),
                               "repeat": rep, **res}
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr)
                        write_report(args.out, meta, runs, errors, started)
        finally:
            for server in running.values():
                server.stop()
    report = write_report(args.out, meta, runs, errors, started)
    print(format_table(report))
    print(f"\nwritten to {args.out}")


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, server, cell): the summary of its runs."""
    keys = list(dict.fromkeys((r["model"], r["server"], r["cell"]) for r in runs))
    return [{"model": m, "server": s, "cell": c,
             **summarise([r for r in runs if (r["model"], r["server"], r["cell"]) == (m, s, c)])}
            for m, s, c in keys]


def ratios(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each m3e-rag server's median texts/s over every other server's, per (model, cell)."""
    index = {(c["model"], c["server"], c["cell"]): c for c in cells}
    out = []
    for (model, server, cell), ours in index.items():
        if not server.startswith("m3e-rag") or not ours["texts_per_s"]:
            continue
        row: dict[str, Any] = {"model": model, "server": server, "cell": cell}
        for (m2, other, c2), theirs in index.items():
            if (m2, c2) == (model, cell) and other != server and theirs["texts_per_s"]:
                row[f"x_{other}"] = round(ours["texts_per_s"] / theirs["texts_per_s"], 2)
        out.append(row)
    return out


def targets(cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 25's targets, read off the medians."""
    c32 = [r for r in rows if r["cell"].split("x")[1].split("+")[0] == "32" and r["server"].startswith("m3e-rag-int8")]
    return {
        "c32_ge_1.3x_every_infinity": {f"{r['server']}/{r['cell']}": {k: v for k, v in r.items() if k.startswith(
            "x_infinity")} for r in c32},
        "probe_p99_le_2000ms": {f"{c['server']}/{c['cell']}": c.get("probe_p99_ms") for c in cells
                                if "probe_p99_ms" in c and c["server"].startswith("m3e-rag")},
    }


def write_report(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], errors: list[dict[str, Any]],
                 started: float) -> dict[str, Any]:
    cells = aggregate(runs)
    rows = ratios(cells)
    report = {"benchmark": "serve",
              "note": "Stand-in weights (m3e-base shape, random): service figures, not M3E quality. One closed-loop "
                      "load generator (asyncio + httpx) pinned to the last CPU, on the same machine as the servers.",
              **meta, "cells": cells, "ratios": rows, "targets": targets(cells, rows), "errors": errors,
              "runs": runs, "elapsed_s": round(time.time() - started, 1), "loadavg_at_end": M.load_average()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'model':15} {'server':20} {'cell':8} {'texts/s':>8} {'spread':>13} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'1-text p99':>10} {'load':>16} {'gen cpu':>7}"]
    for c in report["cells"]:
        spread = f"{c['texts_per_s_min']}-{c['texts_per_s_max']}"
        load = ",".join(f"{x:.1f}" for x in c["loadavg_1min"] if x is not None)
        lines.append(f"{c['model']:15} {c['server']:20} {c['cell']:8} {c['texts_per_s']!s:>8} {spread:>13} "
                     f"{c['p50_ms']!s:>8} {c['p99_ms']!s:>8} {c.get('probe_p99_ms', '-')!s:>10} {load:>16} "
                     f"{c['generator_cpu_share']!s:>7}")
    lines.append("")
    for r in report["ratios"]:
        xs = "  ".join(f"{k[2:]} {v}x" for k, v in r.items() if k.startswith("x_"))
        lines.append(f"{r['server']:20} {r['cell']:8} {xs}")
    for model, rows in report.get("fidelity_vs_m3e_rag_fp32", {}).items():
        for kind, f in rows.items():
            lines.append(f"fidelity {model} {kind:20} cosine vs m3e-rag fp32: min {f['cosine_min']} mean "
                         f"{f['cosine_mean']}")
    for e in report["errors"]:
        lines.append(f"FAILED {e['server']}: {e['error'][:120]}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
