"""Cache the dense and BM25 candidate rankings of every query of a set (for benchmarks/fusion.py).

Per corpus, the index is built once through :class:`~m3e_rag.pipeline.RAGPipeline` (the pipeline's
chunking, Chroma, BM25); per set, the queries are embedded once and, for each query, the top
``DEPTH`` chunks of the dense ranking (Chroma cosine) and of the BM25 ranking (with scores), the
query's BM25 coverage and its BM25 terms with their document frequencies are written to
``<cache>/<set>.json``. Fusion variants are then replayed offline in seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _fusion_sets import SETS, build_set

from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.index.sparse.tokenize import tokenize_for_bm25
from m3e_rag.pipeline import RAGPipeline

#: Candidates cached per ranking (``m3e-rag eval`` asks for 40 chunks per search at k=10).
DEPTH = 50
_QUERY_BATCH = 64


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_set(name: str, data: Path, cache: Path, encoder: M3EEncoder, limit: int | None = None) -> Path:
    """Write ``<cache>/<name>.json`` unless it exists; return its path."""
    out = cache / f"{name}.json"
    if out.exists():
        return out
    corpus_key = SETS[name][0]
    task = build_set(name, data).limit(limit)
    pipe = RAGPipeline(index=cache / f"index-{corpus_key}", encoder=encoder)
    started = time.perf_counter()
    pipe.ingest(documents=task.corpus)
    sparse = pipe.sparse_index
    sparse.build()
    _log(f"{name}: index {corpus_key} ready ({pipe.store.count()} chunks, {time.perf_counter() - started:.0f} s)")
    chunk_source: dict[str, str] = {}
    chunk_text: dict[str, str] = {}
    df: Counter[str] = Counter()
    for ids, texts_page in pipe.store.iter_texts():
        chunk_text.update(zip(ids, texts_page, strict=True))
        for rec in pipe.store.get(ids=ids, include_text=False):
            chunk_source[rec.id] = str(rec.metadata["source"])
        for cid in ids:
            df.update(set(sparse.terms(cid)))
    texts = [q.text for q in task.queries]
    started = time.perf_counter()
    vectors = [v for s in range(0, len(texts), _QUERY_BATCH)
               for v in encoder.encode_queries(texts[s : s + _QUERY_BATCH])]
    _log(f"{name}: {len(texts)} queries embedded ({time.perf_counter() - started:.0f} s)")
    rows: list[dict[str, Any]] = []
    for q, vec in zip(task.queries, vectors, strict=True):
        dense = pipe.store.query(vec, DEPTH)
        hits = sparse.search(q.text, DEPTH)
        terms = tokenize_for_bm25(q.text)
        rows.append({
            "qid": q.qid,
            "text": q.text,
            "relevant": sorted(q.relevant),
            "dense": [[h.id, round(h.score, 6)] for h in dense],
            "sparse": [[cid, round(float(s), 6)] for cid, s in hits],
            "coverage": sparse.term_coverage(q.text),
            "terms": terms,
            "df": [df.get(t, 0) for t in terms],
        })
    payload = {
        "set": name,
        "description": SETS[name][1],
        "model": encoder.model_name,
        "chunks": len(chunk_source),
        "passages": len(task.corpus),
        "chunk_source": chunk_source,
        "chunk_text": chunk_text,  # the index folder may be re-chunked later; the replay needs these
        "queries": rows,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)
    _log(f"{name}: cached {len(rows)} queries -> {out}")
    return out
