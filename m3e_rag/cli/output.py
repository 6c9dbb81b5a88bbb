"""How every ``m3e-rag`` subcommand writes its result on stdout: JSON (``--json``) or a line of text.

One owner for both, so the commands print alike (UTF-8 text as is, two-space indents).
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["print_json", "out"]


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON (non-ASCII kept as is) and a newline on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def out(text: str) -> None:
    """Write ``text`` and a newline on stdout."""
    sys.stdout.write(text + "\n")
