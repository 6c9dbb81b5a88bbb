"""Smoke test of benchmarks/encode.py: the quick mode runs end to end, on the fewest texts, and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Fewer texts than --quick's own (16 passages, 8 queries, 24 fidelity pairs, 4 ingest documents): every section
#: and every configuration still runs and writes its keys; only the counts behind each number shrink.
SMALLEST = ["--n-passages", "4", "--queries", "3", "--fidelity-paragraphs", "6", "--fidelity-questions", "6",
            "--memory-passages", "2", "--ingest-docs", "2"]



@pytest.mark.slow
def test_quick_benchmark_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "encode.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "encode.py"), "--quick", "--out", str(out), *SMALLEST],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"machine", "versions", "peak", "throughput", "fidelity", "latency", "ingest", "targets"} <= set(result)
    assert result["peak"]["fp32_roof_gflops"] > 0
    configs = result["throughput"]["small"]["configs"]
    assert set(configs) == {"st-bs32", "llamaindex-bs10", "m3e-torch", "m3e-onnx", "m3e-onnx-int8"}
    for entry in configs.values():
        assert entry["passages_per_s"] > 0 and entry["tokens_per_s"] > 0 and 0 < entry["pct_of_roof"]
        assert "ratio_vs_baseline" in entry and "padding_fraction" in entry
    # Every backend is faithful to the baseline's vectors on the random-weight shape.
    assert configs["m3e-torch"]["cosine_vs_baseline"]["min"] >= 0.9999
    assert configs["m3e-onnx"]["cosine_vs_baseline"]["min"] >= 0.9999
    assert configs["m3e-torch"]["memory"]["peak_rss_mib"] > 0
    fidelity = next(iter(result["fidelity"].values()))
    assert {"torch", "onnx", "onnx-int8", "sentence-transformers"} <= set(fidelity)
    assert fidelity["onnx"]["cosine"]["min"] >= 0.9999
    latency = result["latency"]["small"]
    assert latency["m3e-onnx-int8"]["p50_ms"] > 0 and "p50_ratio_vs_baseline" in latency["m3e-onnx"]
    ingest = result["ingest"]
    assert ingest["reingest_embedded"] == 0 and ingest["chunks"] > 0
    assert {t["target"] for t in result["targets"]}
    assert "| config | passages/s |" in proc.stdout
