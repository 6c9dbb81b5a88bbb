"""The kernel ceiling under the service: each graph file run bare, side by side, on the service's texts.

``benchmarks/serve.py`` compares servers; this asks what the model itself allows each of them on this CPU.
On the m3e-base-shaped stand-in, over the short texts the serve benchmark's load generator sends, in batches of
32 (tokenized once, the same arrays for every row), it times:

* ONNX Runtime on m3e-rag's files: its fp32 export, ``onnx-int8`` (FFN output kept fp32) and ``onnx-int8-fast``
  (every MatMul int8), with the session options ``m3e_rag.encode.onnx`` uses;
* ONNX Runtime on optimum's files, made the way ``benchmarks/serve.py`` makes them for infinity-emb's optimum
  engine: ``model.onnx`` after ONNX Runtime's transformer fusions and ``model_quantized.onnx`` from
  ``optimum-cli onnxruntime quantize --avx512_vnni`` (per-tensor weights);
* ONNX Runtime on a fused-attention int8 file: the transformer exported with eager attention, fused by ONNX
  Runtime's BERT optimizer (Attention, SkipLayerNorm, BiasGelu), then quantized per channel with the
  Attention ops as QAttention (an alternative recipe m3e-rag does not ship; here to see whether fusion pays);
* torch: fp32, bf16 under ``torch.autocast`` (AMX where the CPU has it) and dynamic int8 Linears with the oneDNN
  engine (per-channel weights);
* two one-thread sessions of a file running two batches at once (m3e-rag's fast file and infinity's), against
  one two-thread session sharing each batch: what two forward passes in flight would give a service;
* ``M3EEncoder(backend="onnx-int8-fast").encode_documents``: the same file end to end (tokenizer, pooling,
  normalisation), to show what the encoder keeps of the bare session's rate.

Rows are run round-robin, ``--rounds`` times, and each row's median texts/s is reported with its spread and the
median of its per-round ratio to infinity's file (paired: a machine whose speed drifts moves both alike); the
fidelity column is the centred cosine of each row's mean-pooled vectors to torch fp32's on the same texts.
The load average is recorded before and after, and the run refuses to start on a busy machine (``--force-busy``
runs anyway, recorded). Prints a table; writes ``benchmarks/results/int8_kernels.json``.
Usage: ``python benchmarks/int8_kernels.py`` (needs infinity-emb's venv for optimum-cli: installed on first use).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _corpus  # noqa: E402
import _measure as M  # noqa: E402
import _serve_servers as servers  # noqa: E402
from serve import wait_quiet  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "int8_kernels.json"
ANCHOR = "ORT optimum avx512_vnni int8 (infinity's file)"
Batch = dict[str, np.ndarray]


def _ort_row(path: Path, threads: int) -> Callable[[Batch], np.ndarray]:
    """Run ``path`` in ONNX Runtime with m3e-rag's session options; returns last_hidden_state per batch."""
    import onnxruntime as ort

    from m3e_rag.encode.onnx import _session_options

    session = ort.InferenceSession(str(path), _session_options(ort, threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda batch: session.run(None, {n: batch[n] for n in names})[0]


def _two_sessions(path: Path) -> Callable[[list[Batch]], None]:
    """Two one-thread sessions of ``path``, each running every other batch at the same time (two threads)."""
    from concurrent.futures import ThreadPoolExecutor

    pair = [_ort_row(path, 1), _ort_row(path, 1)]

    def run_all(batches: list[Batch]) -> None:
        def half(k: int) -> None:
            for batch in batches[k::2]:
                pair[k](batch)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(half, (0, 1)))

    return run_all


def _fused_attention_file(model_dir: Path, out: Path) -> Path:
    """Eager-attention export, ONNX Runtime's BERT fusions, per-channel int8 with QAttention (cached in ``out``)."""
    target = out / "fused-qattention-int8.onnx"
    if target.exists():
        return target
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel

    from m3e_rag.encode.onnx import _export_fp32

    out.mkdir(parents=True, exist_ok=True)
    hf = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    _export_fp32(hf, ["input_ids", "attention_mask", "token_type_ids"], out / "eager.onnx")
    fused = optimize_model(str(out / "eager.onnx"), model_type="bert", num_heads=hf.config.num_attention_heads,
                           hidden_size=hf.config.hidden_size)
    stats = fused.get_fused_operator_statistics()
    if not stats.get("Attention"):
        raise SystemExit(f"ONNX Runtime's optimizer fused no attention in the eager export: {stats}")
    fused.save_model_to_file(str(out / "eager-fused.onnx"))
    quantize_dynamic(str(out / "eager-fused.onnx"), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Attention"],
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    return target


def _torch_rows(model_dir: Path) -> dict[str, Callable[[Batch], np.ndarray]]:
    import torch
    from transformers import AutoModel

    fp32 = AutoModel.from_pretrained(str(model_dir)).eval()

    def run(model: Any, autocast: bool = False) -> Callable[[Batch], np.ndarray]:
        def call(batch: Batch) -> np.ndarray:
            feeds = {k: torch.from_numpy(v) for k, v in batch.items()}
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model(**feeds).last_hidden_state.float().numpy()
        return call

    rows = {"torch fp32": run(fp32), "torch bf16 autocast": run(fp32, autocast=True)}
    if "onednn" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "onednn"
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        rows["torch int8 oneDNN (dynamic, per channel)"] = run(  # a quantized copy: fp32 stays as it is
            torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=False))
    return rows


def _pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from m3e_rag import M3EEncoder
    from m3e_rag.encode.onnx import default_intra_op_threads
    from tests.support import standins

    model_dir = standins.m3e_shape("base")
    exe, why = servers.ensure_infinity()
    if exe is None:
        raise SystemExit(f"optimum (in infinity-emb's venv) is not available: {why}")
    optimum = servers.infinity_onnx_folder(model_dir)
    threads = default_intra_op_threads()
    texts = _corpus.short_queries(args.data, args.texts, seed=7)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    batches: list[Batch] = []
    for i in range(0, len(texts), args.batch):
        enc = tok(texts[i : i + args.batch], padding=True, truncation=True, max_length=512, return_tensors="np")
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})

    encoders = {b: M3EEncoder(str(model_dir), backend=b, batch_size=args.batch)
                for b in ("onnx", "onnx-int8", "onnx-int8-fast")}
    files = {}
    for backend, enc in encoders.items():
        enc.encode_documents(texts[:2])  # exports (cached) and loads
        files[backend] = Path(enc._loaded().runner.model_file)  # the cached file the backend runs
    rows: dict[str, Callable[[Batch], np.ndarray]] = {
        "ORT m3e-rag fp32 export": _ort_row(files["onnx"], threads),
        "ORT m3e-rag onnx-int8": _ort_row(files["onnx-int8"], threads),
        "ORT m3e-rag onnx-int8-fast": _ort_row(files["onnx-int8-fast"], threads),
        "ORT optimum fp32 (fused)": _ort_row(optimum / "model.onnx", threads),
        ANCHOR: _ort_row(optimum / "model_quantized.onnx", threads),
        "ORT fused attention, QAttention int8": _ort_row(
            _fused_attention_file(model_dir, REPO / "benchmarks" / ".cache" / "int8-kernels" / model_dir.name),
            threads),
        **_torch_rows(model_dir),
    }
    # The same files as two one-thread sessions running two batches at once, instead of one session whose two
    # threads share each batch: what a service with two forward passes in flight would get.
    layouts = {"ORT m3e-rag onnx-int8-fast, 2 sessions x 1 thread": (
                   _two_sessions(files["onnx-int8-fast"]), "ORT m3e-rag onnx-int8-fast"),
               "ORT optimum avx512_vnni int8, 2 sessions x 1 thread": (
                   _two_sessions(optimum / "model_quantized.onnx"), ANCHOR)}
    fast = encoders["onnx-int8-fast"]
    end_to_end = "M3EEncoder onnx-int8-fast end to end"
    chunks = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    masks = [b["attention_mask"] for b in batches]
    ref = np.concatenate([_pooled(rows["torch fp32"](b), m) for b, m in zip(batches, masks, strict=True)])
    fidelity = {}
    for name, fn in rows.items():
        got = np.concatenate([_pooled(fn(b), m) for b, m in zip(batches, masks, strict=True)])
        fidelity[name] = round(float(M.centred_cosine_rows(ref, got).mean()), 5)
    fidelity[end_to_end] = fidelity["ORT m3e-rag onnx-int8-fast"]
    fidelity.update({name: fidelity[same] for name, (_, same) in layouts.items()})

    rates: dict[str, list[float]] = {name: [] for name in [*rows, *layouts, end_to_end]}
    load_during = []
    for _ in range(args.rounds):
        for name, fn in rows.items():
            started = time.perf_counter()
            for b in batches:
                fn(b)
            rates[name].append(len(texts) / (time.perf_counter() - started))
        for name, (run_all, _) in layouts.items():
            started = time.perf_counter()
            run_all(batches)
            rates[name].append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for chunk in chunks:
            fast.encode_documents(chunk)
        rates[end_to_end].append(len(texts) / (time.perf_counter() - started))
        load_during.append(M.load_average())
    mean_tokens = statistics.mean(int(m.sum(axis=1).mean()) for m in masks)
    return {
        "model": "m3e-base-shaped stand-in (random weights: kernel figures, not M3E quality)",
        "texts": len(texts), "batch": args.batch, "mean_tokens_per_text": round(mean_tokens, 1),
        "ort_intra_op_threads": threads, "rounds": args.rounds, "loadavg_after_each_round": load_during,
        "rows": {name: {"texts_per_s_median": round(statistics.median(r), 1), "min": round(min(r), 1),
                        "max": round(max(r), 1),
                        # each round's rate over the infinity file's in the same round, then the median: a
                        # machine whose speed drifts between rounds moves both alike
                        "paired_ratio_to_infinity_file": round(statistics.median(
                            a / b for a, b in zip(r, rates[ANCHOR], strict=True)), 3),
                        "centred_cosine_vs_torch_fp32": fidelity[name]}
                 for name, r in rates.items()},
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| row | texts/s median (min-max) | / infinity's int8 file (paired) | centred cosine vs torch fp32 |",
             "|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['texts_per_s_median']:.1f} ({r['min']:.0f}-{r['max']:.0f}) | "
                     f"{r['paired_ratio_to_infinity_file']:.2f}x | {r['centred_cosine_vs_torch_fp32']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="the shared data (the serve benchmark's texts come from "
                   "its questions when given, else from the built-in corpus)")
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--max-load", type=float, default=0.75 * (os.cpu_count() or 2))
    p.add_argument("--force-busy", action="store_true", help="run on a busy machine anyway (recorded in the JSON)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet, load_before = wait_quiet(args.max_load, 180.0)
    if not quiet and not args.force_busy:
        sys.exit(f"error: the machine is busy (1-minute load average {load_before}); stop the other jobs or pass "
                 "--force-busy (recorded)")
    started = time.time()
    result = {"benchmark": "int8_kernels", "command": "python benchmarks/int8_kernels.py " + " ".join(sys.argv[1:]),
              "machine": M.machine(), "versions": M.versions(), "loadavg_before": load_before,
              "forced_busy": bool(args.force_busy and not quiet), **run(args)}
    result["elapsed_s"] = round(time.time() - started, 1)
    M.write_result(args.out, result)
    print(table(result))


if __name__ == "__main__":
    main()
