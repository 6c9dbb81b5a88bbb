"""How ``m3e-rag search`` shows its results as text, and says why there are none.

Each hit: its rank, its score named by what it is (cosine, BM25, fused, rerank), its source, and the text around
the query's words (:func:`m3e_rag.retrieve.snippets.snippet`), then one line saying what the scores mean. No
result is never silence: "no results" and the reason that explains it, when one does (an empty index, a filter
that matches nothing, a BM25 search none of whose words are in the index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from m3e_rag.cli.output import escape_text, out
from m3e_rag.retrieve.snippets import SCORE_MEANINGS, score_label, snippet

__all__ = ["SNIPPET_WIDTH", "print_hits", "why_no_results"]

#: Terminal columns of a hit's text shown in the plain-text output (two lines of 80; a Chinese character takes 2).
SNIPPET_WIDTH = 160


def print_hits(results: Sequence[Any], query: str, mode: str, width: int = SNIPPET_WIDTH) -> None:
    """Print ranked hits: ``1. [fused 0.8123] source`` and the text around the match, then the scores' meaning."""
    labels = []
    for rank, r in enumerate(results, 1):
        retrieval = r.metadata.get("retrieval_score")
        label = score_label(mode, reranked=retrieval is not None)
        labels.append(label)
        first = f"; {score_label(mode)} {float(retrieval):.4f}" if retrieval is not None else ""
        source = escape_text(r.source) if r.source is not None else "(no source)"
        out(f"{rank}. [{label} {r.score:.4f}{first}] {source}\n   {escape_text(snippet(r.text, query, width))}")
    for label in dict.fromkeys(labels):
        out(f"({label}: {SCORE_MEANINGS[label]})")


def why_no_results(
    rag: Any, mode: str, where: Mapping[str, Any] | None, where_document: Mapping[str, Any] | None, target: str,
) -> str:
    """Why a search returned nothing, as far as the index can tell: empty, a filter, or no BM25 word matched.

    ``target`` is how the command named the index (``--index DIR`` or ``--chroma-url URL --collection C``).
    """
    store = rag.store
    if store.count() == 0:
        return f"the index is empty; add files with `m3e-rag ingest PATH {target}`"
    flags = " and ".join(f for f, v in (("--where", where), ("--where-document", where_document)) if v)
    allowed = store.allowed_ids(where, where_document) if flags else None
    if allowed == []:
        return f"no chunk matches {flags}; loosen the filter (`--json` shows the metadata a hit carries)"
    if mode == "sparse":
        among = f" among the {len(allowed)} chunks {flags} allows" if allowed else ""
        return (f"BM25 found none of the query's words{among} (it matches whole words); "
                "try --mode dense or --mode hybrid")
    return "the search returned nothing, and neither the index nor a filter explains it"
