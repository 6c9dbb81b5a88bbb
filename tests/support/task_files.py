"""Write a small retrieval task (``corpus.jsonl`` + ``queries.jsonl``) in the format ``m3e-rag eval``/compare read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_retrieval_task"]


def write_retrieval_task(root: Path, corpus: Iterable[tuple[str, str]],
                         queries: Iterable[tuple[str, str]]) -> dict[str, Path]:
    """``corpus`` as (id, text) and ``queries`` as (query, relevant id); returns {"corpus": ..., "queries": ...}."""
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl"}
    files["corpus"].write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                       for i, t in corpus), encoding="utf-8")
    files["queries"].write_text("".join(json.dumps({"query": q, "relevant_ids": [r]}, ensure_ascii=False) + "\n"
                                        for q, r in queries), encoding="utf-8")
    return files
