"""One huge single-line text file through ``ingest()``: peak memory above the model's own, and time.

Issue 12's row: "one 200 MB single-line .txt in a folder: the chunker needs about 275 MB of RAM per
MB of text (8 MB -> 2.7 GB); killed by the OOM killer at 19.9 GB; SIGINT swallowed". Target: a
200 MB file ingests within 1.5 GB peak RSS above the model's own.

Each figure comes from a fresh process (peak RSS = the kernel's VmHWM of that process):

- ``model``: load the tiny stand-in model through the pipeline and embed one ingest step of chunks
  (``INGEST_STEP_CHUNKS`` texts of the chunk size): the model's own peak;
- ``ingest``: ``RAGPipeline(...).ingest(folder)`` on a folder holding one ``--mb`` MB single-line
  .txt (mixed zh/en sentences, no line break), tiny model, embedded Chroma, BM25 on (``--no-sparse``
  to leave BM25 out): peak RSS, seconds, chunks;
- ``old-chunker`` (``--old-mb``, default 4): the chunker at commit 7239727 on the same kind of text,
  its RSS growth per MB: the "before" (extrapolated linearly to ``--mb``; the issue measured 2.7 GB
  at 8 MB and an OOM kill at 19.9 GB for 200 MB).

The tiny model (2 layers, 64 hidden, random weights) keeps encoding from hiding the pipeline's own
memory; these are pipeline figures, not M3E's. Writes ``benchmarks/results/big_file.json`` and
prints a table. Usage: ``nice -n 10 .venv/bin/python benchmarks/big_file.py --mb 200``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

from _measure import load_average, machine  # noqa: E402

ZH = "自然语言处理是人工智能的一个重要方向，它研究如何让计算机理解人类的语言。"
EN = "Natural language processing is a field of AI, e.g. it includes 3.14 and U.S. examples. "
CHUNK_TOKENS = 256


def _peak_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _write_big(path: Path, mb: float) -> int:
    """Write ``mb`` MB of one-line mixed text (varied, so chunks differ) and return its size."""
    target = int(mb * 1_000_000)
    size = 0
    i = 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < target:
            piece = f"第{i}句。{ZH}{EN}Item {i}. "
            fh.write(piece)
            size += len(piece.encode("utf-8"))
            i += 1
    return size


def worker(kind: str, mb: float, sparse: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process; its temporary folder is removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="m3e_big_"))
    try:
        return _measure(kind, mb, sparse, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(kind: str, mb: float, sparse: bool, tmp: Path) -> dict[str, Any]:
    """The measurement itself (see :func:`worker`)."""
    from support.standins import tiny_m3e

    from m3e_rag import RAGPipeline
    from m3e_rag.ingest import ingestor as ingestor_module

    if kind == "model":
        rag = RAGPipeline(tmp / "idx", model_name=str(tiny_m3e()), chunk_tokens=CHUNK_TOKENS, sparse=sparse)
        texts = [(ZH + EN) * 3 + str(i) for i in range(ingestor_module.INGEST_STEP_CHUNKS)]
        rag.encoder.encode_documents(texts)
        return {"kind": kind, "peak_rss_mib": _peak_mib()}
    if kind == "old-chunker":
        from chunker import _old_chunker_module  # benchmarks/chunker.py
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tiny_m3e()))
        old = _old_chunker_module().Chunker(tokenizer, CHUNK_TOKENS, 32)
        path = tmp / "one_line.txt"
        size = _write_big(path, mb)
        text = path.read_text(encoding="utf-8")
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        with open("/proc/self/statm", encoding="ascii") as fh:
            before = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        started = time.perf_counter()
        chunks = old.split_text(text)
        seconds = time.perf_counter() - started
        growth = _peak_mib() - before
        return {"kind": kind, "mb": size / 1e6, "seconds": seconds, "chunks": len(chunks),
                "rss_growth_mib": growth, "mib_per_mb": growth / (size / 1e6)}
    if kind == "drive":
        return _drive_only(tmp, mb)
    folder = tmp / "docs"
    folder.mkdir()
    size = _write_big(folder / "one_line.txt", mb)
    rag = RAGPipeline(tmp / "idx", model_name=str(tiny_m3e()), chunk_tokens=CHUNK_TOKENS, sparse=sparse)
    started = time.perf_counter()
    report = rag.ingest(folder)
    seconds = time.perf_counter() - started
    return {"kind": kind, "mb": size / 1e6, "seconds": seconds, "peak_rss_mib": _peak_mib(),
            "chunks": report.chunks_added, "documents": report.documents,
            "skipped": [s.reason for s in report.files_skipped], "stored": rag.store.count()}


def _drive_only(tmp: Path, mb: float) -> dict[str, Any]:
    """Loader + chunker + the ingest driver (ids, steps) with a commit that stores nothing."""
    from support.standins import tiny_m3e
    from transformers import AutoTokenizer

    from m3e_rag.ingest.chunking import Chunker
    from m3e_rag.ingest.loaders import FileLoader
    from m3e_rag.ingest.run import IngestRun, InterruptFlag

    folder = tmp / "docs"
    folder.mkdir()
    size = _write_big(folder / "one_line.txt", mb)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_m3e()))
    chunker = Chunker(tokenizer, CHUNK_TOKENS, 32)
    with open("/proc/self/statm", encoding="ascii") as fh:
        before = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    committed = [0]

    def commit(pairs: list[Any], finished: list[str], current: dict[str, set[str]]) -> None:
        committed[0] += len(pairs)

    started = time.perf_counter()
    run = IngestRun(chunker, commit, 256, InterruptFlag())
    run.run((doc, True) for doc in FileLoader([folder]))
    seconds = time.perf_counter() - started
    return {"kind": "drive", "mb": size / 1e6, "seconds": seconds, "chunks": committed[0],
            "rss_before_mib": before, "peak_rss_mib": _peak_mib(), "peak_above_start_mib": _peak_mib() - before}


def _run(kind: str, mb: float, sparse: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--mb", str(mb)] + ([] if sparse else ["--no-sparse"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return {"kind": kind, "error": f"rc {res.returncode}", "stderr_tail": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure model, ingest and old chunker; print the table; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the one-line file, MB (default 200)")
    parser.add_argument("--old-mb", type=float, default=4.0, help="MB for the old chunker's before figure (0: skip)")
    parser.add_argument("--no-sparse", action="store_true", help="ingest without the BM25 side")
    parser.add_argument("--drive-mb", type=float, default=0.0,
                        help="also stream a file of this many MB through loader + chunker + ingest driver with a "
                        "commit that stores nothing (no model, Chroma or BM25): their own peak")
    parser.add_argument("--worker", choices=["model", "ingest", "old-chunker", "drive"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "big_file.json")
    args = parser.parse_args()
    sparse = not args.no_sparse
    if args.worker:
        print(json.dumps(worker(args.worker, args.mb, sparse)))
        return
    model = _run("model", args.mb, sparse)
    print(f"model alone: peak {model.get('peak_rss_mib', float('nan')):.0f} MiB", file=sys.stderr)
    ingest = _run("ingest", args.mb, sparse)
    print(f"ingest: {ingest}", file=sys.stderr)
    old = _run("old-chunker", args.old_mb, sparse) if args.old_mb > 0 else None
    drive = _run("drive", args.drive_mb, sparse) if args.drive_mb > 0 else None
    above = ingest.get("peak_rss_mib", float("nan")) - model.get("peak_rss_mib", float("nan"))
    result = {
        "benchmark": "big_file",
        "file_mb": ingest.get("mb", args.mb),
        "sparse": sparse,
        "model": "tiny random-weight M3E-shape stand-in (pipeline figures, not M3E's)",
        "chunk_tokens": CHUNK_TOKENS,
        "model_peak_rss_mib": model.get("peak_rss_mib"),
        "ingest": ingest,
        "ingest_peak_above_model_mib": above,
        "target_above_model_mib": 1536,
        "meets_target": above <= 1536,
        "old_chunker": old,
        "drive_only": drive,
        "old_chunker_extrapolated_mib": (old["mib_per_mb"] * args.mb) if old and "mib_per_mb" in old else None,
        "machine": machine(),
        "loadavg_at_end": load_average(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nbig file: one {result['file_mb']:.0f} MB single-line .txt, tiny stand-in model, "
          f"BM25 {'on' if sparse else 'off'}; CPU {result['machine']['cpu_model']} {result['machine']['isa']}")
    print(f"{'':<34}{'peak RSS MiB':>14}{'above model':>13}{'seconds':>9}{'chunks':>9}")
    print(f"{'model alone (one ingest step)':<34}{model.get('peak_rss_mib', 0):>14.0f}{'':>13}")
    print(f"{'ingest, this tree':<34}{ingest.get('peak_rss_mib', 0):>14.0f}{above:>13.0f}"
          f"{ingest.get('seconds', 0):>9.0f}{ingest.get('chunks', 0):>9}")
    if old and "mib_per_mb" in old:
        print(f"{'old chunker (7239727), ' + format(old['mb'], '.0f') + ' MB':<34}{'':>14}"
              f"{old['rss_growth_mib']:>13.0f}{old['seconds']:>9.0f}{old['chunks']:>9}"
              f"   = {old['mib_per_mb']:.0f} MiB/MB -> "
              f"{result['old_chunker_extrapolated_mib']:.0f} MiB at {args.mb:.0f} MB")
    if drive and "peak_above_start_mib" in drive:
        print(f"{'loader+chunker+driver, ' + format(drive['mb'], '.0f') + ' MB':<34}{drive['peak_rss_mib']:>14.0f}"
              f"{'+' + format(drive['peak_above_start_mib'], '.0f') + ' (own)':>13}{drive['seconds']:>9.0f}"
              f"{drive['chunks']:>9}")
    print(f"target: <= 1536 MiB above the model: {'met' if result['meets_target'] else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
