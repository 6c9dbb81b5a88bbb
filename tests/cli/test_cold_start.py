"""Cold start: ``m3e-rag --help`` and ``m3e-rag info --index`` never import torch or load a model.

(Their speed is measured in benchmarks/cold_start.py; this checks the cause, not the time.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from m3e_rag import RAGPipeline

HEAVY = ("torch", "transformers", "sentence_transformers")
CHILD = r"""
import json, sys
from m3e_rag.cli.dispatch import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"rc": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)  # noqa: UP031


def run_cli(*args: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "M3E_MODEL"} | {"HF_HUB_OFFLINE": "1"})
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


def test_help_imports_no_model_stack() -> None:
    status, out = run_cli("--help")
    assert status == {"rc": 0, "heavy": []} and "ingest" in out


def test_info_index_reads_the_index_without_a_model(tmp_path: Path, tiny_model_path: Path) -> None:
    index = tmp_path / "idx"
    RAGPipeline(index, model_name=str(tiny_model_path)).ingest(
        texts=["大熊猫吃竹子。", "Green tea is unfermented."], sources=["panda", "tea"]
    )
    status, out = run_cli("info", "--index", str(index), "--json")
    assert status == {"rc": 0, "heavy": []}
    info = json.loads(out)
    assert info["model"] == str(tiny_model_path) and info["dim"] == 64
    assert info["chunks"] == 2 and info["sources"] == 2
    status, _ = run_cli("info", "--index", str(index), "--model", "m3e-small")  # not the model that built it
    assert status["rc"] == 2 and status["heavy"] == []
