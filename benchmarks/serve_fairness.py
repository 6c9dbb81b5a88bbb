"""Small requests under big-request load: p50/p99 of a one-text request while big requests run.

Issue 24's figure ("a one-word embedding waits 148 s behind two 2,048-input requests"). One server at a time,
the same model folder: the current ``m3e-rag serve`` and, with ``--baseline-tree DIR`` (a checkout of an older
commit, e.g. ``git worktree add /tmp/before e7d6006``), the same command run from that tree, side by side in one
run. For ``--seconds``, closed-loop clients send big requests (``--big``, default 32 clients of 32 short texts)
while one client sends one text at a time; the table gives the small client's latency percentiles and the big
clients' texts/s, with the load average. Stand-in weights (the m3e-base shape, random): service figures only.

    .venv/bin/python benchmarks/serve_fairness.py --baseline-tree /tmp/before --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402
import _measure as M  # noqa: E402
from _serve_load import drive, run_cell  # noqa: E402
from _serve_servers import start_server  # noqa: E402
from serve import log_dir  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve_fairness.json"


async def _mixed(url: str, pool: list[str], seconds: float, size: int, clients: int) -> dict[str, Any]:
    big, small = await asyncio.gather(drive(url, "bench", pool, size, clients, seconds),
                                      drive(url, "bench", pool, 1, 1, seconds))
    return {"big": {"texts_per_request": size, "clients": clients, **big}, "small_1x1": small}


def main() -> None:
    """Measure each server in turn and print the table; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--big", default="32x32", help="the big requests, TEXTSxCLIENTS (default 32x32; 2048x2 is the "
                    "red team's 'two 2,048-input requests')")
    ap.add_argument("--baseline-tree", type=Path, default=None, help="checkout of an older commit to compare")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from tests.support import standins

    model = standins.m3e_shape("base")
    pool = _corpus.short_queries(None, 512, seed=7)
    logs = log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    trees = {"current": None} | ({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})
    rows: list[dict[str, Any]] = []
    for name, tree in trees.items():
        server = start_server("m3e-rag" if tree is None else "m3e-rag-before", model, None, logs, baseline_tree=tree)
        try:
            server.wait_ready()
            for size in (1, 32):  # warm-up
                run_cell(server.url, "bench", pool, size, 1, 0.0)
            load_before = M.load_average()
            size, clients = (int(v) for v in args.big.split("x"))
            res = asyncio.run(_mixed(server.url, pool, args.seconds, size, clients))
            rows.append({"server": name, "tree": str(tree or REPO), "loadavg_before": load_before,
                         "loadavg_after": M.load_average(), **res})
            print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            server.stop()
    print(f"{'server':10} {'small p50 ms':>12} {'small p99 ms':>12} {'small reqs':>10} {'big texts/s':>11} "
          f"{'load':>16}")
    for r in rows:
        s, b = r["small_1x1"], r["big"]
        print(f"{r['server']:10} {s['p50_ms']!s:>12} {s['p99_ms']!s:>12} {s['requests']:>10} "
              f"{b['texts_per_s']!s:>11} {str(r['loadavg_before'][:1]):>16}")
    report = {"benchmark": "serve_fairness", "command": " ".join(["python", *sys.argv]), "machine": M.machine(),
              "seconds": args.seconds, "model": "m3e-base shape (random weights)", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
