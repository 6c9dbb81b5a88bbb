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
"""

from __future__ import annotations

import re
from typing import Any

from m3e_rag.errors import InputError

__all__ = ["CHARS_PER_TOKEN_BOUND", "cap_query", "cap_query_chars", "check_unicode"]

#: Characters kept per token of the window in the cheap first cut. A BERT WordPiece token of M3E's
#: vocabulary is rarely longer than a few characters; words over 100 characters become one [UNK].
#: 8 keeps the whole window for any realistic text while bounding the work to a few KB.
CHARS_PER_TOKEN_BOUND = 8

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str, what: str = "query") -> None:
    """Raise InputError if ``text`` holds a lone surrogate (not encodable as UTF-8), naming its position."""
    match = _SURROGATE.search(text)
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
