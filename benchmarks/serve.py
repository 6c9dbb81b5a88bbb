"""Embedding service throughput and latency: m3e-rag serve vs infinity-emb vs a naive FastAPI baseline.

Side by side in one run, on one machine, against the same model folder:

- ``m3e-rag``: ``m3e-rag serve`` (dynamic batching, one model worker), default settings;
- ``infinity``: ``infinity-emb`` v2 (the anchor a user would pick instead), installed by this script
  into its own venv ``benchmarks/.venv-infinity`` (torch 2.13.0 CPU wheel first, then
  ``infinity-emb[server,torch]``), never a dependency of m3e-rag;
- ``naive``: ``benchmarks/_naive_server.py``, a FastAPI route calling ``SentenceTransformer.encode`` per
  request (what the FastGPT m3e image does).

One load generator (asyncio + httpx, this process) drives each server in a closed loop: ``C``
concurrent clients each send a request, wait for the answer, and send the next, for ``--seconds``;
the requests still in flight are then awaited. Throughput = texts answered / wall time; latency
percentiles over every request. Requests hold 1 text (short queries, 5-20 characters or words) or
32 texts (the same kind of short texts: chat apps embed short chunks and questions; 256-token
passages at concurrency 32 would need minutes per cell on 2 cores). Every response is checked
(status 200, one vector per text).

Models: the m3e-base shape with random weights (speed does not depend on weight values) and the
bilingual stand-in (multilingual-e5-small, 12 layers, 384 hidden). Figures are the service's, on
stand-in weights, not M3E quality figures.

Run (heavy on a shared 2-core machine; results in benchmarks/results/serve.json)::

    nice -n 10 .venv/bin/python benchmarks/serve.py              # full grid
    nice -n 10 .venv/bin/python benchmarks/serve.py --quick      # m3e-base shape only, fewer cells
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
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

INFINITY_VENV = REPO / "benchmarks" / ".venv-infinity"
INFINITY_SPEC = "infinity-emb[server,torch]==0.0.78"
RESULTS = REPO / "benchmarks" / "results" / "serve.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_infinity() -> tuple[Path | None, str | None]:
    """The infinity_emb executable (installing it into its own venv if needed), or None and why not."""
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    if exe.exists():
        return exe, None
    steps = [
        [sys.executable, "-m", "venv", str(INFINITY_VENV)],
        [str(INFINITY_VENV / "bin" / "pip"), "install", "torch==2.13.0"],  # the CPU wheel, before anything pulls CUDA
        [str(INFINITY_VENV / "bin" / "pip"), "install", INFINITY_SPEC],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {proc.stderr.strip()[-600:]}"
    return (exe, None) if exe.exists() else (None, "infinity-emb installed but has no infinity_emb command")


class Server:
    """One server subprocess on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], port: int, path: str, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}{path}"
        self.health = f"http://127.0.0.1:{port}/health"
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log.read_text()[-1500:]}")
            try:
                if httpx.get(self.health, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready after {timeout} s: {self.log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


async def run_cell(
    url: str, model: str, pool: list[str], size: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each request ``size`` texts, for ``seconds``."""
    latencies: list[float] = []
    texts_done = 0
    errors: list[str] = []
    stop_at = 0.0
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(i: int) -> None:
            nonlocal texts_done
            start = (i * size) % len(pool)
            batch = [pool[(start + j) % len(pool)] for j in range(size)]
            t0 = time.perf_counter()
            r = await client.post(url, json={"input": batch, "model": model})
            dt = time.perf_counter() - t0
            if r.status_code != 200 or len(r.json()["data"]) != size:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                return
            latencies.append(dt)
            texts_done += size

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop_at:
                await one(i)
                i += concurrency

        await one(0)  # warm-up (not counted); every server was warmed up once before its first cell
        latencies.clear()
        texts_done = 0
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t_start
    return {
        "requests": len(latencies),
        "texts": texts_done,
        "wall_s": round(wall, 2),
        "texts_per_s": round(texts_done / wall, 2) if wall else None,
        "p50_ms": round(1000 * M.percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(1000 * M.percentile(latencies, 99), 1) if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def start_server(kind: str, model_dir: Path, infinity: Path | None, logs: Path, backend: str,
                 extra: list[str]) -> Server:
    port = _free_port()
    log = logs / f"{kind}-{model_dir.name}.log"
    if kind.startswith("m3e-rag"):
        argv = [sys.executable, "-m", "m3e_rag", "serve", "--model", str(model_dir), "--port", str(port),
                "--backend", backend, "--served-model-name", "bench", *extra]
        return Server(kind, argv, port, "/v1/embeddings", log)
    if kind == "naive":
        argv = [sys.executable, str(REPO / "benchmarks" / "_naive_server.py"), str(model_dir), str(port)]
        return Server(kind, argv, port, "/v1/embeddings", log)
    assert infinity is not None
    argv = [str(infinity), "v2", "--model-id", str(model_dir), "--served-model-name", "bench", "--port", str(port),
            "--host", "127.0.0.1", "--device", "cpu", "--engine", "torch", "--batch-size", "32",
            "--url-prefix", "/v1", "--no-model-warmup", "--log-level", "warning"]
    return Server(kind, argv, port, "/v1/embeddings", log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="issuing time per cell (default 8)")
    ap.add_argument("--quick", action="store_true", help="m3e-base shape only, concurrency 1 and 32")
    ap.add_argument("--servers", default="m3e-rag,infinity,naive")
    ap.add_argument("--backend", default="torch", help="m3e-rag serve --backend (default torch)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="also run m3e-rag serve with extra arguments, e.g. --variant 'bs8=--batch-size 8'")
    ap.add_argument("--models", default=None, help="comma-separated subset of m3e-base-shape,bilingual-standin")
    ap.add_argument("--grid", default=None,
                    help="cells as TEXTSxCONCURRENCY, comma-separated (default 1x1,1x8,1x32,32x1,32x8,32x32)")
    ap.add_argument("--from-log", type=Path, default=None,
                    help="also report the cells (JSON lines) of an earlier, interrupted run's stderr log")
    ap.add_argument("--data", type=Path, default=None, help="shared evaluation data for real query texts")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from tests.support import standins

    wanted = args.models.split(",") if args.models else (["m3e-base-shape"] if args.quick else
                                                            ["m3e-base-shape", "bilingual-standin"])
    builders = {"m3e-base-shape": lambda: standins.m3e_shape("base"), "bilingual-standin": standins.bilingual_standin}
    models = {name: builders[name]() for name in wanted}
    default_grid = "1x1,1x32,32x1,32x32" if args.quick else "1x1,1x8,1x32,32x1,32x8,32x32"
    grid = [(int(a), int(b)) for a, b in (cell.split("x") for cell in (args.grid or default_grid).split(","))]
    sizes = sorted({size for size, _ in grid})
    variants = dict(v.split("=", 1) for v in args.variant)
    servers = args.servers.split(",") + [f"m3e-rag-{name}" for name in variants]
    infinity, why_not = (None, None)
    if "infinity" in servers:
        infinity, why_not = ensure_infinity()
        if infinity is None:
            servers.remove("infinity")
            print(f"infinity-emb unavailable: {why_not}", file=sys.stderr)
    pool = _corpus.short_queries(args.data, 512, seed=7)
    logs = _log_dir()
    logs.mkdir(parents=True, exist_ok=True)

    cells: list[dict[str, Any]] = []
    if args.from_log is not None:
        for line in args.from_log.read_text(encoding="utf-8").splitlines():
            if line.startswith("{") and '"server"' in line:
                cells.append({**json.loads(line), "from_log": str(args.from_log)})
    started = time.time()
    settings = {"seconds_per_cell": args.seconds, "grid": grid, "m3e_rag_backend": args.backend,
                "variants": variants, "texts": "short queries, 5-20 characters (zh) or words (en)"}
    write = lambda: write_report(args.out, cells, settings, infinity, why_not, started)  # noqa: E731
    for model_name, model_dir in models.items():
        # All servers of a model start together and are driven in turn, cell by cell (the order rotating),
        # so each comparison is made minutes apart at most on a machine whose load changes.
        running: dict[str, Server] = {}
        for kind in servers:
            server = start_server(kind, model_dir, infinity, logs, args.backend,
                                  variants.get(kind.removeprefix("m3e-rag-"), "").split())
            try:
                ready_s = server.wait_ready()
                running[kind] = server
                print(f"{kind} on {model_name}: ready in {ready_s:.0f} s", file=sys.stderr)
            except RuntimeError as exc:
                server.stop()
                cells.append({"model": model_name, "server": kind, "error": str(exc)[-800:]})
                print(f"{kind} failed: {exc}", file=sys.stderr)
        for server in running.values():  # warm-up: lazy initialisations and first-batch effects
            for size in sizes:
                for _ in range(3):
                    asyncio.run(run_cell(server.url, "bench", pool, size, 1, 0.0))
            asyncio.run(run_cell(server.url, "bench", pool, 1, 8, 0.5))
        try:
            turn = 0
            for size, conc in grid:
                kinds = list(running)
                kinds = kinds[turn % len(kinds):] + kinds[: turn % len(kinds)] if kinds else kinds
                turn += 1
                for kind in kinds:
                    res = asyncio.run(run_cell(running[kind].url, "bench", pool, size, conc, args.seconds))
                    cell = {"model": model_name, "server": kind, "texts_per_request": size, "concurrency": conc,
                            "loadavg": M.load_average(), **res}
                    cells.append(cell)
                    print(json.dumps(cell), file=sys.stderr)
                    write()  # after every cell: an interrupted run keeps what it measured
        finally:
            for server in running.values():
                server.stop()

    write()
    print(format_table(cells, _ratios(cells)))
    print(f"\nwritten to {args.out}")


def write_report(out: Path, cells: list[dict[str, Any]], settings: dict[str, Any], infinity: Path | None,
                 why_not: str | None, started: float) -> None:
    ratios = _ratios(cells)
    report = {
        "benchmark": "serve",
        "note": "Stand-in weights (m3e-base shape with random weights; multilingual-e5-small): service figures, "
                "not M3E quality. One closed-loop load generator (asyncio + httpx) on the same machine as the server.",
        "command": " ".join(["python", "benchmarks/serve.py", *sys.argv[1:]]),
        "machine": M.machine(),
        "versions": M.versions(),
        "infinity": {"spec": INFINITY_SPEC, "available": infinity is not None, "why_not": why_not},
        "settings": settings,
        "cells": cells,
        "ratios": ratios,
        "targets": _targets(ratios),
        "elapsed_s": round(time.time() - started, 1),
        "loadavg_at_end": M.load_average(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _ratios(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """m3e-rag's throughput over the others', and p50 latency ratio, per (model, size, concurrency)."""
    out = []
    index = {(c["model"], c["server"], c.get("texts_per_request"), c.get("concurrency")): c
             for c in cells if "error" not in c}
    for (model, server, size, conc), ours in index.items():
        if not server.startswith("m3e-rag"):
            continue
        row: dict[str, Any] = {"server": server, "model": model, "texts_per_request": size, "concurrency": conc}
        for other in ("infinity", "naive"):
            theirs = index.get((model, other, size, conc))
            if theirs and theirs.get("texts_per_s") and ours.get("texts_per_s"):
                row[f"throughput_x_{other}"] = round(ours["texts_per_s"] / theirs["texts_per_s"], 2)
                row[f"p50_ratio_{other}"] = round(ours["p50_ms"] / theirs["p50_ms"], 2)
        out.append(row)
    return out


def _key(row: dict[str, Any]) -> str:
    return f"{row['server']}/{row['model']}/{row['texts_per_request']} texts"


def _targets(ratios: list[dict[str, Any]]) -> dict[str, Any]:
    c32 = [r for r in ratios if r["concurrency"] == 32]
    c1 = [r for r in ratios if r["concurrency"] == 1]
    return {
        "c32_throughput_ge_1.3x_infinity": {_key(r): r.get("throughput_x_infinity") for r in c32},
        "c32_throughput_ge_3x_naive": {_key(r): r.get("throughput_x_naive") for r in c32},
        "c1_p50_le_infinity (ratio <= 1)": {_key(r): r.get("p50_ratio_infinity") for r in c1},
    }


def _log_dir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / "m3e-rag-serve-bench-logs"


def format_table(cells: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> str:
    lines = [f"{'model':18} {'server':12} {'texts/req':>9} {'conc':>4} {'texts/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'reqs':>5} {'err':>3}"]
    for c in cells:
        if "error" in c:
            lines.append(f"{c['model']:18} {c['server']:12} FAILED: {c['error'][:80]}")
            continue
        lines.append(f"{c['model']:18} {c['server']:12} {c['texts_per_request']:>9} {c['concurrency']:>4} "
                     f"{c['texts_per_s']:>9} {c['p50_ms']:>8} {c['p99_ms']:>8} {c['requests']:>5} {c['errors']:>3}")
    lines.append("")
    lines.append(f"{'model':18} {'server':12} {'texts/req':>9} {'conc':>4} {'x infinity':>10} {'x naive':>8} "
                 f"{'p50/inf':>8} {'p50/naive':>9}")
    for r in ratios:
        lines.append(f"{r['model']:18} {r['server']:12} {r['texts_per_request']:>9} {r['concurrency']:>4} "
                     f"{r.get('throughput_x_infinity', '-')!s:>10} {r.get('throughput_x_naive', '-')!s:>8} "
                     f"{r.get('p50_ratio_infinity', '-')!s:>8} {r.get('p50_ratio_naive', '-')!s:>9}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
