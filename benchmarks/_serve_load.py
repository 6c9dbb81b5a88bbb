"""The closed-loop load generator of `benchmarks/serve.py` (asyncio + httpx, one process).

``C`` concurrent clients each send a request of ``size`` texts, wait for the answer and send the next,
for ``seconds``; the requests still in flight are then awaited. Throughput = texts answered / wall time;
latency percentiles over every request. With ``probe=True`` one more client sends one-text requests
one after another meanwhile: its p50/p99 is the small request's wait under the big load (issue 25).
Every response is checked (status 200, one vector per text). The generator's own CPU seconds are
measured (``generator_cpu_s``) so a reader sees what it took from the machine.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

import _measure as M
import httpx


def pin_to_last_cpu() -> int | None:
    """Pin this process (the load generator) to the last CPU; the servers get every CPU. Returns the CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stats(latencies: list[float]) -> dict[str, Any]:
    return {"p50_ms": round(1000 * M.percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(1000 * M.percentile(latencies, 99), 1) if latencies else None}


async def drive(url: str, model: str, pool: list[str], size: int, concurrency: int, seconds: float,
                 probe: bool) -> dict[str, Any]:
    latencies: list[float] = []
    probe_latencies: list[float] = []
    texts_done = 0
    errors: list[str] = []
    stop_at = 0.0
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(i: int, n: int, into: list[float]) -> int:
            start = (i * n) % len(pool)
            batch = [pool[(start + j) % len(pool)] for j in range(n)]
            t0 = time.perf_counter()
            r = await client.post(url, json={"input": batch, "model": model})
            dt = time.perf_counter() - t0
            if r.status_code != 200 or len(r.json()["data"]) != n:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                return 0
            into.append(dt)
            return n

        async def worker(w: int) -> None:
            nonlocal texts_done
            i = w
            while time.perf_counter() < stop_at:
                answered = await one(i, size, latencies)  # awaited first: `x += await f()` reads x before awaiting
                texts_done += answered
                i += concurrency

        async def prober() -> None:
            i = 7
            while time.perf_counter() < stop_at:
                await one(i, 1, probe_latencies)
                i += 1

        await one(0, size, [])  # warm-up (not counted); every server was warmed up once before its first cell
        t_start = time.perf_counter()
        stop_at = t_start + seconds
        await asyncio.gather(*(worker(w) for w in range(concurrency)), *([prober()] if probe else []))
        wall = time.perf_counter() - t_start
    out = {"requests": len(latencies), "texts": texts_done, "wall_s": round(wall, 2),
           "texts_per_s": round(texts_done / wall, 2) if wall else None, **_stats(latencies),
           "errors": len(errors), "first_error": errors[0] if errors else None}
    if probe:
        out["probe"] = {"requests": len(probe_latencies), **_stats(probe_latencies)}
    return out


def run_cell(url: str, model: str, pool: list[str], size: int, concurrency: int, seconds: float,
             *, probe: bool = False) -> dict[str, Any]:
    """One closed-loop cell (see the module docstring), with the generator's CPU seconds and the load average."""
    cpu0 = _cpu_seconds()
    res = asyncio.run(drive(url, model, pool, size, concurrency, seconds, probe))
    res["generator_cpu_s"] = round(_cpu_seconds() - cpu0, 2)
    res["loadavg"] = M.load_average()
    return res
