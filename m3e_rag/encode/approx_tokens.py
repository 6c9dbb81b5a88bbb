"""An approximate tokenizer for embeddings that bring none: chunk budgets for any embedding function.

An external embedding (an API, a LangChain ``Embeddings`` without a local tokenizer) still needs its
chunks cut to a budget. :class:`ApproxTokenizer` counts as a subword tokenizer roughly does on
Chinese-English text: one token per CJK / kana / hangul character, one per four letters or digits
of a word (rounded up), one per other visible character; whitespace is free. It behaves like a
Hugging Face fast tokenizer where the chunker and the query cap call one (``input_ids`` and
``offset_mapping``), so the same chunking code serves it. Counts are estimates, not the model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ApproxTokenizer", "APPROX_TOKENIZER_NAME"]

#: Recorded as the tokenizer's name (``name_or_path``); a new counting rule gets a new name.
APPROX_TOKENIZER_NAME = "m3e-rag/approx-tokens-v1"

_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]"  # one per character
    r"|[^\W_]{1,4}"  # up to four letters or digits of a word
    r"|\S",  # any other visible character
)


class ApproxTokenizer:
    """A callable with a fast tokenizer's shape: ``tok(texts, return_offsets_mapping=True)`` -> ids and spans.

    Special tokens are not modelled: ``add_special_tokens=True`` adds two ids (a [CLS]/[SEP] pair's
    worth), so window arithmetic written for BERT-like models stays right.
    """

    is_fast = True
    name_or_path = APPROX_TOKENIZER_NAME
    model_max_length = 512

    def __repr__(self) -> str:
        return f"ApproxTokenizer({APPROX_TOKENIZER_NAME!r})"

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        **_: Any,
    ) -> dict[str, Any]:
        """Tokenize one text or a batch; ``truncation``, ``verbose`` and other options are accepted and unused."""
        single = isinstance(text, str)
        texts = [text] if isinstance(text, str) else list(text)
        ids_out: list[list[int]] = []
        offsets_out: list[list[tuple[int, int]]] = []
        for item in texts:
            spans = [(m.start(), m.end()) for m in _TOKEN.finditer(item)]
            ids = [ord(item[s]) for s, _ in spans]
            if add_special_tokens:
                ids = [0, *ids, 0]
                spans = [(0, 0), *spans, (0, 0)]
            ids_out.append(ids)
            offsets_out.append(spans)
        result: dict[str, Any] = {"input_ids": ids_out[0] if single else ids_out}
        if return_offsets_mapping:
            result["offset_mapping"] = offsets_out[0] if single else offsets_out
        return result
