"""Memory under sustained load: the server's RSS while 200 clients query it for ten minutes (issue 24).

Starts ``m3e-rag serve`` on 127.0.0.1 (tiny stand-in model, an index of 200 short Chinese texts, an API
key), then 200 closed-loop clients (asyncio + httpx) send a mix for ``--seconds``: one-text embeddings
(50%), hybrid searches (40%) and ``/health`` (10%), half of the clients opening a fresh connection per
request. The server's RSS is sampled from ``/proc/PID/status`` every ``--every`` seconds; the table gives
the samples, the answers by status, and ``/health``'s latency. A memory figure, not a speed figure: it
holds on a busy machine too (the load average is recorded).

    .venv/bin/python benchmarks/serve_soak.py --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _measure as M  # noqa: E402
import httpx  # noqa: E402
from _serve_servers import Server, free_port  # noqa: E402
from serve import log_dir  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve_soak.json"
KEY = {"Authorization": "Bearer soak-key"}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(url: str, i: int, stop_at: float, stats: dict[str, Any]) -> None:
    fresh = i % 2 == 1  # half the clients open a new connection per request
    shared = httpx.AsyncClient(base_url=url, headers=KEY, timeout=120)
    try:
        while time.monotonic() < stop_at:
            client = httpx.AsyncClient(base_url=url, headers=KEY, timeout=120) if fresh else shared
            r = random.random()
            try:
                if r < 0.5:
                    resp = await client.post("/v1/embeddings", json={"model": "bench", "input": [f"熊猫吃竹子 {r}"]})
                elif r < 0.9:
                    resp = await client.post("/v1/search", json={"query": f"熊猫 四川 {r}", "k": 5, "mode": "hybrid"})
                else:
                    t0 = time.perf_counter()
                    resp = await client.get("/health")
                    stats["health_s"].append(time.perf_counter() - t0)
                stats[str(resp.status_code)] = stats.get(str(resp.status_code), 0) + 1
            except httpx.HTTPError as exc:
                stats[type(exc).__name__] = stats.get(type(exc).__name__, 0) + 1
            finally:
                if fresh:
                    await client.aclose()
    finally:
        await shared.aclose()


async def _run(url: str, pid: int, seconds: float, every: float, clients: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=120) as c:
        texts = [{"text": f"第{i}段：熊猫在四川的山里吃竹子。", "source": f"s{i}"} for i in range(200)]
        assert (await c.post("/v1/ingest", json={"texts": texts})).status_code == 200
    stats: dict[str, Any] = {"health_s": []}
    samples = [{"t_s": 0.0, "rss_mib": round(_rss_mib(pid), 1), "loadavg": M.load_average()}]
    start = time.monotonic()
    stop_at = start + seconds

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(every)
            samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mib": round(_rss_mib(pid), 1),
                            "loadavg": M.load_average()})

    await asyncio.gather(sampler(), *(_client(url, i, stop_at, stats) for i in range(clients)))
    health = sorted(stats.pop("health_s"))
    ms = {"p50": 1000 * M.percentile(health, 50), "p99": 1000 * M.percentile(health, 99), "max": 1000 * health[-1]}
    return {"samples": samples, "answers": stats,
            "health_ms": {**{k: round(v, 1) for k, v in ms.items()}, "n": len(health)} if health else None}


def main() -> None:
    """Run the soak, print the RSS samples and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--every", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from tests.support import standins

    logs = log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    index = logs / f"soak-index-{int(time.time())}"
    port = free_port()
    argv = [sys.executable, "-m", "m3e_rag", "serve", "--model", str(standins.tiny_m3e()), "--port", str(port),
            "--index", str(index), "--api-key", "soak-key", "--served-model-name", "bench"]
    server = Server("m3e-rag", argv, port, logs / "soak.log")
    try:
        server.wait_ready()
        result = asyncio.run(_run(f"http://127.0.0.1:{port}", server.proc.pid, args.seconds, args.every, args.clients))
    finally:
        server.stop()
    for s in result["samples"]:
        print(f"{s['t_s']:>7} s  RSS {s['rss_mib']:>8} MiB  load {s['loadavg']}")
    print("answers", result["answers"], "health ms", result["health_ms"])
    report = {"benchmark": "serve_soak", "command": " ".join(["python", *sys.argv]), "machine": M.machine(),
              "clients": args.clients, "seconds": args.seconds, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
