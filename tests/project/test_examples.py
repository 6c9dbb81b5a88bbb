"""Every example runs as a user would run it: with and without ``M3E_MODEL``, from the clone root and elsewhere.

Three ways, each for every script in ``examples/``:

- **without ``M3E_MODEL``, from the clone root** (``python examples/x.py``): ``m3e-base`` cannot be had
  offline (an empty Hugging Face cache and ``HF_HUB_OFFLINE=1``), so the example falls back to the
  bilingual stand-in the tests use and says so on stderr; its answers are checked (the right file first).
- **with ``M3E_MODEL``, as shipped, from another directory**: a copy of ``examples/`` run with no
  arguments from an unrelated working directory, ``M3E_MODEL`` naming the tiny M3E-shaped stand-in
  (plumbing only, so no answer is checked, only the shape of the output). Its default index folders
  land beside the copied script and record that model; the working directory stays empty.
- **without any model**: the copy (outside a clone, so no stand-in can be built) without ``M3E_MODEL``
  prints one ``error:`` line naming the fixes and exits 2, writing nothing.

The cheap runs go two at a time (the time goes into single-threaded imports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

#: script -> (its index option, its default index folder beside the script)
SCRIPTS: dict[str, tuple[str, str]] = {
    "quickstart.py": ("--index", ".index"),
    "langchain_lcel.py": ("--index", ".index-lcel"),
    "langchain_tutorial.py": ("--persist-directory", ".index-tutorial"),
    "llamaindex_query_engine.py": ("--index", ".index-llamaindex"),
    "llamaindex_tutorial.py": ("--persist-dir", ".index-llamaindex-tutorial"),
}


def test_every_example_is_covered() -> None:
    """A new example must be added to SCRIPTS, so that all three ways run it."""
    shipped = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert shipped == set(SCRIPTS)


def run_example(script: Path, *args: str, cwd: Path, model: Path | None, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; ``model=None`` runs it without ``M3E_MODEL``.

    The Hugging Face cache is an empty folder, so ``m3e-base`` is never found (not even on a machine that has it).
    """
    hub_cache = tmp / "empty-hf-cache"
    hub_cache.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), PYTHONPATH="")
    env.pop("M3E_MODEL", None)
    if model is not None:
        env["M3E_MODEL"] = str(model)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``examples/`` outside any clone (no tests/support beside it), without index folders."""
    copy = tmp_path_factory.mktemp("not-a-clone") / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns(".index*", "__pycache__"))
    return copy


def recorded_models(index: Path) -> set[str]:
    """The models an index folder's manifest records (one per collection)."""
    manifest = json.loads((index / "m3e-rag.json").read_text(encoding="utf-8"))
    return {c["model"] for c in manifest["collections"].values()}


# ------------------------------------------------------------------ with M3E_MODEL, as shipped, elsewhere


def test_every_example_runs_as_shipped_from_another_directory(
    shipped_copy: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def one(name: str) -> subprocess.CompletedProcess[str]:
        return run_example(shipped_copy / name, cwd=elsewhere, model=tiny_model_path, tmp=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(SCRIPTS, pool.map(one, SCRIPTS), strict=True))
    for name, proc in procs.items():
        out = ok(proc)
        assert "[examples]" not in proc.stderr, f"{name} ignored M3E_MODEL: {proc.stderr[-1000:]}"
        index = shipped_copy / SCRIPTS[name][1]
        assert recorded_models(index) == {str(tiny_model_path)}, name
        assert out.strip(), name
    assert not any(elsewhere.iterdir()), "an example wrote into the working directory"
    assert "Ingested 6 documents" in procs["quickstart.py"].stdout
    assert procs["quickstart.py"].stdout.count("\nQ (") == 5
    assert "问题：大熊猫每天吃多少竹子？" in procs["langchain_lcel.py"].stdout
    assert procs["langchain_tutorial.py"].stdout.startswith("切分得到 ")
    assert procs["llamaindex_query_engine.py"].stdout.startswith("Q: What is the Eiffel Tower made of?\n")
    assert procs["llamaindex_tutorial.py"].stdout.startswith("Indexed 6 documents\n")


# ------------------------------------------------------------------ without any model


def test_every_example_without_a_model_says_how_to_get_weights(shipped_copy: Path, tmp_path: Path) -> None:
    """Outside a clone, offline, no M3E_MODEL: one error line naming the fixes, exit 2, nothing written."""

    def one(name: str) -> subprocess.CompletedProcess[str]:
        return run_example(shipped_copy / name, SCRIPTS[name][0], str(tmp_path / f"idx-{name}"), cwd=tmp_path,
                           model=None, tmp=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(SCRIPTS, pool.map(one, SCRIPTS), strict=True))
    for name, proc in procs.items():
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, f"{name} printed more than one line:\n{proc.stderr[-3000:]}"
        assert lines[0].startswith("error: no model for the examples: m3e-base cannot be loaded"), name
        assert all(fix in lines[0] for fix in ("M3E_MODEL", "HF_ENDPOINT", "not inside a clone")), lines[0]
        assert proc.stdout == "", name
        assert not (tmp_path / f"idx-{name}").exists(), f"{name} wrote an index"


# ------------------------------------------------------------------ without M3E_MODEL, from the clone root


def run_in_clone(name: str, *args: str, tmp: Path) -> str:
    proc = run_example(EXAMPLES / name, *args, cwd=REPO, model=None, tmp=tmp)
    out = ok(proc)
    assert "offline bilingual stand-in" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    return out


def test_quickstart_without_a_model_falls_back_to_the_stand_in(tmp_path: Path, bilingual_model_path: Path) -> None:
    out = run_in_clone("quickstart.py", "--index", str(tmp_path / "idx"), tmp=tmp_path)
    assert recorded_models(tmp_path / "idx") == {str(bilingual_model_path)}
    assert "Ingested 6 documents" in out
    answers = out.split("\nQ (")[1:]
    assert "giant_panda_gbk.txt" in answers[0].splitlines()[1]  # 大熊猫吃什么？ -> the GBK panda file first
    assert "eiffel_tower.md" in answers[1].splitlines()[1]
    assert "great_wall.md" in answers[2].splitlines()[1]
    assert "photosynthesis_mixed.html" in answers[3].splitlines()[1]
    assert "green_tea.txt" in answers[4].splitlines()[1]
    # Scores named by what they are, and the text around the query's words (the answer was cut off at 90 characters).
    assert "[cosine " in answers[1].splitlines()[1] and "[fused " in answers[4].splitlines()[1]
    assert "330 metres tall" in answers[1].splitlines()[1] and "八十度" in answers[4].splitlines()[1]


def test_langchain_lcel_chain(tmp_path: Path, bilingual_model_path: Path) -> None:
    out = run_in_clone("langchain_lcel.py", "--index", str(tmp_path / "idx"), tmp=tmp_path)
    assert "问题：大熊猫每天吃多少竹子？" in out
    assert "十二到三十八公斤" in out  # the GBK panda passage reached the prompt, decoded


def test_llamaindex_query_engine(tmp_path: Path, bilingual_model_path: Path) -> None:
    lines = run_in_clone("llamaindex_query_engine.py", "--index", str(tmp_path / "idx"), tmp=tmp_path).splitlines()
    assert lines[0] == "Q: What is the Eiffel Tower made of?"
    assert "eiffel_tower.md" in lines[1]


def test_llamaindex_tutorial(tmp_path: Path, bilingual_model_path: Path) -> None:
    """HF-style M3EEmbedding, M3EReader (GBK), M3ENodeParser, M3EVectorStore (sharing the model), filters, hybrid."""
    persist = tmp_path / "store"
    out = run_in_clone("llamaindex_tutorial.py", "--persist-dir", str(persist), tmp=tmp_path)
    assert recorded_models(persist) == {str(bilingual_model_path)}  # the store uses the embedding's model
    sections = out.split("\nQ: ")
    assert sections[0] == "Indexed 6 documents"
    panda, only_md, hybrid = sections[1].splitlines(), sections[2].splitlines(), sections[3].splitlines()
    assert "giant_panda_gbk.txt" in panda[1] and "竹子" in panda[1]  # the GBK file decoded and ranked first
    assert len(only_md) == 3 and all(".md:" in line for line in only_md[1:])
    assert "eiffel_tower.md" in hybrid[1]


def test_langchain_tutorial_hf_and_chroma_style(tmp_path: Path, bilingual_model_path: Path) -> None:
    db = tmp_path / "db"
    (db / "stale").mkdir(parents=True)  # the tutorial starts from an empty database, as it says
    lines = run_in_clone("langchain_tutorial.py", "--persist-directory", str(db), tmp=tmp_path).splitlines()
    assert lines[0] == "切分得到 3 个片段"
    assert lines[1].startswith("[") and "] green_tea.txt@0: 绿茶的制作" in lines[1]
    assert 0.0 <= float(lines[1][1:6]) <= 1.0  # a relevance score
    assert lines[2].startswith("retriever: great_wall.md")
    assert len(lines) == 4 and db.is_dir() and not (db / "stale").exists()
