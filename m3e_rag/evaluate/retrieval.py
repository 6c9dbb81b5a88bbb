"""Retrieval evaluation: recall@k, MRR@k and nDCG@k of the real pipeline, per search mode.

:func:`evaluate` takes a :class:`~m3e_rag.evaluate.tasks.RetrievalTask` (built by
:mod:`m3e_rag.evaluate.tasks` from a SQuAD file or JSONL queries and corpus), indexes the corpus
through :class:`~m3e_rag.pipeline.RAGPipeline` (chunking included), runs every query in every mode
and scores the ranking of *passages*: results are chunks, each mapped to the passage it came from,
keeping a passage's first (best) position only. A passage counts as found when any of its chunks
is. Relevance is binary; the arithmetic is :mod:`m3e_rag.evaluate.metrics`, and
:meth:`EvalReport.compare` pairs two modes query by query (:mod:`m3e_rag.evaluate.stats`).

Example::

    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.evaluate.retrieval import evaluate
    from m3e_rag.evaluate.tasks import task_from_squad

    task = task_from_squad("xquad.zh.json", corpus_file="xquad.en.json")   # zh questions, en paragraphs
    report = evaluate(task, RAGPipeline("/tmp/eval-index"), modes=("dense", "hybrid"))
    print(report.format_table())
    report.to_dict()   # {"dense": {"recall@1": ..., "recall@5": ..., "recall@10": ..., "mrr@10": ..., ...}}
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from m3e_rag.errors import InputError
from m3e_rag.evaluate.metrics import mrr_at_k, ndcg_at_k, passage_ranking, recall_at_k
from m3e_rag.evaluate.stats import PairedComparison, paired_comparison
from m3e_rag.evaluate.tasks import RetrievalTask
from m3e_rag.retrieve.modes import SEARCH_MODES, SearchMode, check_k, check_mode

if TYPE_CHECKING:
    from m3e_rag.encode.protocol import TextEncoder
    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.retrieve.rerank import Reranker, RerankerLike

__all__ = [
    "ModeMetrics",
    "EvalReport",
    "EvalProgress",
    "evaluate",
    "default_depth",
]

#: ``progress(stage, done, total)``; stages: ``"index"`` (chunks), ``"encode"`` (queries), then each mode.
EvalProgress = Callable[[str, int, int], None]

#: Queries embedded per step (a progress report after each).
_ENCODE_STEP = 256
#: Batch size for embedding the queries. Queries are short and the encoder sorts by token length,
#: so bigger batches waste little on padding and save per-call overhead (figures: benchmarks/README.md,
#: 'Design figures').
_QUERY_BATCH = 64


@dataclass
class ModeMetrics:
    """Scores of one search mode, averaged over the queries.

    Attributes:
        mode: ``dense``, ``sparse`` or ``hybrid`` (``+rerank`` appended when a reranker re-ordered them).
        k: the cutoff of MRR and nDCG (and the largest recall cutoff).
        recall: recall at each cutoff (1, 5 and ``k``, those not above ``k``).
        mrr: mean reciprocal rank of the first relevant passage within the top ``k`` (0 if none).
        ndcg: mean nDCG@k, binary relevance, ideal DCG over ``min(len(relevant), k)`` passages.
        queries: queries scored.
        short_rankings: queries for which fewer than ``k`` distinct passages came back.
        seconds: wall time of the mode's searches (query embedding not included).
        reciprocal_ranks: each query's reciprocal rank within the top ``k`` (0 if not found), in the
            task's query order: what :meth:`EvalReport.compare` pairs between modes.
    """

    mode: str
    k: int
    recall: dict[int, float]
    mrr: float
    ndcg: float
    queries: int
    short_rankings: int = 0
    seconds: float = 0.0
    reciprocal_ranks: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, float]:
        """``{"recall@1": ..., "recall@5": ..., "recall@10": ..., "mrr@10": ..., "ndcg@10": ...}``."""
        out = {f"recall@{cut}": self.recall[cut] for cut in sorted(self.recall)}
        out[f"mrr@{self.k}"] = self.mrr
        out[f"ndcg@{self.k}"] = self.ndcg
        return out


@dataclass
class EvalReport:
    """What :func:`evaluate` measured.

    Attributes:
        task: the task's name.
        passages: passages in the corpus.
        chunks: chunks those passages became in the index.
        queries: queries run in each mode.
        k: the metric cutoff.
        depth: chunks asked for per search (mapped to at most ``depth`` distinct passages).
        modes: the metrics of each mode, in the order run.
        index_seconds: wall time of the ingest (chunking and embedding the corpus).
        encode_seconds: wall time of embedding all queries (once, shared by dense and hybrid).
        model: the model that embedded corpus and queries.
    """

    task: str
    passages: int
    chunks: int
    queries: int
    k: int
    depth: int
    modes: dict[str, ModeMetrics] = field(default_factory=dict)
    index_seconds: float = 0.0
    encode_seconds: float = 0.0
    model: str = ""

    @property
    def seconds(self) -> float:
        """Total wall time: index, query embedding and every mode's searches."""
        return self.index_seconds + self.encode_seconds + sum(m.seconds for m in self.modes.values())

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{mode: {metric: value}}``, as ``m3e-rag eval --json`` prints it."""
        return {mode: metrics.to_dict() for mode, metrics in self.modes.items()}

    def compare(self, baseline: str, other: str, *, resamples: int = 2000, seed: int = 0) -> PairedComparison:
        """Per-query paired comparison of MRR@k: ``other`` against ``baseline`` (both modes evaluated).

        Raises:
            InputError: if either mode was not evaluated in this report.
        """
        for mode in (baseline, other):
            if mode not in self.modes:
                raise InputError(
                    f"cannot compare mode {mode!r}: this report holds {', '.join(self.modes)}; evaluate it too."
                )
        return paired_comparison(
            self.modes[baseline].reciprocal_ranks,
            self.modes[other].reciprocal_ranks,
            names=(baseline, other),
            metric=f"mrr@{self.k}",
            resamples=resamples,
            seed=seed,
        )

    def format_table(self, digits: int = 4) -> str:
        """A plain-text table: one row per mode, one column per metric, then sizes and timings."""
        if not self.modes:
            return "(no modes evaluated)"
        names = list(next(iter(self.modes.values())).to_dict())
        header = ["mode", *names, "seconds"]
        rows = [
            [mode, *(f"{v:.{digits}f}" for v in m.to_dict().values()), f"{m.seconds:.1f}"]
            for mode, m in self.modes.items()
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        short = [f"{m.short_rankings} of {m.queries} queries in {mode}" for mode, m in self.modes.items()
                 if m.short_rankings]
        lines.append(
            f"{self.task}: {self.queries} queries, {self.passages} passages in {self.chunks} chunks; "
            f"model {self.model}; depth {self.depth} chunks"
        )
        lines.append(
            f"each metric is a mean over the {self.queries} queries: recall@n, the share of a query's relevant "
            f"passages in its top n; mrr@{self.k}, 1/rank of its first relevant passage (0 if not in the top "
            f"{self.k}); ndcg@{self.k}, rank-discounted hits over the best possible"
        )
        if short:
            lines.append(
                f"fewer than {self.k} distinct passages came back for {', '.join(short)} (their empty ranks count "
                "as misses)"
            )
        lines.append(
            f"index {self.index_seconds:.1f} s, query embedding {self.encode_seconds:.1f} s, "
            f"total {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def default_depth(k: int) -> int:
    """Chunks asked for per search to rank ``k`` passages: ``max(4 * k, 40)``.

    A passage may become several chunks (and overlapping chunks rank together), so a search asks
    for more chunks than passages it needs.
    """
    return max(4 * k, 40)


def evaluate(
    task: RetrievalTask,
    pipeline: RAGPipeline,
    modes: Sequence[str] = SEARCH_MODES,
    k: int = 10,
    *,
    depth: int | None = None,
    progress: EvalProgress | None = None,
    reranker: RerankerLike | None = None,
    rerank_top_n: int | None = None,
) -> EvalReport:
    """Index a task's corpus with ``pipeline`` and score every query in every mode.

    The corpus is ingested (chunked, embedded, stored; unchanged chunks of an earlier run into the
    same index are kept) and every query is embedded once, in batches; then each mode runs
    :meth:`RAGPipeline.search` per query with the precomputed vector, asking for ``depth`` chunks,
    mapped to distinct passages.

    Args:
        task: the corpus and the queries.
        pipeline: where to index; its index must hold no passages other than the task's.
        modes: search modes to score, in order.
        k: cutoff of the metrics (recall also at 1 and 5).
        depth: chunks asked for per search (default :func:`default_depth`; also ``fetch_k``).
        progress: called as ``progress(stage, done, total)``.
        reranker: a second stage (name, folder, callable or object, see :func:`m3e_rag.retrieve.rerank.load_reranker`):
            every mode is then scored twice, as ``mode`` and as ``mode+rerank``, so the gain shows.
        rerank_top_n: chunks of the first stage given to the reranker (default: ``depth``).

    Raises:
        InputError: a bad mode or cutoff, or an index that holds passages outside the task's corpus.
    """
    second, mode_list, depth = _checked_arguments(task, modes, k, depth, reranker, rerank_top_n)
    report_progress: EvalProgress = progress or (lambda stage, done, total: None)
    _refuse_foreign_sources(task, pipeline)
    report = _index_corpus(task, pipeline, mode_list, k, depth, report_progress)

    vectors: Any = None
    if any(m in ("dense", "hybrid") for m in mode_list):
        started = time.perf_counter()
        vectors = _embed_queries([q.text for q in task.queries], pipeline.encoder, report_progress)
        report.encode_seconds = time.perf_counter() - started

    runs: list[tuple[str, SearchMode, Reranker | None]] = [(m, m, None) for m in mode_list]
    if second is not None:
        runs = [run for m in mode_list for run in ((m, m, None), (f"{m}+rerank", m, second))]
    for label, mode, stage_two in runs:
        report.modes[label] = _score_mode(
            task,
            pipeline,
            label,
            mode,
            stage_two,
            vectors,
            k=k,
            depth=depth,
            rerank_top_n=rerank_top_n if stage_two is not None else None,
            progress=report_progress,
        )
    return report


def _checked_arguments(
    task: RetrievalTask,
    modes: Sequence[str],
    k: int,
    depth: int | None,
    reranker: RerankerLike | None,
    rerank_top_n: int | None,
) -> tuple[Reranker | None, list[SearchMode], int]:
    """:func:`evaluate`'s arguments checked: ``(second stage or None, modes, depth)``, or an InputError."""
    check_k(k)
    from m3e_rag.retrieve.rerank import load_reranker

    second = load_reranker(reranker) if reranker is not None else None
    if rerank_top_n is not None:
        check_k(rerank_top_n, "rerank_top_n")
        if second is None:
            raise InputError("rerank_top_n was given without a reranker; pass reranker= too, or drop rerank_top_n.")
    mode_list = [check_mode(m) for m in modes]
    if not mode_list:
        raise InputError(f"evaluate() needs at least one mode of {', '.join(SEARCH_MODES)}.")
    depth = check_k(depth, "depth") if depth is not None else default_depth(k)
    depth = max(depth, k)
    if not task.queries or not task.corpus:
        raise InputError("the task has no queries or no passages; nothing to evaluate.")
    return second, mode_list, depth


def _refuse_foreign_sources(task: RetrievalTask, pipeline: RAGPipeline) -> None:
    """Refuse an index that holds passages outside the task's corpus (they would skew every metric)."""
    ids = set(task.ids)
    foreign = [s for s in pipeline.store.sources() if s not in ids]
    if foreign:
        raise InputError(
            f"the index at {pipeline.store.describe()['location']} holds {len(foreign)} sources that are not "
            f"in this task's corpus (e.g. {foreign[0]!r}); evaluate into an empty folder or one used for the "
            "same corpus."
        )


def _index_corpus(
    task: RetrievalTask,
    pipeline: RAGPipeline,
    mode_list: Sequence[SearchMode],
    k: int,
    depth: int,
    report_progress: EvalProgress,
) -> EvalReport:
    """Ingest the corpus (and build the BM25 matrix when a mode needs it); a report of the sizes and the time."""
    started = time.perf_counter()
    pipeline.ingest(documents=task.corpus, progress=lambda done, total: report_progress("index", done, total))
    if pipeline.use_sparse and any(m != "dense" for m in mode_list):
        pipeline.sparse_index.build()  # the BM25 matrix and jieba load here, not in the first timed search
    return EvalReport(
        task=task.name,
        passages=len(task.corpus),
        chunks=pipeline.store.count(),
        queries=len(task.queries),
        k=k,
        depth=depth,
        index_seconds=time.perf_counter() - started,
        model=pipeline.encoder.model_name,
    )


def _embed_queries(texts: list[str], encoder: TextEncoder, report_progress: EvalProgress) -> Any:
    """Every query embedded once, ``_ENCODE_STEP`` at a time, in batches of at least ``_QUERY_BATCH``."""
    from m3e_rag.encode.encoder import M3EEncoder

    if isinstance(encoder, M3EEncoder):
        encoder = copy.copy(encoder)  # same loaded model (shared per process), own batch size
        encoder.batch_size = max(encoder.batch_size, _QUERY_BATCH)
    parts = []
    for start in range(0, len(texts), _ENCODE_STEP):
        parts.append(encoder.encode_queries(texts[start : start + _ENCODE_STEP]))
        report_progress("encode", min(start + _ENCODE_STEP, len(texts)), len(texts))
    import numpy as np

    return np.concatenate(parts)


def _score_mode(
    task: RetrievalTask,
    pipeline: RAGPipeline,
    label: str,
    mode: SearchMode,
    stage_two: Reranker | None,
    vectors: Any,
    *,
    k: int,
    depth: int,
    rerank_top_n: int | None,
    progress: EvalProgress,
) -> ModeMetrics:
    """Run every query in one mode (``label`` names it in the report) and average its metrics."""
    cutoffs = sorted({c for c in (1, 5, k) if c <= k})
    started = time.perf_counter()
    recall = dict.fromkeys(cutoffs, 0.0)
    mrr = ndcg = 0.0
    short = 0
    reciprocal_ranks: list[float] = []
    for n, query in enumerate(task.queries):
        hits = pipeline.search(
            query.text,
            k=depth,
            mode=mode,
            fetch_k=depth,
            query_vector=None if vectors is None or mode == "sparse" else vectors[n],
            reranker=stage_two,
            rerank_top_n=rerank_top_n,
        )
        ranked = passage_ranking((h.source for h in hits), k)
        short += len(ranked) < k
        for cut in cutoffs:
            recall[cut] += recall_at_k(ranked, query.relevant, cut)
        reciprocal_ranks.append(mrr_at_k(ranked, query.relevant, k))
        mrr += reciprocal_ranks[-1]
        ndcg += ndcg_at_k(ranked, query.relevant, k)
        if (n + 1) % 50 == 0 or n + 1 == len(task.queries):
            progress(label, n + 1, len(task.queries))
    count = len(task.queries)
    return ModeMetrics(
        mode=label,
        k=k,
        recall={cut: value / count for cut, value in recall.items()},
        mrr=mrr / count,
        ndcg=ndcg / count,
        queries=count,
        short_rankings=short,
        seconds=time.perf_counter() - started,
        reciprocal_ranks=reciprocal_ranks,
    )
