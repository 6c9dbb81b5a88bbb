r"""How every ``m3e-rag`` subcommand writes its result on stdout: JSON (``--json``) or a line of text.

One owner for both, so the commands print alike (UTF-8 text as is, two-space indents), and so that
**no text from a file reaches the terminal as a control sequence**: file names and document text
are untrusted (``\x1b]0;title\x07`` retitles a terminal, ``\x1b[2J`` clears it, U+202E reverses
what follows). :func:`escape_text` shows such characters as Python-style escapes (``\x1b``,
``\u202e``); :func:`out` applies it to every line of text it writes (keeping line breaks), and
:func:`print_json` escapes what ``json.dumps`` leaves raw (C1 controls, bidi controls, line and
paragraph separators, lone surrogates) as ``\uXXXX``, which parses back to the same strings.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

__all__ = ["escape_text", "format_fields", "print_json", "out"]

#: Bidirectional formatting characters (marks, embeddings, overrides, isolates): they reorder what
#: is displayed after them ("Trojan Source").
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: DEL, C1 controls (8-bit CSI, OSC...), line/paragraph separators, bidi controls, and lone
#: surrogates (undecodable bytes; unprintable as UTF-8): what ``json.dumps(ensure_ascii=False)``
#: leaves raw. C0 controls (ESC, BEL, CR, TAB...) come on top for plain text.
_REST = f"\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff"
_UNSAFE_LINE = re.compile(f"[\x00-\x1f{_REST}]")
_UNSAFE_TEXT = re.compile(f"[\x00-\x09\x0b-\x1f{_REST}]")
_UNSAFE_JSON = re.compile(f"[{_REST}]")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_text(text: str, newlines: bool = False) -> str:
    r"""``text`` with every control character shown as an escape (``\x1b``, ``\u202e``).

    ``newlines=True`` keeps ``\n`` (text meant to span lines); otherwise it is escaped too, so a
    file name cannot start a line of its own.
    """
    return (_UNSAFE_TEXT if newlines else _UNSAFE_LINE).sub(_escaped, text)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON (non-ASCII kept as is, controls escaped) and a newline on stdout."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    sys.stdout.write(_UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


def out(text: str) -> None:
    """Write ``text`` (control characters escaped, line breaks kept) and a newline on stdout."""
    sys.stdout.write(escape_text(text, newlines=True) + "\n")


def _chunker(settings: dict[str, Any]) -> str:
    """Chunker settings in words: ``256 tokens per chunk, 32 tokens of overlap (chunker version 2)``."""
    rest = dict(settings)
    words = []
    if "max_tokens" in rest:
        words.append(f"{rest.pop('max_tokens')} tokens per chunk")
    if "overlap_tokens" in rest:
        words.append(f"{rest.pop('overlap_tokens')} tokens of overlap")
    version = rest.pop("chunker_version", None)
    words.extend(f"{key.replace('_', ' ')} {_value(value)}" for key, value in rest.items())
    return ", ".join(words) + (f" (chunker version {version})" if version is not None else "")


def _value(value: Any) -> str:
    """One setting's value as a person reads it: yes/no, ``-`` for none, ``""`` shown as (empty), lists joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value if value else "(empty)"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_value(v)}" for key, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value) or "-"
    return str(value)


def format_fields(data: dict[str, Any]) -> str:
    """``key: value`` lines, values aligned, for settings and counts (``m3e-rag info``); not a dict dump.

    Keys are spelled with spaces (``max seq length``); ``--json`` keeps the machine names. Chunker settings are
    spelled out in words.
    """
    names = {key: key.replace("_", " ") for key in data}
    width = max((len(name) for name in names.values()), default=0) + 1
    lines = []
    for key, value in data.items():
        text = _chunker(value) if key == "chunker" and isinstance(value, dict) else _value(value)
        lines.append(f"{(names[key] + ':').ljust(width)} {escape_text(text)}")
    return "\n".join(lines)
