"""The C library of this process, for the two Linux memory calls the torch backend makes (madvise, malloc_trim).

One handle, opened once: the encoder trims the heap after every large batch and the oneDNN packing
releases the pages of 73 dead weights, each through it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["libc"]


@functools.cache
def libc() -> Any:
    """``ctypes.CDLL(None)`` on Linux (glibc or another libc), else None."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
