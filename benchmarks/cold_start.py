"""Cold start and memory: what a fresh process pays before its first answer, against its baselines.

Every figure comes from fresh processes, in one run, the medians of ``--repeats`` runs taken in
alternation (so machine load hits both sides of a comparison alike):

- ``import m3e_rag``, ``m3e-rag --help`` and ``m3e-rag info --index``: wall seconds; whether torch,
  transformers or sentence-transformers were imported (they must not be; ``m3e-rag search`` imports
  torch and transformers, and not sentence-transformers: see ``m3e_rag.encode.native``);
- ``m3e-rag search`` in a fresh process on an index built with the m3e-base shape (random weights, the
  real architecture and size), against the baseline "load the model with sentence-transformers and
  encode one query" (``SentenceTransformer(path).encode([q])``): seconds and the ratio;
- the torch backend's load with and without the oneDNN packing (``M3E_RAG_ONEDNN=0``): seconds, ratio;
  packing waits for ``ONEDNN_AFTER_TOKENS`` (a query does not pack), so the first batch of 8 documents
  (1,312 tokens) is timed too: with packing inside it against without packing at all;
- RSS after load and one query, and after that first batch: sentence-transformers, the torch backend
  with oneDNN, without it;
- peak RSS of ingesting the whole CMRC 2018 dev corpus (848 paragraphs, about 2,200 chunks, 4-5
  minutes) with the m3e-base shape. ``--ingest-paragraphs N`` shortens it, but the figure is then
  not the corpus's: memory grows over an ingest (oneDNN's kernels for each new batch shape, the heap,
  Chroma) and the longest batches of later steps set the peak. With 1,365-token batches, 60 paragraphs
  peaked at 998-1,018 MiB where the whole corpus, on the same code, peaked at 1,107-1,136 MiB.

Usage: ``nice -n 10 .venv/bin/python benchmarks/cold_start.py --data ../shared/data``; writes
``benchmarks/results/cold_start.json`` and prints a table. Figures of the stand-in, not of M3E's weights.
"""

from __future__ import annotations

import argparse
import json
import os
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

from _measure import load_average, machine, versions  # noqa: E402

PY = sys.executable
CLI = str(Path(sys.executable).with_name("m3e-rag"))
QUERY = "大熊猫主要吃什么"
HEAVY = ("torch", "transformers", "sentence_transformers")

RSS_CHILD = r"""
import os, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
DOCS = ["大熊猫主要吃竹子，生活在中国西南的山区。The giant panda lives in the mountains of south-west China. " * 3] * 8
def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
t = time.perf_counter()
if mode == "st":
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(path, device="cpu")
    loaded = time.perf_counter()
    model.encode([QUERY])
    queried = time.perf_counter()
    after_query = rss()
    model.encode(DOCS)
    packed = 0
else:
    os.environ["M3E_RAG_ONEDNN"] = "1" if mode == "torch-onednn" else "0"
    from m3e_rag import M3EEncoder
    from m3e_rag.encode.onednn import PackedLinear
    enc = M3EEncoder(path, device="cpu").load()
    loaded = time.perf_counter()
    enc.encode_query(QUERY)
    queried = time.perf_counter()
    after_query = rss()
    enc.encode_documents(DOCS)
    packed = sum(isinstance(m, PackedLinear) for m in enc._loaded().st.modules())
import json
print("RESULT " + json.dumps({"load_s": loaded - t, "query_s": queried - loaded, "rss_mib": after_query,
                              "first_batch_s": time.perf_counter() - queried, "rss_after_batch_mib": rss(),
                              "packed_layers": packed,
                              "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""".replace("QUERY", repr(QUERY))

INGEST_CHILD = r"""
import json, resource, sys, time
from m3e_rag import RAGPipeline
model, index, texts_file = sys.argv[1:4]
texts = json.loads(open(texts_file, encoding="utf-8").read())
rag = RAGPipeline(index, model_name=model)
t = time.perf_counter()
report = rag.ingest(texts=texts, sources=[f"cmrc-{i}" for i in range(len(texts))])
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "chunks": report.chunks_added,
                              "chars": sum(map(len, texts)),
                              "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

MODULES_CHILD = r"""
import sys, runpy
sys.argv = ["m3e-rag"] + sys.argv[1:]
try:
    from m3e_rag.cli import main
    main(sys.argv[1:])
except SystemExit:
    pass
print("MODULES " + ",".join(m for m in HEAVY if m in sys.modules), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t


def child_json(code: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, env=env(), timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(proc.stderr[-3000:])


def heavy_modules(*cli_args: str) -> list[str]:
    proc = subprocess.run([PY, "-c", MODULES_CHILD, *cli_args], capture_output=True, text=True, env=env(),
                          timeout=300)
    for line in proc.stderr.splitlines():
        if line.startswith("MODULES "):
            return [m for m in line[8:].split(",") if m]
    raise RuntimeError(proc.stderr[-2000:])


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def cmrc_paragraphs(data: Path | None, n: int | None) -> list[str]:
    if data is not None and (data / "cmrc2018" / "cmrc2018_dev.json").exists():
        raw = json.loads((data / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
        return [p["context"] for a in raw["data"] for p in a["paragraphs"]][:n]
    return [p.read_text(encoding="utf-8", errors="replace") for p in sorted((ROOT / "examples" / "data").glob("*"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ingest-paragraphs", type=int, default=None,
                        help="CMRC paragraphs for the ingest peak (default: all 848; fewer is not the corpus's figure)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args()
    from tests.support.standins import m3e_shape, tiny_m3e

    base, tiny = str(m3e_shape("base")), str(tiny_m3e())
    work = Path(tempfile.mkdtemp(prefix="m3e-cold-"))
    result: dict[str, Any] = {"benchmark": "cold_start", "note": "m3e-base shape, random weights (stand-in)",
                              "machine": machine(), "versions": versions(), "load_average_start": load_average()}
    # Indexes to open: a tiny one for info, an m3e-base-shape one for search.
    for model, name in ((tiny, "tiny"), (base, "base")):
        small = _texts_file(work, ["大熊猫主要吃竹子。", "长城很长。", "Green tea."])
        child_json(INGEST_CHILD, model, str(work / f"idx-{name}"), str(small))
    r = args.repeats
    runs: dict[str, list[float]] = {k: [] for k in ("python", "import", "help", "info", "search", "st_baseline",
                                                    "load_onednn", "load_plain", "first_batch_onednn",
                                                    "first_batch_plain")}
    for _ in range(r):
        runs["python"].append(wall([PY, "-c", "pass"]))
        runs["import"].append(wall([PY, "-c", "import m3e_rag"]))
        runs["help"].append(wall([CLI, "--help"]))
        runs["info"].append(wall([CLI, "info", "--index", str(work / "idx-tiny")]))
        runs["search"].append(wall([CLI, "search", QUERY, "--index", str(work / "idx-base"), "-k", "3"]))
        baseline = f"from sentence_transformers import SentenceTransformer\n" \
            f"SentenceTransformer({base!r}, device='cpu').encode([{QUERY!r}])"
        runs["st_baseline"].append(wall([PY, "-c", baseline]))
        for mode in ("onednn", "plain"):
            got = child_json(RSS_CHILD, f"torch-{mode}", base)
            runs[f"load_{mode}"].append(got["load_s"])
            runs[f"first_batch_{mode}"].append(got["first_batch_s"])
    result["seconds_median"] = {k: med(v) for k, v in runs.items()}
    result["seconds_all"] = {k: [round(x, 3) for x in v] for k, v in runs.items()}
    s = result["seconds_median"]
    result["ratios"] = {
        "search_fresh_process_over_st_load_and_encode": round(s["search"] / s["st_baseline"], 3),
        "onednn_load_over_plain_load": round(s["load_onednn"] / s["load_plain"], 3),
        "onednn_first_batch_with_packing_over_plain": round(s["first_batch_onednn"] / s["first_batch_plain"], 3),
    }
    result["heavy_modules_imported"] = {
        "--help": heavy_modules("--help"),
        "info --index": heavy_modules("info", "--index", str(work / "idx-tiny")),
        # torch and transformers, not sentence-transformers: M3E folders load through transformers alone
        "search": heavy_modules("search", QUERY, "--index", str(work / "idx-base"), "-k", "3"),
    }
    rss = {mode: child_json(RSS_CHILD, mode, base) for mode in ("st", "torch-onednn", "torch-plain")}
    result["rss_after_load_and_one_query_mib"] = {m: round(v["rss_mib"], 1) for m, v in rss.items()}
    result["rss_after_first_batch_mib"] = {m: round(v["rss_after_batch_mib"], 1) for m, v in rss.items()}
    result["packed_layers_after_first_batch"] = {m: v["packed_layers"] for m, v in rss.items()}
    result["peak_rss_load_mib"] = {m: round(v["peak_mib"], 1) for m, v in rss.items()}
    result["ratios"]["torch_onednn_rss_over_st"] = round(rss["torch-onednn"]["rss_mib"] / rss["st"]["rss_mib"], 3)
    texts = cmrc_paragraphs(args.data, args.ingest_paragraphs)
    ingest = child_json(INGEST_CHILD, base, str(work / "idx-cmrc"), str(_texts_file(work, texts)))
    ingest["paragraphs"] = len(texts)
    ingest["shortened"] = args.ingest_paragraphs is not None
    result["cmrc_ingest_m3e_base_shape"] = ingest
    result["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("seconds_median", "ratios", "heavy_modules_imported",
                                             "rss_after_load_and_one_query_mib", "peak_rss_load_mib",
                                             "cmrc_ingest_m3e_base_shape")}, indent=1, ensure_ascii=False))


def _texts_file(work: Path, texts: list[str]) -> Path:
    path = work / f"texts-{len(texts)}-{abs(hash(tuple(texts))) % 10**8}.json"
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
