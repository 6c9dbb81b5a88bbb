#!/usr/bin/env python
"""The CUDA path, side by side with what a user would otherwise run (issue #10). Needs a CUDA GPU.

    python benchmarks/gpu.py --data ../shared/data            # about 2-4 minutes on one GPU
    python benchmarks/gpu.py --shapes base,large --rounds 5   # more shapes, more rounds

Random weights of the exact M3E shapes (speed does not depend on weight values) encode the same mixed
zh/en passages in interleaved rounds (A B C D, then B C D A, ...). Configurations:

- ``st-fp32``: ``SentenceTransformer.encode(batch_size=32)`` in float32, the baseline (what LangChain's
  HuggingFaceEmbeddings and Chroma's SentenceTransformerEmbeddingFunction run);
- ``st-fp16``: the same after ``model.half()``, what a user tuning by hand would run;
- ``m3e-fp32``: ``M3EEncoder(dtype="float32")``;
- ``m3e-default``: ``M3EEncoder()`` defaults: float16 after the fidelity check, tokenization ahead;
- ``m3e-default-no-ahead``: the same with ``TOKENIZE_AHEAD = False`` (what the overlap is worth);
- ``m3e-multi-gpu`` (only with two or more GPUs): ``multi_process=True``.

Reported per shape: passages/s and tokens/s medians, the median per-round ratio to ``st-fp32``, the
minimum cosine of each configuration's vectors to the baseline's, the fidelity check's own figure, and
peak GPU memory. Prints a table, writes ``benchmarks/results/gpu.json``. Without a GPU it says so and
exits with status 2: no figure is ever made up.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from _corpus import passages  # noqa: E402
from _measure import cosine_rows, machine, versions  # noqa: E402


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _configs(path: str, gpus: int, device: str) -> dict[str, Callable[[], Callable[[list[str]], np.ndarray]]]:
    """Name -> a loader returning an ``encode(texts) -> unit vectors`` function (loaded once per config)."""
    from sentence_transformers import SentenceTransformer

    import m3e_rag.encode.batching as enc_mod
    from m3e_rag import M3EEncoder

    def st(half: bool) -> Callable[[list[str]], np.ndarray]:
        model = SentenceTransformer(path, device=device)
        if half:
            model.half()
        return lambda texts: np.asarray(
            model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
            .float().cpu().numpy())

    def ours(ahead: bool | None, **kwargs: Any) -> Callable[[list[str]], np.ndarray]:
        encoder = M3EEncoder(path, device=device, **kwargs).load()

        def run(texts: list[str]) -> np.ndarray:
            enc_mod.TOKENIZE_AHEAD = ahead
            try:
                return encoder.encode_documents(texts)
            finally:
                enc_mod.TOKENIZE_AHEAD = None
                _sync(device)
        run.info = encoder.info  # type: ignore[attr-defined]
        return run

    configs: dict[str, Callable[[], Callable[[list[str]], np.ndarray]]] = {
        "st-fp32": lambda: st(False),
        "st-fp16": lambda: st(True),
        "m3e-fp32": lambda: ours(None, dtype="float32"),
        "m3e-default": lambda: ours(None),
        "m3e-default-no-ahead": lambda: ours(False),
    }
    if gpus > 1:
        configs["m3e-multi-gpu"] = lambda: ours(None, multi_process=True)
    return configs


def run_shape(shape: str, texts: list[str], rounds: int, gpus: int, device: str) -> dict[str, Any]:
    """Interleaved rounds over every configuration for one M3E shape."""
    import torch
    from support.standins import m3e_shape

    path = str(m3e_shape(shape))
    cuda = device.startswith("cuda")
    loaders = _configs(path, gpus, device)
    runners = {}
    peak_mib: dict[str, float | None] = {}
    for name, load in loaders.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        runners[name] = load()
        runners[name](texts[:64])  # warm-up: kernels, caches, the fidelity check's cost stays out
        peak_mib[name] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    from transformers import AutoTokenizer

    tokens = sum(len(ids) for ids in AutoTokenizer.from_pretrained(path)(texts)["input_ids"])
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            _sync(device)
            start = time.perf_counter()
            vectors[name] = runners[name](texts)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    rows = {}
    for name in names:
        ratios = [b / t for b, t in zip(times["st-fp32"], times[name], strict=True)]
        info = getattr(runners[name], "info", None)
        described = info() if info else {}
        rows[name] = {
            "passages_per_s": len(texts) / statistics.median(times[name]),
            "tokens_per_s": tokens / statistics.median(times[name]),
            "speedup_vs_st_fp32": statistics.median(ratios),
            "min_cosine_vs_st_fp32": float(cosine_rows(vectors["st-fp32"], vectors[name]).min()),
            "dtype": described.get("dtype", "float16" if name == "st-fp16" else "float32"),
            "fidelity_check_min_cosine": described.get("half_precision_min_cosine"),
            "peak_gpu_mib_after_warmup": peak_mib[name],
        }
    del runners
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"shape": shape, "passages": len(texts), "tokens": tokens, "rounds": rounds, "configs": rows}


def main() -> int:
    """Run the benchmark; 2 when there is no CUDA GPU."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (CMRC 2018, XQuAD); optional")
    parser.add_argument("--shapes", default="base", help="M3E shapes, comma-separated (small, base, large)")
    parser.add_argument("--passages", type=int, default=2048, help="passages per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    parser.add_argument("--device", default="cuda",
                        help="cuda (default); 'cpu' only smoke-tests the script (float32 there: not GPU figures)")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU; torch sees none here. Nothing was measured.", file=sys.stderr)
        return 2
    from support.standins import m3e_shape
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(m3e_shape("small")))
    texts = passages(tokenizer, args.data, args.passages)
    cuda = args.device.startswith("cuda")
    gpus = torch.cuda.device_count() if cuda else 0
    result: dict[str, Any] = {
        "machine": machine(), "versions": versions(), "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "gpus": gpus,
        "shapes": [run_shape(s.strip(), texts, args.rounds, gpus, args.device)
                   for s in args.shapes.split(",") if s.strip()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{result['gpu'] or 'CPU smoke run: not GPU figures'} x{gpus}")
    print(f"{'shape':6} {'config':22} {'dtype':9} {'passages/s':>10} {'tok/s':>9} {'x st-fp32':>9} "
          f"{'min cos':>8} {'GPU MiB':>8}")
    for shape in result["shapes"]:
        for name, row in shape["configs"].items():
            print(f"{shape['shape']:6} {name:22} {row['dtype']:9} {row['passages_per_s']:10.1f} "
                  f"{row['tokens_per_s']:9.0f} {row['speedup_vs_st_fp32']:9.2f} {row['min_cosine_vs_st_fp32']:8.5f} "
                  f"{row['peak_gpu_mib_after_warmup'] or 0:8.0f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
