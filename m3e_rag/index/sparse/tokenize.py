"""The BM25 tokenizer: Chinese runs segmented by jieba, English words and numbers lower-cased.

It owns the one thing every BM25 term goes through, for documents and queries alike, and the
version that names its output (:data:`TOKENIZER_VERSION`): a saved index tokenized by another
version is refused, because its terms would not match the queries' terms (the pipeline then rebuilds
it from the stored texts when it opens the index: :mod:`m3e_rag.index.sparse.sync`).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

import jieba

from m3e_rag.encode.inputs import strip_invisible
from m3e_rag.errors import InputError

__all__ = ["STOPWORDS", "TOKENIZER_VERSION", "tokenize_for_bm25"]

#: Version of :func:`tokenize_for_bm25`. Bump it whenever the tokens it produces could change
#: (normalisation, segmentation mode, stopwords): a saved index with another version is refused.
TOKENIZER_VERSION = "noinvisible-nfkc-jieba_search-words-stop/3"

#: Tokens dropped from documents and queries: the commonest function words of each language.
#: Kept short on purpose: BM25's idf already discounts frequent terms, the list only trims the
#: index and stops a query made of them alone from matching everything weakly.
STOPWORDS: frozenset[str] = frozenset(
    # Chinese (jieba tokens): particles, conjunctions, copula, demonstratives; simplified forms,
    # then the traditional forms of those that differ (著 與 這 嗎), so traditional text is
    # trimmed alike (NFKC does not map traditional to simplified).
    "的 了 着 是 在 和 与 及 或 也 都 就 而 之 其 这 那 吗 呢 吧 啊".split()
    + "著 與 這 嗎".split()
    # English (already lower-cased).
    + "a an the of to is are was were be been in on at by for from with as and or it its this that".split()
)

# Han ideographs: Extension A, the URO, compatibility ideographs and planes 2-3 (Extension B and
# later, e.g. U+20000). jieba only knows U+4E00-U+9FD5; it yields other ideographs one by one.
_HAN_RUN = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]+)")
# Outside Han runs: decimal numbers such as 3.14 or 1.2.3 stay whole, otherwise letters and
# digits up to any non-alphanumeric (punctuation, spaces, underscore).
_WORD = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")

_JIEBA_LOCK = threading.Lock()
_JIEBA: Any = None  # the private jieba.Tokenizer, created on first use


def _quiet(logger_name: str) -> None:
    """Raise a chatty library logger to WARNING unless someone already set it higher."""
    logger = logging.getLogger(logger_name)
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


def _jieba() -> Any:
    """Return the module's own jieba tokenizer, loading its dictionary once (thread-safe).

    A private ``jieba.Tokenizer`` leaves jieba's global tokenizer (and any user dictionary
    loaded into it) alone. jieba caches the parsed dictionary in the temp directory.
    """
    global _JIEBA
    tokenizer = _JIEBA
    if tokenizer is None:
        with _JIEBA_LOCK:
            if _JIEBA is None:
                _quiet("jieba")  # it logs "Building prefix dict ..." to stderr at DEBUG
                new = jieba.Tokenizer()
                new.initialize()
                _JIEBA = new
            tokenizer = _JIEBA
    return tokenizer


def tokenize_for_bm25(text: str) -> list[str]:
    """Split a Chinese, English or mixed text into BM25 terms.

    Invisible format characters are removed first (zero-width space, non-joiner and joiner, word joiner,
    byte-order mark, soft hyphen: :func:`m3e_rag.encode.inputs.strip_invisible`), so ``竹\u200b子`` is
    ``竹子`` and ``inter\u00adnational`` is ``international``. The text is then NFKC-normalised
    (fullwidth ``ＡＢＣ１２３`` becomes ``abc123``), runs of Han
    ideographs are segmented by jieba in search mode (``中华人民共和国`` gives ``中华``,
    ``华人``, ..., ``共和国`` and the whole word), everything else is split on non-alphanumerics
    into lower-cased words and numbers (``3.14`` and ``2024`` stay whole). Punctuation, spaces
    and :data:`STOPWORDS` are dropped. Ideographs outside jieba's dictionary range, such as
    Extension B (U+20000), become one-character terms.

    Args:
        text: the text to tokenize.

    Returns:
        The terms in text order; repeated terms are kept (they are term frequencies).

    Raises:
        InputError: if ``text`` is not a string.

    """
    if not isinstance(text, str):
        raise InputError(f"tokenize_for_bm25 needs a str, got {type(text).__name__}; pass the chunk text")
    text = unicodedata.normalize("NFKC", strip_invisible(text))
    tokens: list[str] = []
    for i, segment in enumerate(_HAN_RUN.split(text)):
        if not segment:
            continue
        if i % 2:  # a run of Han ideographs (odd positions of a split on one capturing group)
            words: Iterable[str] = _jieba().cut_for_search(segment)
        else:
            words = (match.group().lower() for match in _WORD.finditer(segment))
        tokens.extend(word for word in words if word and word not in STOPWORDS)
    return tokens
