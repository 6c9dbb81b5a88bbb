"""Every example runs, as a user would run it, with the bilingual stand-in model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, model: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if model is None:
        env.pop("M3E_MODEL", None)
    else:
        env["M3E_MODEL"] = str(model)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_quickstart_without_a_model_falls_back_to_the_stand_in(tmp_path: Path, bilingual_model_path: Path) -> None:
    proc = run_example("quickstart.py", "--index", str(tmp_path / "idx"))
    assert "offline bilingual stand-in" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    out = proc.stdout
    assert "Ingested 6 documents" in out
    answers = out.split("\nQ (")[1:]
    assert "giant_panda_gbk.txt" in answers[0].splitlines()[1]  # 大熊猫吃什么？ -> the GBK panda file first
    assert "eiffel_tower.md" in answers[1].splitlines()[1]
    assert "great_wall.md" in answers[2].splitlines()[1]
    assert "photosynthesis_mixed.html" in answers[3].splitlines()[1]
    assert "green_tea.txt" in answers[4].splitlines()[1]


def test_langchain_lcel_chain(tmp_path: Path, bilingual_model_path: Path) -> None:
    proc = run_example("langchain_lcel.py", "--index", str(tmp_path / "idx"), model=bilingual_model_path)
    assert "问题：大熊猫每天吃多少竹子？" in proc.stdout
    assert "十二到三十八公斤" in proc.stdout  # the GBK panda passage reached the prompt, decoded


def test_llamaindex_query_engine(tmp_path: Path, bilingual_model_path: Path) -> None:
    proc = run_example("llamaindex_query_engine.py", "--index", str(tmp_path / "idx"), model=bilingual_model_path)
    lines = proc.stdout.splitlines()
    assert lines[0] == "Q: What is the Eiffel Tower made of?"
    assert "eiffel_tower.md" in lines[1]


def test_llamaindex_tutorial(tmp_path: Path, bilingual_model_path: Path) -> None:
    """HF-style M3EEmbedding, M3EReader (GBK), M3ENodeParser, M3EVectorStore, filters, hybrid."""
    persist = str(tmp_path / "store")
    out = run_example("llamaindex_tutorial.py", "--persist-dir", persist, model=bilingual_model_path).stdout
    sections = out.split("\nQ: ")
    assert sections[0] == "Indexed 6 documents"
    panda, only_md, hybrid = sections[1].splitlines(), sections[2].splitlines(), sections[3].splitlines()
    assert "giant_panda_gbk.txt" in panda[1] and "竹子" in panda[1]  # the GBK file decoded and ranked first
    assert len(only_md) == 3 and all(".md:" in line for line in only_md[1:])
    assert "eiffel_tower.md" in hybrid[1]


def test_langchain_tutorial_hf_and_chroma_style(tmp_path: Path, bilingual_model_path: Path) -> None:
    db = tmp_path / "db"
    (db / "stale").mkdir(parents=True)  # the tutorial starts from an empty database, as it says
    proc = run_example("langchain_tutorial.py", "--persist-directory", str(db), model=bilingual_model_path)
    lines = proc.stdout.splitlines()
    assert lines[0] == "切分得到 3 个片段"
    assert lines[1].startswith("[") and "] green_tea.txt@0: 绿茶的制作" in lines[1]
    assert 0.0 <= float(lines[1][1:6]) <= 1.0  # a relevance score
    assert lines[2].startswith("retriever: great_wall.md")
    assert len(lines) == 4 and db.is_dir() and not (db / "stale").exists()
