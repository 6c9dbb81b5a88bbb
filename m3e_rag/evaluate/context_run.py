"""Answer-in-context recall of a :class:`~m3e_rag.pipeline.RAGPipeline`: its top-k pieces, and its context assembly.

:func:`evaluate_context` indexes a task's corpus (unchanged chunks of an earlier run are kept, so it
follows :func:`m3e_rag.evaluate.retrieval.evaluate` at little cost), embeds every query once and scores,
with :func:`m3e_rag.evaluate.context_recall.score_context`:

- ``<mode> top-<k>``: ``pipeline.search(k=k, mode=mode)``, the chunks concatenated in rank order (what
  a user of ``search`` hands the LLM), for each mode asked;
- ``<mode> context``: ``pipeline.context(query, budget_tokens=B, hits=...)`` over those same hits (so
  only the assembly differs), budgeted with the same token counter (``assembly=True``).

Pieces carry their source and character span from the index (``metadata["start"/"end"]``): no string
search. Tokens are counted by the pipeline model's own tokenizer unless a counter is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from m3e_rag.errors import InputError
from m3e_rag.evaluate.context_recall import (
    DEFAULT_BUDGETS,
    ContextReport,
    ContextRetriever,
    Piece,
    TokenCounter,
    score_context,
)
from m3e_rag.evaluate.retrieval import _embed_queries, _refuse_foreign_sources
from m3e_rag.evaluate.tasks import EvalQuery, RetrievalTask
from m3e_rag.retrieve.modes import check_k, check_mode

if TYPE_CHECKING:
    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.types import Context, RetrievedChunk

__all__ = ["evaluate_context", "pieces_from_results", "context_pieces", "pipeline_counter", "CONTEXT_SYSTEM"]

#: The context-assembly systems are called ``<mode> context`` in reports.
CONTEXT_SYSTEM = "context"


def pieces_from_results(results: Sequence[RetrievedChunk]) -> list[Piece]:
    """Search results as pieces, by the span the index recorded (a result without one never hits)."""
    out = []
    for r in results:
        start, end, source = r.metadata.get("start"), r.metadata.get("end"), r.source
        if isinstance(start, int) and isinstance(end, int) and source is not None:
            out.append(Piece(source, start, end, r.text))
        else:
            out.append(Piece.unlocated(source or "", r.text))
    return out


def pipeline_counter(pipeline: RAGPipeline) -> TokenCounter:
    """A counter over the pipeline model's tokenizer, named after the model."""
    return TokenCounter(pipeline.encoder.tokenizer, f"the tokenizer of {pipeline.encoder.model_name}")


class _Searches:
    """Each mode's search results for the query being scored (one query at a time, every budget reuses them)."""

    def __init__(self, pipeline: RAGPipeline, k: int, vectors: Any) -> None:
        self.pipeline, self.k, self.vectors = pipeline, k, vectors
        self._query: int | None = None
        self._hits: dict[str, list[RetrievedChunk]] = {}

    def hits(self, n: int, query: EvalQuery, mode: str) -> list[RetrievedChunk]:
        if self._query != n:
            self._query, self._hits = n, {}
        if mode not in self._hits:
            vector = None if self.vectors is None or mode == "sparse" else self.vectors[n]
            self._hits[mode] = self.pipeline.search(query.text, k=self.k, mode=check_mode(mode),
                                                    fetch_k=max(20, self.k), query_vector=vector)
        return self._hits[mode]


def _search_system(searches: _Searches, mode: str) -> ContextRetriever:
    def retrieve(n: int, query: EvalQuery, budget: int) -> list[Piece]:
        return pieces_from_results(searches.hits(n, query, mode))

    return retrieve


def _context_system(searches: _Searches, mode: str, counter: TokenCounter) -> ContextRetriever:
    def retrieve(n: int, query: EvalQuery, budget: int) -> list[Piece]:
        hits = searches.hits(n, query, mode)
        vector = None if searches.vectors is None else searches.vectors[n]
        return context_pieces(searches.pipeline.context(query.text, budget_tokens=budget, hits=hits,
                                                        count_tokens=counter.count, query_vector=vector))

    return retrieve


def context_pieces(assembled: Context) -> list[Piece]:
    """The pieces of a :class:`~m3e_rag.types.Context`, in the order handed to the LLM.

    A piece without a span is kept as unlocated: its tokens count, it never hits.
    """
    return [
        Piece(p.source, p.start, p.end, p.text) if p.start is not None and p.end is not None
        else Piece.unlocated(p.source, p.text)
        for p in assembled.pieces
    ]


def evaluate_context(
    task: RetrievalTask,
    pipeline: RAGPipeline,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    *,
    modes: Sequence[str] = ("hybrid",),
    k: int = 10,
    assembly: bool = True,
    counter: TokenCounter | None = None,
    baseline: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ContextReport:
    """Index the task's corpus and score answer-in-context recall of the pipeline's systems.

    Args:
        task: a SQuAD-style task (its queries carry answer spans).
        pipeline: where to index; its index must hold no passages other than the task's.
        budgets: token budgets.
        modes: search modes whose top-``k`` pieces are scored (``<mode> top-<k>``).
        k: results per search.
        assembly: also score ``pipeline.context`` over each mode's hits.
        counter: the tokenizer counting tokens (default: the pipeline model's).
        baseline: the system the others are compared against (default: the first mode's top-k).
        progress: ``progress(stage, done, total)``: ``index``, ``encode``, then ``context``.

    Raises:
        InputError: bad modes or ``k``, an index holding foreign passages, or no query with an answer span.
    """
    check_k(k)
    mode_list = [check_mode(m) for m in dict.fromkeys(modes)]
    if not mode_list:
        raise InputError("evaluate_context needs at least one search mode, e.g. hybrid.")
    report_progress = progress or (lambda stage, done, total: None)
    _refuse_foreign_sources(task, pipeline)
    pipeline.ingest(documents=task.corpus, progress=lambda done, total: report_progress("index", done, total))
    vectors = None
    if any(m != "sparse" for m in mode_list):
        vectors = _embed_queries([q.text for q in task.queries], pipeline.encoder, report_progress)
    counter = counter or pipeline_counter(pipeline)
    searches = _Searches(pipeline, k, vectors)
    systems: dict[str, ContextRetriever] = {f"{mode} top-{k}": _search_system(searches, mode) for mode in mode_list}
    if assembly:
        systems.update({f"{mode} {CONTEXT_SYSTEM}": _context_system(searches, mode, counter) for mode in mode_list})
    return score_context(task, systems, counter, budgets, baseline=baseline,
                         progress=lambda done, total: report_progress("context", done, total))
