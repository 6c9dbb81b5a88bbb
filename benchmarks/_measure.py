"""Measuring helpers for the benchmarks: machine facts, matmul peaks, FLOP counts, timing, memory.

FLOP formula (``useful_flops``): a BERT encoder layer over a sequence of n non-padding tokens costs
``2 * n * (4*h*h + 2*h*ff)`` in its six Linear layers (Q, K, V, attention output: h x h; FFN: h x ff
and ff x h) plus ``4 * n * n * h`` in attention (Q K^T and softmax(.) V); times the number of layers.
Embeddings, LayerNorm, GELU, softmax and pooling are not counted (few FLOPs, memory-bound), nor is
padding: it is work, but not useful work. For the m3e-base shape at n = 150 this is 175 MFLOP/token.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shape:
    """Encoder dimensions used by the FLOP formula."""

    layers: int
    hidden: int
    ff: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        return cls(int(config.num_hidden_layers), int(config.hidden_size), int(config.intermediate_size))


def linear_flops(shape: Shape, lengths: np.ndarray) -> float:
    """FLOPs of the Linear layers for sequences of the given non-padding lengths."""
    per_token = 2 * (4 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.ff) * shape.layers
    return float(per_token * lengths.sum())


def attention_flops(shape: Shape, lengths: np.ndarray) -> float:
    """FLOPs of Q K^T and attention-times-V for sequences of the given non-padding lengths."""
    return float(4 * shape.hidden * shape.layers * (lengths.astype(np.float64) ** 2).sum())


def useful_flops(shape: Shape, lengths: np.ndarray) -> float:
    """Linear plus attention FLOPs, padding excluded (see the module docstring)."""
    return linear_flops(shape, lengths) + attention_flops(shape, lengths)


def machine() -> dict[str, Any]:
    """CPU model, core counts, relevant ISA flags, memory, load average."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    model = ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info["cpu_model"] = model or platform.processor()
    info["logical_cpus"] = os.cpu_count()
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        info["usable_cpus"] = os.cpu_count()
    info["isa"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "fma"})
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            total_kib = int(fh.readline().split()[1])
        info["memory_gib"] = round(total_kib / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    info["loadavg_at_start"] = load_average()
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes competing for the cores), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str]:
    """Versions of the libraries whose speed is measured."""
    import importlib.metadata

    out = {}
    for name in ("torch", "onnxruntime", "onnx", "sentence-transformers", "transformers", "numpy", "chromadb"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls after ``warmup`` calls (a peak is a best case)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fp32_matmul_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float | None]:
    """GFLOP/s of n x n fp32 matmuls with torch's threads, by three kernels.

    ``torch_mm`` is what ``torch.nn.Linear`` runs by default (MKL sgemm); ``onednn_packed`` is oneDNN with a
    pre-packed weight (what the torch backend uses); ``ort_matmul`` is ONNX Runtime's MLAS. MKL takes its
    AVX2 path on AMD CPUs, so the machine's real fp32 roof is the largest of the three.
    """
    import torch

    out: dict[str, float | None] = {"torch_mm": None, "onednn_packed": None, "ort_matmul": None}
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out["torch_mm"] = 2 * n**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, None)
        seconds = best_time(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""), repeats)
        out["onednn_packed"] = 2 * n**3 / seconds / 1e9
    except (RuntimeError, AttributeError):
        pass
    try:
        out["ort_matmul"] = _ort_peak(n, repeats, int8=False)
    except ImportError:
        pass
    return out


def int8_matmul_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float | None]:
    """GOP/s of int8 matmuls: torch._int_mm and ONNX Runtime MatMulInteger (u8 x s8 -> s32), where available."""
    out: dict[str, float | None] = {"torch_int_mm": None, "ort_matmulinteger": None}
    import torch

    try:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        seconds = best_time(lambda: torch._int_mm(a, b), repeats)
        out["torch_int_mm"] = 2 * n**3 / seconds / 1e9
    except (RuntimeError, AttributeError, NotImplementedError):
        pass
    try:
        out["ort_matmulinteger"] = _ort_peak(n, repeats, int8=True)
    except ImportError:
        pass
    return out


def _ort_peak(n: int, repeats: int, *, int8: bool) -> float:
    """GFLOP/s (or GOP/s) of one ONNX Runtime MatMul (fp32) or MatMulInteger (u8 x s8 -> s32), constant B."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight: np.ndarray
    a: np.ndarray
    if int8:
        weight = rng.integers(-128, 127, (n, n), dtype=np.int8)
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        node, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        weight = rng.standard_normal((n, n), dtype=np.float32)
        a = rng.standard_normal((n, n), dtype=np.float32)
        node, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(node, ["a", "w"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _torch_threads()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    seconds = best_time(lambda: sess.run(None, {"a": a}), repeats)
    return 2 * n**3 / seconds / 1e9


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux), else the peak so far."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec. (``ru_maxrss`` does not: a child
    started by a big parent reports the parent's peak.) Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if platform.system() == "Darwin" else 1024)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two equally shaped matrices."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def centred_cosine_rows(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cosine after subtracting the reference mean vector from both (removes the shared direction)."""
    mean = np.asarray(ref, dtype=np.float64).mean(axis=0, keepdims=True)
    return cosine_rows(ref - mean, other - mean)


def topk(queries: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar docs (cosine) per query, best first."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    scores = q @ d.T
    k = min(k, docs.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def topk_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of shared ids between two top-k index arrays (order ignored)."""
    k = a.shape[1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist(), strict=True)]))


def vector_fidelity(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray],
                    answers: np.ndarray) -> dict[str, Any]:
    """How far ``got`` (documents, queries) moved from ``ref``: cosine, centred cosine, retrieval agreement.

    ``answers[i]`` is the document question ``i`` was asked about. Returns raw and centred cosine (mean, min)
    over documents and queries, the top-10 overlap of question->document retrieval with ``ref``'s, and
    hit@1 / hit@10 of the answer document.
    """
    (ref_d, ref_q), (d, q) = ref, got
    raw = cosine_rows(np.concatenate([ref_d, ref_q]), np.concatenate([d, q]))
    cen = np.concatenate([centred_cosine_rows(ref_d, d), centred_cosine_rows(ref_q, q)])
    top = topk(q, d, 10)
    return {
        "cosine": {"mean": round(float(raw.mean()), 6), "min": round(float(raw.min()), 6)},
        "centred_cosine": {"mean": round(float(cen.mean()), 5), "min": round(float(cen.min()), 5)},
        "top10_overlap_vs_torch": round(topk_overlap(top, topk(ref_q, ref_d, 10)), 4),
        "hit_at_1": round(float((top[:, 0] == answers).mean()), 4),
        "hit_at_10": round(float((top == answers[:, None]).any(axis=1).mean()), 4),
    }


def fidelity_by_row(vecs: dict[str, tuple[np.ndarray, np.ndarray]], answers: Any) -> dict[str, Any]:
    """:func:`vector_fidelity` of every row of ``vecs`` (documents, queries) against ``vecs["torch"]``, with the counts.

    ``answers[i]`` is the document question ``i`` was asked about.
    """
    docs, queries = vecs["torch"]
    entry: dict[str, Any] = {"paragraphs": len(docs), "questions": len(queries)}
    for name, got in vecs.items():
        entry[name] = vector_fidelity(vecs["torch"], got, np.asarray(answers))
    return entry


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's result as indented UTF-8 JSON to ``out`` (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
