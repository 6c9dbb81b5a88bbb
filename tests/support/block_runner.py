"""Run Python scripts one after another in ONE interpreter, each as a fresh ``__main__``: a test helper.

Why: the README's Python blocks each load the same model; run as separate interpreters, every block pays
the imports (torch, Chroma, LangChain, LlamaIndex) and the model load again. Here they share both (the
encoder's per-process model cache), while each block still gets fresh globals, its own ``sys.argv``,
working directory, ``sys.path[0]`` and output files, so a block that forgets an import still fails.

Protocol (``python tests/support/block_runner.py``): one request per stdin line,
``SCRIPT<TAB>CWD<TAB>STDOUT_FILE<TAB>STDERR_FILE``; the script runs with file descriptors 1 and 2 sent
to those files, and the runner answers one line on its own stdout: the script's exit status (0; the
``SystemExit`` code; 1 with the traceback in STDERR_FILE for any other exception). Chroma's per-path
client cache is cleared after each script, so no client stays open on a folder another process writes.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys
import traceback
from pathlib import Path


def run_script(script: str, cwd: str) -> int:
    """Run ``script`` as ``__main__`` in ``cwd`` and return its exit status."""
    saved_argv, saved_path0 = sys.argv, sys.path[0]
    os.chdir(cwd)
    sys.argv = [script]
    sys.path[0] = str(Path(script).resolve().parent)
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as the script's failure, with its traceback
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[0] = saved_argv, saved_path0
        _release_chroma()


def _release_chroma() -> None:
    if "chromadb" in sys.modules:
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    gc.collect()


def main() -> int:
    """Serve requests from stdin until it closes."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        script, cwd, out_path, err_path = line.rstrip("\n").split("\t")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                status = run_script(script, cwd)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        reply.write(f"{status}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
