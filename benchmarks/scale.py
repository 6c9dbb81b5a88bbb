"""Scale benchmark: the index's own costs at 10k, 100k and 1M chunks (embedded Chroma and a Chroma server).

What it measures, for each N (the index grows in place: 10k, then to 100k, then to 1M):

- ingest chunks/s excluding the model: ``add_texts`` in batches with precomputed vectors, measured over the
  last 10,000 chunks written before the index reaches N (so "at 1M" means into an index of ~1M), plus the
  mean over the whole growth step;
- ``add_texts`` of one text, p50/p99 (precomputed vector: the model is excluded);
- delete of one source (20 chunks), p50/p99;
- opening the existing index in a cold process (store + BM25 side ready, jieba loaded): seconds;
- dense, sparse and hybrid search p50/p99, excluding query encoding (``query_vector=``), without a filter,
  with a selective ``where`` (one source) and with a broad one (``lang``, ~50% of chunks);
- peak RSS of the ingest process and of the search process (Chroma's own mapped vectors included);
- bytes on disk per chunk (the whole index folder; the BM25 side alone).

The corpus is synthetic but built from real text, deterministically: sentences of the CMRC 2018 and XQuAD
paragraphs (``--data ../shared/data``) or of the repository's ``examples/data`` files, drawn with a fixed
seed into chunks of 1-3 sentences (about 40-200 characters; shorter than the default 256-token chunk, so
N counts chunks, not megabytes). Vectors are random unit vectors of the tiny stand-in's 64 dimensions: the
model's speed is measured elsewhere (benchmarks/encode.py); these are pipeline figures, not M3E's.

Usage::

    nice -n 10 .venv/bin/python benchmarks/scale.py --data ../shared/data --sizes 10000,100000 --server-max 100000
    nice -n 10 .venv/bin/python benchmarks/scale.py --data ../shared/data --sizes 10000,100000,1000000

Writes ``benchmarks/results/scale.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import load_average, machine, versions  # noqa: E402

_SENT = re.compile(r"(?<=[。！？!?；])|(?<=[.!?])\s+")
SOURCE_CHUNKS = 20  # chunks per synthetic source (file)
DIM = 64
BATCH = 2000


def sentences(data: Path | None) -> tuple[list[str], list[str]]:
    """Chinese and English sentences of real text (deterministic order)."""
    zh: list[str] = []
    en: list[str] = []
    if data is not None:
        files = (("cmrc2018/cmrc2018_dev.json", zh), ("xquad/xquad.zh.json", zh), ("xquad/xquad.en.json", en))
        for name, pool in files:
            path = data / name
            if not path.exists():
                continue
            for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
                for para in article["paragraphs"]:
                    pool.extend(s.strip() for s in _SENT.split(para["context"]) if len(s.strip()) > 4)
    if not zh or not en:
        for path in sorted((ROOT / "examples" / "data").iterdir()):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("gb18030")
            for s in _SENT.split(text):
                s = s.strip()
                if len(s) > 4:
                    (zh if re.search("[\u4e00-\u9fff]", s) else en).append(s)
    return zh, en


class Corpus:
    """Chunk i is a deterministic function of i (seeded per chunk), so any range can be made on demand."""

    def __init__(self, zh: list[str], en: list[str]) -> None:
        self.zh, self.en = zh, en

    def chunk(self, i: int) -> tuple[str, dict[str, Any]]:
        rng = random.Random(i * 7919 + 17)
        lang = "zh" if rng.random() < 0.5 else "en"
        pool = self.zh if lang == "zh" else self.en
        start = rng.randrange(len(pool))
        parts = pool[start : start + rng.randint(1, 3)] or [pool[start]]
        text = ("" if lang == "zh" else " ").join(parts)[:400]
        return text, {"source": f"doc{i // SOURCE_CHUNKS:07d}", "lang": lang, "chunk_index": i % SOURCE_CHUNKS}

    def batch(self, start: int, stop: int) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        texts, metas = [], []
        for i in range(start, stop):
            text, meta = self.chunk(i)
            texts.append(text)
            metas.append(meta)
        return texts, metas, [f"c{i:08d}" for i in range(start, stop)]

    def query(self, j: int) -> str:
        rng = random.Random(10_000_019 + j)
        text, _ = self.chunk(rng.randrange(10_000))
        if re.search("[\u4e00-\u9fff]", text):
            a = rng.randrange(max(1, len(text) - 12))
            return text[a : a + rng.randint(6, 12)]
        words = text.split()
        a = rng.randrange(max(1, len(words) - 4))
        return " ".join(words[a : a + rng.randint(2, 5)])


def vectors(start: int, stop: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    v = rng.standard_normal((stop - start, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "n": len(ordered),
    }


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_pipeline(index: Path, model: Path, url: str | None) -> Any:
    from m3e_rag import RAGPipeline

    return RAGPipeline(index, model_name=str(model), chroma_url=url, collection="scale")


# ------------------------------------------------------------------------- the cold search process
SEARCH_CHILD = r"""
import json, os, resource, sys, time
t_start = time.perf_counter()
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import numpy as np
from scale import Corpus, sentences, pcts, DIM
from m3e_rag import RAGPipeline
rag = RAGPipeline({index!r}, model_name={model!r}, chroma_url={url!r}, collection="scale")
rag.encoder.load()
rag.chunker
imported = time.perf_counter()  # python, torch and the (tiny) model: not the index's cost
rag.store
rag.sparse_index
rag.sparse_index.build()
opened = time.perf_counter()
from pathlib import Path
zh, en = sentences(None if {data!r} is None else Path({data!r}))
corpus = Corpus(zh, en)
rng = np.random.default_rng(5)
out = {{"open_s": round(opened - imported, 3), "import_and_model_load_s": round(imported - t_start, 3)}}
rag.encoder.tokenizer  # the query cap counts tokens; load the tokenizer before timing
n_queries = {queries}
for label, where in (("", None), ("_where_source", "source"), ("_where_lang", "lang")):
    for mode in ("dense", "sparse", "hybrid"):
        times = []
        count = n_queries if where is None else max(5, n_queries // 3)
        for j in range(count + 2):
            q = corpus.query(j)
            v = rng.standard_normal(DIM).astype(np.float32); v /= np.linalg.norm(v)
            flt = None
            if where == "source":
                flt = {{"source": "doc%07d" % (j * 37 % max(1, {n} // 20))}}
            elif where == "lang":
                flt = {{"lang": "en"}}
            t = time.perf_counter()
            rag.search(q, k=10, mode=mode, query_vector=v, where=flt)
            if j >= 2:
                times.append(time.perf_counter() - t)
        out[mode + label] = pcts(times)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child would report its parent's peak.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
out["search_process_peak_rss_mib"] = round(int(hwm) / 1024, 1)
print("RESULT " + json.dumps(out))
"""


def cold_search(index: Path, model: Path, url: str | None, data: Path | None, n: int, queries: int,
                env: dict[str, str]) -> dict[str, Any]:
    code = SEARCH_CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), index=str(index), model=str(model),
                               url=url, data=str(data) if data else None, queries=queries, n=n)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"search process failed: {proc.stderr[-3000:]}")


# ------------------------------------------------------------------------- one backend, all sizes
def measure_in_process(rag: Any, corpus: Corpus, written: int, window: list[tuple[int, float]]) -> dict[str, Any]:
    """A quick checkpoint in the ingesting process: recent ingest rate, add_texts of one text, search p50."""
    recent = [dt for stop, dt in window if stop > written - 10_000]
    out: dict[str, Any] = {"written": written, "ingest_chunks_per_s_last_10k": round(min(10_000, written)
                                                                                      / max(sum(recent), 1e-9), 1)}
    adds = []
    for j in range(10):
        text, meta = corpus.chunk(70_000_000 + written + j)
        t = time.perf_counter()
        rag.add_texts([text], metadatas=[meta | {"source": f"cp{written}-{j}"}], ids=[f"cp-{written}-{j}"],
                      embeddings=vectors(70_000_000 + j, 70_000_001 + j))
        adds.append(time.perf_counter() - t)
    out["add_texts_1"] = pcts(adds)
    rng = np.random.default_rng(written)
    for mode in ("dense", "sparse", "hybrid"):
        times = []
        for j in range(17):
            v = rng.standard_normal(DIM).astype(np.float32)
            t = time.perf_counter()
            rag.search(corpus.query(j), k=10, mode=mode, query_vector=v / np.linalg.norm(v))
            if j >= 2:
                times.append(time.perf_counter() - t)
        out[mode] = pcts(times)
    out["peak_rss_mib"] = round(rss_mib(), 1)
    out["time"] = time.strftime("%H:%M:%S")
    print("CHECKPOINT " + json.dumps(out), flush=True)
    return out


def run_backend(kind: str, sizes: list[int], model: Path, data: Path | None, work: Path, queries: int,
                url: str | None, env: dict[str, str], checkpoint: int = 0) -> list[dict[str, Any]]:
    zh, en = sentences(data)
    corpus = Corpus(zh, en)
    index = work / f"index-{kind}"
    rag = make_pipeline(index, model, url)
    rows = []
    written = 0
    progress: list[dict[str, Any]] = []  # in-process checkpoints while growing (what a long run reached)
    window: list[tuple[int, float]] = []
    for n in sizes:
        row: dict[str, Any] = {"backend": kind, "n": n}
        t_total = time.perf_counter()
        last_window: list[float] = []  # (seconds) for the last 10k chunks
        last_start = max(written, n - 10_000)
        while written < n:
            stop = min(n, written + BATCH, last_start if written < last_start else n)
            texts, metas, ids = corpus.batch(written, stop)
            t = time.perf_counter()
            rag.add_texts(texts, metadatas=metas, ids=ids, embeddings=vectors(written, stop))
            dt = time.perf_counter() - t
            if written >= last_start:
                last_window.append(dt)
            written = stop
            window.append((stop, dt))
            if checkpoint and written % checkpoint == 0 and written < n:
                progress.append(measure_in_process(rag, corpus, written, window))
                (work / f"progress-{kind}.json").write_text(json.dumps(progress, indent=1))
        row["ingest_chunks_per_s_last_10k"] = round((n - last_start) / sum(last_window), 1) if last_window else None
        row["ingest_seconds_total_step"] = round(time.perf_counter() - t_total, 1)
        # add_texts of one text (precomputed vector) and delete of one source
        adds = []
        for j in range(30):
            text, meta = corpus.chunk(50_000_000 + j)
            t = time.perf_counter()
            rag.add_texts([text], metadatas=[meta | {"source": f"single{j}"}], ids=[f"single-{n}-{j}"],
                          embeddings=vectors(90_000_000 + j, 90_000_001 + j))
            adds.append(time.perf_counter() - t)
        row["add_texts_1"] = pcts(adds)
        bare = []  # baseline: Chroma's own upsert of one record into the same collection
        collection = rag.store._collection
        for j in range(30):
            text, meta = corpus.chunk(60_000_000 + j)
            t = time.perf_counter()
            collection.upsert(ids=[f"bare-{n}-{j}"], documents=[text], metadatas=[meta],
                              embeddings=vectors(80_000_000 + j, 80_000_001 + j))
            bare.append(time.perf_counter() - t)
        row["baseline_chroma_upsert_1"] = pcts(bare)
        collection.delete(ids=[f"bare-{n}-{j}" for j in range(30)])  # leave the id set as the BM25 side has it
        deletes = []
        for j in range(12):
            source = f"doc{(j * 7919) % (n // SOURCE_CHUNKS):07d}"
            t = time.perf_counter()
            removed = rag.delete(where={"source": source})
            deletes.append(time.perf_counter() - t)
            if removed:  # put it back, so every N sees the same corpus
                first = int(source[3:]) * SOURCE_CHUNKS
                texts, metas, ids = corpus.batch(first, first + SOURCE_CHUNKS)
                rag.add_texts(texts, metadatas=metas, ids=ids, embeddings=vectors(first, first + SOURCE_CHUNKS))
        row["delete_1_source"] = pcts(deletes)
        row["ingest_process_peak_rss_mib"] = round(rss_mib(), 1)
        rag._save_sparse()  # fold the BM25 log if it has grown past its share
        row.update(cold_search(index, model, url, data, n, queries, env))
        if url is None:
            row["bytes_per_chunk_total"] = round(du(index) / n, 1)
            # the BM25 folder is named after the collection (sparse_bm25-<collection>)
            row["bytes_per_chunk_bm25"] = round(sum(du(p) for p in index.glob("sparse_bm25*")) / n, 1)
        else:
            cache = Path(env["M3E_RAG_SPARSE_CACHE"])
            row["bytes_per_chunk_bm25"] = round(du(cache) / n, 1)
            row["bytes_per_chunk_server_folder"] = round(du(work / "server-data") / n, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (work / f"partial-{kind}.json").write_text(json.dumps(rows, indent=1))
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    chroma = Path(sys.executable).parent / "chroma"
    port = free_port()
    data = work / "server-data"
    data.mkdir(parents=True, exist_ok=True)
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(chroma), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import chromadb

    for _ in range(120):
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("chroma server did not start")


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("backend", "backend"), ("n", "N"), ("ingest_chunks_per_s_last_10k", "ingest/s"),
            ("add_texts_1", "add1 p50"), ("baseline_chroma_upsert_1", "chroma1 p50"),
            ("delete_1_source", "del p50"), ("open_s", "open s"),
            ("dense", "dense p50"), ("sparse", "sparse p50"), ("hybrid", "hybrid p50"),
            ("hybrid_where_source", "hyb+src p50"), ("hybrid_where_lang", "hyb+lang p50"),
            ("search_process_peak_rss_mib", "search RSS MiB"), ("bytes_per_chunk_bm25", "BM25 B/chunk"),
            ("bytes_per_chunk_total", "total B/chunk")]
    lines = [" | ".join(label for _, label in cols)]
    for row in rows:
        cells = []
        for key, _ in cols:
            value = row.get(key)
            if isinstance(value, dict):
                value = value.get("p50_ms")
            cells.append("-" if value is None else str(value))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (CMRC 2018, XQuAD)")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--server-max", type=int, default=100_000, help="largest N run against a chroma server")
    parser.add_argument("--no-embedded", action="store_true")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also measure in the ingesting process every this many chunks (0: never)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from tests.support.standins import tiny_m3e

    model = tiny_m3e()
    work = args.work or Path(tempfile.mkdtemp(prefix="m3e-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result: dict[str, Any] = {
        "benchmark": "scale",
        "note": "tiny random-weight stand-in, random 64-d unit vectors: index costs only, not M3E's speed",
        "machine": machine(), "versions": versions(), "load_average_start": load_average(),
        "sizes": sizes, "rows": [],
    }
    try:
        if not args.no_embedded:
            result["rows"] += run_backend("embedded", sizes, model, args.data, work, args.queries, None, env,
                                          args.checkpoint_every)
        server_sizes = [n for n in sizes if n <= args.server_max]
        if server_sizes:
            proc, url = start_server(work)
            try:
                env_server = dict(env, M3E_RAG_SPARSE_CACHE=str(work / "sparse-cache"))
                os.environ["M3E_RAG_SPARSE_CACHE"] = env_server["M3E_RAG_SPARSE_CACHE"]
                result["rows"] += run_backend("server", server_sizes, model, args.data, work, args.queries, url,
                                              env_server)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        result["load_average_end"] = load_average()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(table(result["rows"]))
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
