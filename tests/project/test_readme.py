"""Every code block of README.md runs as written, against the offline bilingual stand-in model.

How the README is run, block by block, in order:

- ``python`` blocks run as scripts, each in a fresh interpreter (a user copies one block at a time).
- ``bash`` blocks run with ``bash -euo pipefail``, the venv's ``bin`` first on PATH (so ``m3e-rag`` and
  ``pip`` are the project's), ``M3E_MODEL`` pointing at the stand-in (the README says that
  ``$M3E_MODEL`` wins over the names it shows) and ``HF_HUB_OFFLINE=1``.
- Blocks run in one scratch folder holding a copy of ``examples/`` (the files the README names),
  so later blocks see what earlier ones created (an index ingested in one block is searched in the next).
  Blocks that name ``scripts/`` or install the package run in the repository root, as a user would.
- ``text`` blocks are not code (a layout tree, sample output) and are not run. Any other fence
  language fails the test, so a new block cannot slip through unrun.

One line is not run here: ``bash scripts/test.sh`` is the test suite itself, which CI runs as
``.ci/run`` (running it from inside the suite would recurse).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
_FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
_RUN_IN_REPO = re.compile(r"scripts/|pip install")
_NOT_RUN_HERE = "bash scripts/test.sh"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(README.read_text(encoding="utf-8"))]


def test_readme_has_only_runnable_or_text_blocks() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no code blocks"
    langs = {lang for lang, _ in blocks}
    assert langs <= {"python", "bash", "text"}, f"fence languages other than python/bash/text: {langs}"
    assert any(lang == "python" for lang in langs) and any(lang == "bash" for lang in langs)


def _strip_not_run(code: str) -> str:
    lines = []
    for line in code.splitlines():
        if line.strip().startswith(_NOT_RUN_HERE):
            lines.append(f": not run here, CI runs it as .ci/run: {line.strip()!r}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_every_readme_block_runs_as_written(tmp_path: Path, bilingual_model_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "examples", work / "examples", ignore=shutil.ignore_patterns(".index*", "__pycache__"))
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "M3E_MODEL": str(bilingual_model_path),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": "",
    }
    ran = 0
    for n, (lang, code) in enumerate(readme_blocks()):
        if lang == "text":
            continue
        cwd = REPO if _RUN_IN_REPO.search(code) else work
        if lang == "python":
            script = work / f"readme_block_{n}.py"
            script.write_text(code, encoding="utf-8")
            cmd = [sys.executable, str(script)]
        else:
            script = work / f"readme_block_{n}.sh"
            script.write_text("set -euo pipefail\n" + _strip_not_run(code), encoding="utf-8")
            cmd = ["bash", str(script)]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"README block {n} ({lang}) failed with exit {proc.returncode}:\n{code}\n--- stdout\n"
            f"{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 4
