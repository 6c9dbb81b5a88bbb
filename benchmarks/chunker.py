"""Chunker throughput and memory on mixed Chinese/English text, against two baselines, in one run.

Methods, each run in a fresh process (so peak RSS is its own), alternated ``--repeats`` times:

- ``new``: :class:`m3e_rag.ingest.chunking.Chunker` as it is in this tree;
- ``old``: the chunker at commit 7239727 (``git show 7239727:m3e_rag/chunking.py``, loaded as a
  module), the baseline issue 10 measured (0.48 MB/s, +300 MiB for 4 MB);
- ``langchain``: LangChain's ``RecursiveCharacterTextSplitter.from_huggingface_tokenizer`` with the
  separators a Chinese user would set (``\\n\\n \\n 。 ！ ？ ； . ， , space``), what a user would
  otherwise take (token-length budget through the same tokenizer; no exact spans, no sentence rules).

All use the M3E vocabulary (the architecture-exact stand-in's WordPiece tokenizer, 21,128 entries),
256-token chunks with 32 tokens of overlap. Text: CMRC 2018 (zh) and XQuAD (en) paragraphs
alternating with ``--data``, else generated sentences; ``--mb`` MB of UTF-8.

Reported per method: MB/s (median), peak RSS above the process's RSS before chunking (median), chunks;
for ``new`` also the share of time inside the Rust tokenizer (where the time goes). Writes
``benchmarks/results/chunker.json`` and prints a table.

Usage: ``nice -n 10 .venv/bin/python benchmarks/chunker.py --data ../shared/data``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from _measure import load_average, machine, versions  # noqa: E402

BASELINE_COMMIT = "7239727"
METHODS = ("new", "old", "langchain")
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "，", ", ", " ", ""]


def _rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def _peak_mib() -> float:
    """Peak RSS (VmHWM) since the last :func:`_reset_peak`, MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _text(data: Path | None, mb: float) -> str:
    from _corpus import ingest_paragraphs

    target = int(mb * 1_000_000)
    paragraphs = ingest_paragraphs(data, 4000)
    out: list[str] = []
    size = 0
    i = 0
    while size < target:
        p = paragraphs[i % len(paragraphs)]
        out.append(p)
        size += len(p.encode("utf-8")) + 2
        i += 1
    return "\n\n".join(out)


def _old_chunker_module() -> Any:
    source = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:m3e_rag/chunking.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "chunking_7239727.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("chunking_7239727", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["chunking_7239727"] = module
    spec.loader.exec_module(module)
    return module


def worker(method: str, data: Path | None, mb: float) -> dict[str, Any]:
    """Chunk the text once with ``method``; return seconds, RSS growth and counts."""
    from support.standins import tiny_m3e
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_m3e()))
    text = _text(data, mb)
    size_mb = len(text.encode("utf-8")) / 1e6
    if method == "new":
        from m3e_rag.ingest.chunking import Chunker

        chunker = Chunker(tokenizer, 256, 32)
        chunker.split_text(text[:5000])  # warm up (builds the backend copy)
        spent = [0.0]
        real = chunker._encode

        def timed(texts: list[str], offsets: bool) -> Any:
            start = time.perf_counter()
            try:
                return real(texts, offsets)
            finally:
                spent[0] += time.perf_counter() - start

        chunker._encode = timed  # type: ignore[method-assign]
        run = lambda: len(chunker.split_text(text))  # noqa: E731
    elif method == "old":
        old = _old_chunker_module().Chunker(tokenizer, 256, 32)
        old.split_text(text[:5000])
        run = lambda: len(old.split_text(text))  # noqa: E731
    else:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=256, chunk_overlap=32, separators=SEPARATORS, keep_separator="end"
        )
        splitter.split_text(text[:5000])
        run = lambda: len(splitter.split_text(text))  # noqa: E731
    before = _rss_mib()
    _reset_peak()
    started = time.perf_counter()
    chunks = run()
    seconds = time.perf_counter() - started
    peak = _peak_mib()
    out = {"method": method, "mb": size_mb, "seconds": seconds, "mb_per_s": size_mb / seconds,
           "rss_before_mib": before, "peak_rss_mib": peak, "peak_above_start_mib": peak - before, "chunks": chunks}
    if method == "new":
        out["tokenizer_seconds"] = spent[0]
        out["tokenizer_share"] = spent[0] / seconds
    return out


def main() -> None:
    """Run the workers in alternation and summarise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with cmrc2018/ and xquad/ (shared/data)")
    parser.add_argument("--mb", type=float, default=2.0, help="MB of text (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chunker.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.mb)))
        return
    methods = [m for m in args.methods.split(",") if m]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for r in range(args.repeats):
        for m in methods:
            cmd = [sys.executable, __file__, "--worker", m, "--mb", str(args.mb)]
            if args.data:
                cmd += ["--data", str(args.data)]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            line = res.stdout.strip().splitlines()[-1]
            runs[m].append(json.loads(line))
            print(f"run {r + 1}/{args.repeats} {m}: {runs[m][-1]['mb_per_s']:.2f} MB/s", file=sys.stderr)
    summary: dict[str, Any] = {}
    for m in methods:
        rs = runs[m]
        summary[m] = {
            "mb_per_s_median": statistics.median(x["mb_per_s"] for x in rs),
            "peak_above_start_mib_median": statistics.median(x["peak_above_start_mib"] for x in rs),
            "chunks": rs[0]["chunks"],
        }
        if m == "new":
            summary[m]["tokenizer_share_median"] = statistics.median(x["tokenizer_share"] for x in rs)
    for m in methods:
        if m != "new" and "new" in summary:
            summary["new"][f"speedup_vs_{m}"] = summary["new"]["mb_per_s_median"] / summary[m]["mb_per_s_median"]
    result = {
        "benchmark": "chunker",
        "text_mb": runs[methods[0]][0]["mb"],
        "data": "CMRC 2018 + XQuAD en paragraphs" if args.data else "generated sentences",
        "settings": {"max_tokens": 256, "overlap_tokens": 32, "tokenizer": "M3E-shape WordPiece (stand-in vocab)",
                     "TOKENIZERS_PARALLELISM": "false"},
        "baseline_commit": BASELINE_COMMIT,
        "summary": summary,
        "runs": runs,
        "machine": machine(),
        "loadavg_at_end": load_average(),
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nchunker, {result['text_mb']:.2f} MB of mixed zh/en ({result['data']}), 256/32 tokens, "
          f"{args.repeats} runs each (medians); CPU {result['machine']['cpu_model']} {result['machine']['isa']}")
    print(f"{'method':<12}{'MB/s':>8}{'peak RSS +MiB':>15}{'chunks':>9}{'vs new':>9}")
    for m in methods:
        s = summary[m]
        ratio = ""
        if m != "new" and "new" in summary:
            ratio = f"{summary['new']['mb_per_s_median'] / s['mb_per_s_median']:.2f}x"
        print(f"{m:<12}{s['mb_per_s_median']:>8.2f}{s['peak_above_start_mib_median']:>15.0f}{s['chunks']:>9}{ratio:>9}")
    if "new" in summary:
        print(f"new: {summary['new']['tokenizer_share_median']:.0%} of its time inside the Rust tokenizer pass")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
