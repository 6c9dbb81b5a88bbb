r"""Queries made safe and bounded before any tokenizer, model or BM25 work.

Two things a query can do to a search, and how they are stopped here:

- **Size.** The model reads at most its window (512 tokens for M3E); everything after that is
  dropped by truncation anyway, yet a 10 MB query used to be tokenized whole, by the model's
  tokenizer (twice) and by jieba for BM25: minutes and gigabytes. :func:`cap_query` keeps only
  the text the model would read: first a cheap cut by characters (after collapsing whitespace
  runs, every token covers at least one character, so ``window * CHARS_PER_TOKEN_BOUND``
  characters hold the whole window with room to spare), then an exact cut at the character where
  the window's last token ends, so BM25 and the model see the same text.
- **Invalid Unicode.** A lone surrogate (``"\ud800"``, which Python strings can hold and UTF-8
  cannot encode) made the Rust tokenizer raise a bare ``TypeError``; :func:`check_unicode` names
  the position instead.

Texts to encode (documents and queries alike) are checked here too: :func:`_validate_texts` names the first
item that is not a non-empty string, and :func:`_check_overflow` applies the encoder's ``on_overflow``
policy to texts longer than the model's window.

**Normalised for matching** (:func:`strip_invisible`): the invisible format characters of
:data:`INVISIBLE_CHARS` are removed before BM25 tokenises a document or a query and from the text handed
to the model (queries and chunks alike): U+200B ZERO WIDTH SPACE, U+200C ZERO WIDTH NON-JOINER, U+200D
ZERO WIDTH JOINER, U+2060 WORD JOINER, U+FEFF ZERO WIDTH NO-BREAK SPACE (a stray byte-order mark) and
U+00AD SOFT HYPHEN. Pasted web text carries them inside words (``竹\u200b子``, ``Micro\u200dsoft``,
``inter\u00adnational``), where they split one term into two and nothing matched. The stored chunk text
and the chunk ids are left as they were (existing indexes keep their ids); BERT tokenizers such as M3E's
already drop these characters, so M3E's vectors do not change either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3e_rag.errors import InputError, InputTooLongError

if TYPE_CHECKING:
    from m3e_rag.encode.cache import _LoadedModel

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "INVISIBLE_CHARS",
    "SURROGATE_RE",
    "cap_query",
    "cap_query_chars",
    "query_text",
    "check_unicode",
    "model_text",
    "strip_invisible",
]

#: Characters removed for matching (see the module docstring): zero-width space, non-joiner and joiner,
#: word joiner, zero-width no-break space (byte-order mark) and soft hyphen.
INVISIBLE_CHARS = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_DROP_INVISIBLE = dict.fromkeys(map(ord, INVISIBLE_CHARS))


def strip_invisible(text: str) -> str:
    """``text`` without the invisible characters of :data:`INVISIBLE_CHARS` (what BM25 tokenises)."""
    return text.translate(_DROP_INVISIBLE)


def model_text(text: str) -> str:
    """The text handed to the model: :func:`strip_invisible`, unless that leaves nothing but whitespace.

    A text made only of invisible characters is passed on as it is (its tokens are the model's business),
    so that cleaning never turns an accepted text into a refused empty one.
    """
    cleaned = strip_invisible(text)
    return cleaned if cleaned.strip() else text

#: Characters kept per token of the window in the cheap first cut. A BERT WordPiece token of M3E's
#: vocabulary is rarely longer than a few characters; words over 100 characters become one [UNK].
#: 8 keeps the whole window for any realistic text while bounding the work to a few KB.
CHARS_PER_TOKEN_BOUND = 8

# The encoder's name, as before the overflow check left encoder.py: the CLI's log lines show it.
logger = logging.getLogger("m3e_rag.encode.encoder")

#: A lone surrogate: a string holding one cannot be encoded as UTF-8 (nor tokenized).
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str, what: str = "query") -> None:
    """Raise InputError if ``text`` holds a lone surrogate (not encodable as UTF-8), naming its position."""
    match = SURROGATE_RE.search(text)
    if match is not None:
        pos = match.start()
        raise InputError(
            f"{what} holds an unpaired surrogate {match.group()!r} at character {pos} (invalid Unicode, "
            "often from decoding bytes with errors='surrogateescape'); decode the text with "
            "errors='replace' or remove that character."
        )


def cap_query_chars(text: str, max_tokens: int) -> str:
    """Cheap first cut of a long text: whitespace runs become one space, then ``max_tokens * 8`` characters kept."""
    limit = max(1, int(max_tokens)) * CHARS_PER_TOKEN_BOUND
    if len(text) <= limit:
        return text
    # Whitespace carries no tokens: skip it, so a query padded with megabytes of spaces keeps its
    # words. Runs of non-space are matched at most ``limit`` long: no copy of a 10 MB word is made.
    words: list[str] = []
    size = 0
    for match in re.finditer(rf"\S{{1,{limit}}}", text):
        words.append(match.group())
        size += len(words[-1]) + 1
        if size > limit:
            break
    return " ".join(words)[:limit]


def cap_query(text: str, tokenizer: Any, max_tokens: int) -> str:
    """Return the part of ``text`` a model with a ``max_tokens`` window reads (special tokens excluded).

    Args:
        text: the query.
        tokenizer: the model's (fast) Hugging Face tokenizer; without offsets only the character cut applies.
        max_tokens: tokens of text the model reads (its window less [CLS], [SEP] and the query prompt).
    """
    check_unicode(text)
    text = cap_query_chars(text, max_tokens)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False) or max_tokens <= 0:
        return text
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: int(offsets[max_tokens - 1][1])]


def _describe(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return "an empty string" if not value else "whitespace only"
    return f"of type {type(value).__name__}"


def _validate_texts(texts: object, what: str = "texts") -> list[str]:
    """Return ``texts`` as a list, or raise InputError naming the first bad item and the fix."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError(
            f"{what} must be a list of strings, got {type(texts).__name__}; wrap a single text in a list "
            "or use encode_query() for one query."
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InputError(
                f"{what}[{i}] is {_describe(text)}; every text must be a non-empty string: "
                "drop or replace it before encoding."
            )
        check_unicode(text, f"{what}[{i}]")  # the Rust tokenizer fails on a lone surrogate with a bare TypeError
    return [model_text(text) for text in texts]


def _validate_pairs(a: str | Sequence[str], b: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """``a`` and ``b`` as two lists of equal length for ``similarity()``, or InputError saying what to pass."""
    if isinstance(a, str) or isinstance(b, str):
        raise InputError(
            "similarity() takes two strings or two equal-length lists of strings, not one of each; "
            "wrap the single text in a list, or use similarity_matrix() for one-against-many."
        )
    left, right = _validate_texts(a, "a"), _validate_texts(b, "b")
    if len(left) != len(right):
        raise InputError(
            f"similarity() pairs a[i] with b[i], but a has {len(left)} texts and b has {len(right)}; pass "
            "equal-length lists, or use similarity_matrix() for every-against-every scores."
        )
    return left, right


def _check_overflow(lengths: np.ndarray, model: _LoadedModel, on_overflow: str) -> None:
    """Apply ``on_overflow`` to the texts of ``lengths`` tokens that pass the model's window (counted in stats)."""
    over = np.flatnonzero(lengths > model.max_seq_length)
    if over.size == 0:
        return
    first = int(over[0])
    if on_overflow == "error":
        raise InputTooLongError(
            f"texts[{first}] has {int(lengths[first])} tokens, more than the model's window of "
            f"{model.max_seq_length} ({over.size} text(s) in all); split long texts first "
            "(m3e_rag.ingest.chunking.Chunker does it) or pass on_overflow='truncate'."
        )
    model.stats.truncated += int(over.size)
    if on_overflow == "warn":
        logger.warning(
            "%d of %d texts exceed the %d-token window and were truncated (first: index %d, %d tokens); "
            "chunk them (m3e_rag.ingest.chunking.Chunker) or pass on_overflow='truncate' to silence this.",
            over.size, lengths.size, model.max_seq_length, first, int(lengths[first]),
        )


def query_text(text: object, window: int) -> str:
    """One query as an encoder embeds it: checked, cleaned, and cut to what the model reads.

    A non-empty string of valid Unicode (else InputError saying what to pass), invisible characters
    removed, cut to what a model with a ``window``-token window reads (never 10 MB).
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"query is {_describe(text)}; pass a non-empty string.")
    check_unicode(text)
    return cap_query_chars(model_text(text), window)
