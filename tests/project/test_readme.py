"""Every code block of README.md runs as written, with and without ``M3E_MODEL``.

How the README is run, block by block, in order:

- ``python`` blocks run as scripts, each a fresh ``__main__`` (fresh globals, its own argv and output),
  one after another in ONE interpreter (``tests/support/block_runner.py``), so the imports and the model
  load are paid once, not per block.
- ``bash`` blocks run with ``bash -euo pipefail``, the venv's ``bin`` first on PATH (so ``m3e-rag`` and
  ``pip`` are the project's) and ``HF_HUB_OFFLINE=1``.
- ``M3E_MODEL`` names the tiny M3E-shaped stand-in (random weights, 2 layers): the README says that
  ``$M3E_MODEL`` wins over the names it shows, and this test checks that every block runs, not what it
  answers (the examples' tests check answers, with the bilingual stand-in).
- Blocks run in one scratch folder holding a copy of ``examples/`` (the files the README names), so later
  blocks see what earlier ones created (an index ingested in one block is searched in the next). Blocks
  that name ``scripts/``, ``.venv/`` or install the package run in the repository root, as a user would.
- ``text`` blocks are not code (a layout tree, sample output) and are not run. Any other fence language
  fails the test, so a new block cannot slip through unrun.

What the test changes, and why (nothing else is touched):

- ``bash scripts/test.sh`` is not run: it is the test suite itself, which CI runs as ``.ci/run``.
- ``bash scripts/demo.sh`` gets ``--index`` into the scratch folder: the demo's default index lives in the
  clone (``examples/.index``), where a user's own run keeps it for their model.
- a port given with ``--port N`` becomes a free port everywhere in its block: no test binds a fixed port.

Without ``M3E_MODEL`` (and without the weights: an empty Hugging Face cache, offline), the blocks fail the
way the README says: the Python blocks raise ``ModelLoadError`` and the command line prints one ``error:``
line, both naming the fixes (a mirror, a local folder).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RUNNER = REPO / "tests" / "support" / "block_runner.py"
_FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
_RUN_IN_REPO = re.compile(r"^\s*(bash scripts/|pip install|source \.venv/|\.venv/)")
_NOT_RUN_HERE = "bash scripts/test.sh"
_DEMO = "bash scripts/demo.sh"
_PORT = re.compile(r"--port[ =](\d+)")
BLOCK_TIMEOUT = 900


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(README.read_text(encoding="utf-8"))]


def runs_in_repo(lang: str, code: str) -> bool:
    """A bash block with a command (comments aside) that runs set-up scripts, installs, or uses .venv/."""
    return lang == "bash" and any(_RUN_IN_REPO.match(line.split("#", 1)[0]) for line in code.splitlines())


def test_only_set_up_blocks_run_in_the_clone() -> None:
    """Blocks that write files (indexes, chroma_db) run in the scratch folder, never in the clone."""
    in_repo = [code for lang, code in readme_blocks() if runs_in_repo(lang, code)]
    assert in_repo and all("m3e-rag ingest" not in code and "persist_directory" not in code for code in in_repo)
    assert not runs_in_repo("python", "# pip install langchain-chroma\nimport os\n")
    assert not runs_in_repo("bash", "m3e-rag ingest x  # then pip install y\n")


def test_readme_has_only_runnable_or_text_blocks() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no code blocks"
    langs = {lang for lang, _ in blocks}
    assert langs <= {"python", "bash", "text"}, f"fence languages other than python/bash/text: {langs}"
    assert any(lang == "python" for lang in langs) and any(lang == "bash" for lang in langs)


def prepare_bash(code: str, *, demo_index: Path, port: int) -> str:
    """The bash script run for a README block: the block, with only the changes the module docstring lists."""
    lines = []
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith(_NOT_RUN_HERE):
            line = f": not run here, CI runs it as .ci/run: {stripped!r}"
        elif stripped.startswith(_DEMO):
            line = line.replace(_DEMO, f"{_DEMO} --index {demo_index}", 1)
        lines.append(line)
    script = "\n".join(lines) + "\n"
    for fixed in {m.group(1) for m in _PORT.finditer(code)}:
        script = re.sub(rf"(?<![0-9]){fixed}(?![0-9])", str(port), script)
    return "set -euo pipefail\n" + script


def test_the_serve_block_binds_a_free_port_not_its_fixed_one(tmp_path: Path) -> None:
    """The README's serve block names port 8008; as run here it uses the free port everywhere (server and curl)."""
    serve = [code for lang, code in readme_blocks() if lang == "bash" and "m3e-rag serve" in code]
    assert serve, "README.md has no `m3e-rag serve` block"
    for code in serve:
        fixed = {m.group(1) for m in _PORT.finditer(code)}
        assert fixed, "the serve block gives no --port"
        port = free_port()
        script = prepare_bash(code, demo_index=tmp_path, port=port)
        assert not any(re.search(rf"(?<![0-9]){p}(?![0-9])", script) for p in fixed), script
        assert f"--port {port}" in script and f"127.0.0.1:{port}/" in script


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


class PythonBlocks:
    """The README's Python blocks, run in one long-lived interpreter (``tests/support/block_runner.py``)."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.work = work
        self.log = open(work / "block_runner.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, cwd=work, text=True)

    def run(self, script: Path, cwd: Path, n: int) -> subprocess.CompletedProcess[str]:
        """Run one block and return its exit status and output, as ``subprocess.run`` would."""
        out, err = self.work / f"block_{n}.out", self.work / f"block_{n}.err"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{script}\t{cwd}\t{out}\t{err}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], BLOCK_TIMEOUT)
        answer = self.proc.stdout.readline() if ready else ""
        if not answer:
            self.proc.kill()
            pytest.fail(f"the block runner died or hung on block {n}: {(self.work / 'block_runner.log').read_text()}")
        return subprocess.CompletedProcess([str(script)], int(answer), _read(out), _read(err))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The scratch folder the blocks run in, holding a copy of examples/."""
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copytree(REPO / "examples", folder / "examples", ignore=shutil.ignore_patterns(".index*", "__pycache__"))
    return folder


def base_env(model: Path | None, hub_cache: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub_cache),
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": "",
    }
    env.pop("M3E_MODEL", None)
    if model is not None:
        env["M3E_MODEL"] = str(model)
    return env


@pytest.fixture
def python_blocks_factory(work: Path) -> Iterator[list[PythonBlocks]]:
    runners: list[PythonBlocks] = []
    yield runners
    for runner in runners:
        runner.close()


def test_every_readme_block_runs_as_written(
    work: Path, tmp_path: Path, tiny_model_path: Path, python_blocks_factory: list[PythonBlocks]
) -> None:
    env = base_env(tiny_model_path, tmp_path / "empty-hf-cache")
    python = PythonBlocks(env, work)
    python_blocks_factory.append(python)
    ran = 0
    for n, (lang, code) in enumerate(readme_blocks()):
        if lang == "text":
            continue
        cwd = REPO if runs_in_repo(lang, code) else work
        if lang == "python":
            script = work / f"readme_block_{n}.py"
            script.write_text(code, encoding="utf-8")
            proc = python.run(script, cwd, n)
        else:
            script = work / f"readme_block_{n}.sh"
            script.write_text(prepare_bash(code, demo_index=work / "demo_index", port=free_port()), encoding="utf-8")
            proc = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=BLOCK_TIMEOUT)
        assert proc.returncode == 0, (
            f"README block {n} ({lang}) failed with exit {proc.returncode}:\n{code}\n--- stdout\n"
            f"{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 4
    assert (work / "demo_index").is_dir()  # the demo ran, into the scratch folder


def test_readme_blocks_without_m3e_model_name_the_fixes(
    work: Path, tmp_path: Path, python_blocks_factory: list[PythonBlocks]
) -> None:
    """No M3E_MODEL and no weights (offline, empty cache): each Python block and the CLI block fail clearly."""
    env = base_env(None, tmp_path / "empty-hf-cache")
    python = PythonBlocks(env, work)
    python_blocks_factory.append(python)
    blocks = readme_blocks()
    for n, (lang, code) in enumerate(blocks):
        if lang != "python":
            continue
        script = work / f"readme_block_{n}.py"
        script.write_text(code, encoding="utf-8")
        proc = python.run(script, work, n)
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        assert proc.returncode == 1 and last.startswith("m3e_rag.errors.ModelLoadError: "), (n, proc.stderr[-3000:])
        assert "HF_ENDPOINT" in last and "local folder" in last, last
    cli = next(code for lang, code in blocks if lang == "bash" and code.startswith("m3e-rag ingest"))
    script = work / "cli_block.sh"
    script.write_text(prepare_bash(cli, demo_index=work / "demo_index", port=free_port()), encoding="utf-8")
    proc = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "HF_ENDPOINT" in lines[0] and "--model" in lines[0], lines[0]
