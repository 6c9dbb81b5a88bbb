"""Encoding detection for text files: BOMs, UTF-8 (strict, then with a few bad bytes), Chinese, Western.

Order: a BOM (UTF-8, UTF-16, UTF-32); strict UTF-8; **UTF-8 with replacement characters when the
invalid bytes are a small fraction** (at most 1% of the bytes and at most 3 of them, or at most
0.1% of the bytes: a cut, corrupted or mostly-English file — a legacy codec chosen for a few bad
bytes would silently turn good letters into wrong ones, which is worse than a visible U+FFFD); the
``<meta charset>`` of an HTML page; a Chinese check (strict GB18030 and Big5 decodes scored by their
share of common Chinese characters: reliable even for a 10-character file, where statistical
detectors guess wrong); a Western-European check; and last charset-normalizer's best guess among
sensible candidates. GBK and GB2312 are read as GB18030, their superset.

The number of replaced bytes is returned by :func:`decode_detail` (the loaders record it as
``decode_errors`` in the document metadata and as a note in the load report).
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

from m3e_rag.encode.inputs import SURROGATE_RE
from m3e_rag.errors import InputError
from m3e_rag.ingest.loaders._common import _Skip

__all__ = ["decode_bytes", "decode_detail", "detect_head", "html_charset"]

#: Invalid-byte runs as produced by ``surrogateescape`` (one lone surrogate per undecodable byte).
_ESCAPED = re.compile("[\udc80-\udcff]+")


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode the bytes of a text file, detecting the encoding.

    Never raises anything but :class:`~m3e_rag.errors.InputError`, for any input bytes.

    Args:
        data: the raw bytes.
        declared: an encoding the container declares (an HTML ``<meta charset>``), tried after
            UTF-8 fails.

    Returns:
        ``(text, encoding)``, the encoding as a Python codec name (``"utf-8"``, ``"utf-8-sig"``,
        ``"utf-16-le"``, ``"gb18030"``, ``"big5"``, ``"cp1252"``...).

    Raises:
        InputError: the bytes are not text (NUL bytes, or no candidate encoding decodes them).

    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"decode_bytes() takes bytes; got {type(data).__name__}")
    try:
        text, codec, _ = decode_detail(bytes(data), declared)
    except _Skip as exc:
        raise InputError(f"{exc}; this is not a text file") from None
    return text, codec


def decode_detail(data: bytes, declared: str | None = None) -> tuple[str, str, int]:
    """Like :func:`decode_bytes`, plus the number of invalid bytes replaced by U+FFFD; raises ``_Skip``."""
    try:
        return _decode(data, declared)
    except _Skip:
        raise
    except (LookupError, UnicodeError, ValueError, RuntimeError) as exc:  # a detector's own failure
        raise _Skip(f"binary file (could not decode: {type(exc).__name__})") from None


def detect_head(head: bytes) -> tuple[str, int]:
    """Pick the codec of a large file from its first bytes (cut at a byte no multi-byte char ends in).

    Returns:
        ``(codec, bom_length)``: the codec to decode the whole stream with, and how many BOM
        bytes to skip at the start.

    """
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec.replace("utf-8-sig", "utf-8"), len(bom)
    # Bytes below 0x30 are never part of a UTF-8, GB18030 or Big5 multi-byte character.
    cut = max((head.rfind(bytes([b])) for b in b"\n\r\t ,.!\"'()-/"), default=-1)
    sample = head[: cut + 1] if cut > len(head) // 2 else head
    _, codec, _ = decode_detail(sample)
    return codec, 0


def html_charset(data: bytes) -> str | None:
    """Return the charset an HTML page declares in its first 4 KiB, if any."""
    m = re.search(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", data[:4096], re.IGNORECASE)
    return m.group(1).decode("ascii", "ignore") if m else None



_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: Encodings charset-normalizer may choose from (cp1250 left out: it wins French and German).
_CANDIDATES = [
    "gb18030", "big5", "cp950", "cp1252", "latin_1", "iso8859_15", "cp1251", "koi8_r", "cp1253",
    "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874", "shift_jis", "cp932", "euc_jp",
    "euc_kr", "cp949",
]  # fmt: skip
_GB_ALIASES = frozenset("gbk gb2312 gb_2312 gb_2312_80 cp936 x_gbk euc_cn gb18030".split())
_COMMON_PUNCTUATION = frozenset("，。、；：？！“”‘’（）《》〈〉「」『』【】…—·～　﹏・")
_SAMPLE_CHARS = 20_000
_MIN_CHINESE_SCORE = 0.6


def _normalize_codec(name: str) -> str | None:
    """Map a declared or guessed encoding to a Python codec name; the GBK family becomes GB18030."""
    key = name.strip().lower().replace("-", "_")
    if key in _GB_ALIASES:
        return "gb18030"
    try:
        return codecs.lookup(key).name
    except LookupError:
        return None


@lru_cache(maxsize=1)
def _common_chinese() -> frozenset[str]:
    """Return the common characters: GB2312 level 1 (simplified) and Big5 level 1 (traditional)."""
    chars: set[str] = set()
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                chars.add(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    for lead in range(0xA4, 0xC7):
        for trail in (*range(0x40, 0x7F), *range(0xA1, 0xFF)):
            if lead == 0xC6 and trail > 0x7E:
                break
            try:
                chars.add(bytes((lead, trail)).decode("big5"))
            except UnicodeDecodeError:
                pass
    return frozenset(chars | _COMMON_PUNCTUATION)


def _chinese_score(text: str) -> float:
    """Share of non-ASCII, non-space characters that are common Chinese characters or punctuation."""
    common = _common_chinese()
    total = hits = 0
    for ch in text[:_SAMPLE_CHARS]:
        if ch.isascii() or ch.isspace():
            continue
        total += 1
        if ch in common or 0xFF01 <= ord(ch) <= 0xFF5E:
            hits += 1
    return hits / total if total else 0.0


def _junk_ratio(text: str) -> float:
    """Share of control characters and U+FFFD in a sample: high means binary, not text."""
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return 0.0
    junk = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return junk / len(sample)


def _looks_western(text: str) -> bool:
    """Whether a cp1252 decode reads like Western European text (accents inside ASCII words)."""
    sample = text[:_SAMPLE_CHARS]
    letters = [ch for ch in sample if ch.isalpha()]
    high = sum(1 for ch in letters if not ch.isascii())
    if high * 2 > len(letters) or sample.isascii():
        return False  # mostly accented letters: a Cyrillic/Greek code page read as cp1252
    allowed = set("€£¥©®°±§¶·«»–—‘’“”…•™¢¿¡ªº×÷")
    return all(ch.isascii() or ch.isspace() or ("\u00c0" <= ch <= "\u00ff") or ch in allowed for ch in sample)


def _few_bad_bytes(n_bad: int, size: int) -> bool:
    """Whether ``n_bad`` invalid UTF-8 bytes out of ``size`` are "a few bad bytes" (see the module doc)."""
    return (n_bad <= 3 and n_bad * 100 <= size) or n_bad * 1000 <= size


def _decode(data: bytes, declared: str | None = None) -> tuple[str, str, int]:
    """Decode text bytes (see the module docstring for the order); raise :class:`_Skip` if binary."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            body = data[len(bom) :]
            if codec == "utf-8-sig":
                escaped = body.decode("utf-8", errors="surrogateescape")
                n_bad = sum(len(run) for run in _ESCAPED.findall(escaped))
                return (_ESCAPED.sub("\ufffd", escaped) if n_bad else escaped), codec, n_bad
            text = _strip_surrogates(body.decode(codec, errors="replace"))
            return text, codec, text.count("\ufffd")
    if b"\x00" in data[:8192]:
        raise _Skip("binary file (contains NUL bytes)")
    try:
        return _checked(data.decode("utf-8")), "utf-8", 0
    except UnicodeDecodeError:
        pass
    escaped = data.decode("utf-8", errors="surrogateescape")
    runs = _ESCAPED.findall(escaped)
    n_bad = sum(len(run) for run in runs)
    lenient = _ESCAPED.sub("\ufffd", escaped)
    good = sum(1 for ch in lenient[:_SAMPLE_CHARS] if not ch.isascii() and ch != "\ufffd")
    if good >= 20 * len(runs) or _few_bad_bytes(n_bad, len(data)):
        # UTF-8 text with a few broken bytes (a cut or corrupted file): never trade it for a
        # legacy codec that would read the good letters around them wrongly.
        return _checked(lenient), "utf-8", n_bad
    if declared:
        declared_codec = _normalize_codec(declared)
        if declared_codec and not declared_codec.startswith("utf"):
            try:
                return _checked(data.decode(declared_codec)), declared_codec, 0
            except (UnicodeDecodeError, _Skip):
                pass
    best: tuple[float, str, str] | None = None
    for codec in ("gb18030", "big5", "cp950"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        score = _chinese_score(text)
        if best is None or score > best[0]:
            best = (score, codec, text)
    if best is not None and best[0] >= _MIN_CHINESE_SCORE and _junk_ratio(best[2]) < 0.03:
        return best[2], best[1], 0
    try:
        western = data.decode("cp1252")
    except UnicodeDecodeError:
        western = ""
    if western and _looks_western(western) and _junk_ratio(western) < 0.03:
        return western, "cp1252", 0
    text, codec = _charset_normalizer_guess(data)
    return text, codec, 0


def _strip_surrogates(text: str) -> str:
    """Replace lone surrogates (a UTF-16 file with a broken pair) by U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8") if SURROGATE_RE.search(text) else text


def _checked(text: str) -> str:
    """Return ``text`` unless it is mostly control characters (binary data that decoded)."""
    if _junk_ratio(text) >= 0.03:
        raise _Skip("binary file (control characters)")
    return text


def _charset_normalizer_guess(data: bytes) -> tuple[str, str]:
    """Last resort: charset-normalizer's best guess among sensible candidates."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # a core dependency; only a broken install lacks it
        raise _Skip("binary file (not UTF-8 or Chinese text, and charset-normalizer is missing)") from None
    match = from_bytes(data, cp_isolation=_CANDIDATES).best()
    if match is None:
        raise _Skip("binary file (not decodable as text)")
    codec = _normalize_codec(match.encoding) or str(match.encoding)
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        text = str(match)
    if _junk_ratio(text) >= 0.03:
        raise _Skip("binary file (control characters)")
    return text, codec
