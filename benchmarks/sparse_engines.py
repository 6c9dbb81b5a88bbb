"""Two persistent BM25 designs on the same pre-tokenized chunks: SQLite FTS5 against m3e-rag's postings + log.

The choice behind :mod:`m3e_rag.index.sparse.bm25` / :mod:`m3e_rag.index.sparse.folder`. Both get the same jieba terms
(tokenizing is common to both and left out), the same chunks (``benchmarks/scale.py``'s corpus) and the
same queries. Measured: bulk load chunks/s, one-chunk write + commit p50, top-100 query p50/p99 (FTS5:
``MATCH 'a OR b ...' ORDER BY rank``, its built-in ``bm25()``; ours: ``SparseIndex.search``), open time,
bytes on disk per chunk.

Usage: ``nice -n 10 .venv/bin/python benchmarks/sparse_engines.py --data ../shared/data --n 50000``;
writes ``benchmarks/results/sparse_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import load_average, machine  # noqa: E402
from scale import Corpus, sentences  # noqa: E402

from m3e_rag.index.sparse.folder import SparseFolder  # noqa: E402
from m3e_rag.index.sparse.tokenize import tokenize_for_bm25  # noqa: E402


def pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}


def term_token(term: str) -> str:
    """FTS5-safe token for a term: its hex, so the unicode61 tokenizer keeps it whole."""
    return "x" + term.encode("utf-8").hex()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_engines.json")
    args = parser.parse_args()
    corpus = Corpus(*sentences(args.data))
    texts, _, ids = corpus.batch(0, args.n)
    t = time.perf_counter()
    terms = [tokenize_for_bm25(text) for text in texts]
    tokenize_s = time.perf_counter() - t
    queries = [tokenize_for_bm25(corpus.query(j)) for j in range(args.queries)]
    queries = [q for q in queries if q]
    work = Path(tempfile.mkdtemp(prefix="m3e-engines-"))
    out: dict[str, Any] = {"benchmark": "sparse_engines", "n": args.n, "machine": machine(),
                           "load_average_start": load_average(),
                           "jieba_tokenize_chunks_per_s": round(args.n / tokenize_s)}

    # --- SQLite FTS5 over pre-tokenized text
    db = sqlite3.connect(work / "fts.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE VIRTUAL TABLE chunks USING fts5(id UNINDEXED, body, tokenize='unicode61')")
    t = time.perf_counter()
    with db:
        db.executemany("INSERT INTO chunks(id, body) VALUES (?, ?)",
                       [(i, " ".join(map(term_token, ts))) for i, ts in zip(ids, terms, strict=True)])
    fts: dict[str, Any] = {"bulk_chunks_per_s": round(args.n / (time.perf_counter() - t))}
    writes = []
    for j in range(30):
        t = time.perf_counter()
        with db:
            db.execute("INSERT INTO chunks(id, body) VALUES (?, ?)", (f"w{j}", " ".join(map(term_token, terms[j]))))
        writes.append(time.perf_counter() - t)
    fts["write_1_commit"] = pct(writes)
    times = []
    for q in queries:
        match = " OR ".join(sorted({term_token(term) for term in q}))
        t = time.perf_counter()
        db.execute("SELECT id, bm25(chunks) FROM chunks WHERE chunks MATCH ? ORDER BY rank LIMIT 100",
                   (match,)).fetchall()
        times.append(time.perf_counter() - t)
    fts["query_top100"] = pct(times)
    db.close()
    t = time.perf_counter()
    sqlite3.connect(work / "fts.sqlite3").execute("SELECT count(*) FROM chunks").fetchone()
    fts["open_s"] = round(time.perf_counter() - t, 3)
    fts["bytes_per_chunk"] = round(sum(p.stat().st_size for p in work.glob("fts.sqlite3*")) / args.n, 1)
    out["sqlite_fts5"] = fts

    # --- m3e-rag postings + append-only log
    folder = work / "ours"
    disk = SparseFolder.create(folder, generation=0)
    t = time.perf_counter()
    step = 2000
    for start in range(0, args.n, step):
        disk._append({"op": "u", "ids": ids[start : start + step], "terms": terms[start : start + step],
                      "gen": start})
        disk.maybe_compact()
    disk.compact()
    ours: dict[str, Any] = {"bulk_chunks_per_s": round(args.n / (time.perf_counter() - t))}
    writes = []
    for j in range(30):
        t = time.perf_counter()
        disk._append({"op": "u", "ids": [f"w{j}"], "terms": [terms[j]], "gen": args.n + j})
        writes.append(time.perf_counter() - t)
    ours["write_1_log_append"] = pct(writes)
    texts_by_query = [" ".join(q) for q in queries]
    times = []
    for q in texts_by_query:
        t = time.perf_counter()
        disk.index.search(q, k=100)
        times.append(time.perf_counter() - t)
    ours["query_top100_incl_query_tokenizing"] = pct(times)
    t = time.perf_counter()
    SparseFolder.open(folder)
    ours["open_s"] = round(time.perf_counter() - t, 3)
    ours["bytes_per_chunk"] = round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / args.n, 1)
    out["m3e_rag_postings_log"] = ours
    out["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("n", "sqlite_fts5", "m3e_rag_postings_log")}, indent=1))


if __name__ == "__main__":
    main()
