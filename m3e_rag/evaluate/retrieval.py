"""Retrieval evaluation: recall@k, MRR@k and nDCG@k of the real pipeline, per search mode.

A retrieval task is a corpus of passages with ids and a list of queries, each with the ids of its
relevant passages. Two ways to build one:

- :func:`task_from_squad` turns a SQuAD-format file (``data[].paragraphs[].{context, qas[]}``) into a
  task: every paragraph is a document, every question a query, its own paragraph the relevant one.
  With a second SQuAD file as the corpus, the queries of one file run against the paragraphs of the
  other (XQuAD's parallel files give cross-lingual tasks).
- :func:`task_from_jsonl` reads queries ``{"query": ..., "relevant_ids": [...]}`` (one JSON object a
  line, an ``"id"`` optional) against a corpus of ``{"id": ..., "text": ...}`` lines or a SQuAD file.

:func:`evaluate` indexes the corpus through :class:`~m3e_rag.pipeline.RAGPipeline` (chunking
included), runs every query in every mode and scores the ranking of *passages*: results are chunks,
each mapped to the passage it came from, keeping a passage's first (best) position only. A passage
counts as found when any of its chunks is. Relevance is binary.

Example::

    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.evaluate.retrieval import evaluate, task_from_squad

    task = task_from_squad("xquad.zh.json", corpus_file="xquad.en.json")   # zh questions, en paragraphs
    report = evaluate(task, RAGPipeline("/tmp/eval-index"), modes=("dense", "hybrid"))
    print(report.format_table())
    report.to_dict()   # {"dense": {"recall@1": ..., "recall@5": ..., "recall@10": ..., "mrr@10": ..., ...}}

Paragraph ids of a SQuAD file are their 0-based positions in ``data[].paragraphs[]`` order, written
``p0``, ``p1``, ...; a JSONL query file that points into a SQuAD corpus uses those ids.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3e_rag.errors import InputError
from m3e_rag.retrieve.modes import SEARCH_MODES, Reranker, SearchMode, check_k, check_mode
from m3e_rag.types import Document

if TYPE_CHECKING:
    from m3e_rag.pipeline import RAGPipeline
    from m3e_rag.retrieve.rerank import RerankerLike

__all__ = [
    "EvalQuery",
    "RetrievalTask",
    "ModeMetrics",
    "EvalReport",
    "EvalProgress",
    "task_from_squad",
    "task_from_jsonl",
    "load_task",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "evaluate",
    "default_depth",
    "PairedComparison",
    "paired_comparison",
]

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``; stages: ``"index"`` (chunks), ``"encode"`` (queries), then each mode.
EvalProgress = Callable[[str, int, int], None]

#: Queries embedded per step (a progress report after each).
_ENCODE_STEP = 256
#: Batch size for embedding the queries. Queries are short and the encoder sorts by token length,
#: so bigger batches waste little on padding and save per-call overhead: 768 CMRC questions took a
#: median 12 s at 64 against 29 s at the encoder's default of 32 (e5-small stand-in, 3 rounds, 2 busy cores).
_QUERY_BATCH = 64


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class EvalQuery:
    """One query of a retrieval task.

    Attributes:
        qid: the query's id (the SQuAD question id, or the JSONL ``id``, or ``q<line>``).
        text: the question.
        relevant: ids of the corpus passages that answer it (at least one).
    """

    qid: str
    text: str
    relevant: frozenset[str]


@dataclass
class RetrievalTask:
    """A corpus with ids and queries with their relevant ids.

    Attributes:
        corpus: the passages; each :class:`~m3e_rag.types.Document`'s ``source`` is its id.
        queries: the queries, in file order.
        name: a short description (file names), for reports.
        alignment: how queries were matched to passages of another file: ``"same file"``,
            ``"qa ids"``, ``"position"`` or ``"qrels"`` (JSONL relevant_ids).
        skipped: questions left out because their text was blank.
    """

    corpus: list[Document]
    queries: list[EvalQuery]
    name: str = ""
    alignment: str = "same file"
    skipped: int = 0

    @property
    def ids(self) -> list[str]:
        """Passage ids, in corpus order."""
        return [doc.source for doc in self.corpus]

    def limit(self, n: int | None) -> RetrievalTask:
        """The same task with only the first ``n`` queries (the whole corpus is kept)."""
        if n is None:
            return self
        check_k(n, "limit")
        return RetrievalTask(self.corpus, self.queries[:n], self.name, self.alignment, self.skipped)


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
        short = {mode: m.short_rankings for mode, m in self.modes.items() if m.short_rankings}
        lines.append(
            f"{self.task}: {self.queries} queries, {self.passages} passages in {self.chunks} chunks; "
            f"model {self.model}; depth {self.depth} chunks"
        )
        lines.append(
            f"index {self.index_seconds:.1f} s, query embedding {self.encode_seconds:.1f} s, "
            f"total {self.seconds:.1f} s"
            + (f"; fewer than {self.k} passages returned: {short}" if short else "")
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ metrics


def _check_relevant(relevant: Collection[str]) -> None:
    if not relevant:
        raise InputError("a query needs at least one relevant id to be scored; drop queries without any.")


def _first_k_distinct(ranked: Sequence[str], k: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant ids found in the top ``k`` of ``ranked`` (repeats count once).

    Args:
        ranked: retrieved ids, best first.
        relevant: the relevant ids (non-empty).
        k: the cutoff (``>= 1``).

    Returns:
        ``|top k ∩ relevant| / |relevant|``.
    """
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    return len(rel.intersection(_first_k_distinct(ranked, k))) / len(rel)


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant id within the top ``k``; 0 when there is none."""
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    for rank, item in enumerate(_first_k_distinct(ranked, k), start=1):
        if item in rel:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalized discounted cumulative gain at ``k`` with binary relevance.

    ``DCG = sum(1 / log2(rank + 1))`` over relevant ids in the top ``k``; the ideal DCG puts
    ``min(len(relevant), k)`` relevant ids first. Repeats of an id count once (at their best rank).
    """
    check_k(k)
    _check_relevant(relevant)
    rel = set(relevant)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(_first_k_distinct(ranked, k), 1) if item in rel)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(rel), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class PairedComparison:
    """Two systems scored on the same queries: the mean difference and how sure we are of it.

    Attributes:
        baseline: name of the first system (e.g. ``dense``).
        other: name of the second (e.g. ``hybrid``); differences are ``other - baseline``.
        metric: the per-query metric compared (e.g. ``mrr@10``).
        queries: queries paired.
        baseline_mean: the baseline's mean.
        other_mean: the other system's mean.
        diff: ``other_mean - baseline_mean``.
        ci_low: lower end of the bootstrap confidence interval of ``diff``.
        ci_high: upper end.
        confidence: the interval's level (0.95).
        wins: queries where ``other`` scored higher.
        losses: queries where it scored lower.
        ties: queries with equal scores.
        resamples: bootstrap resamples drawn (percentile method, seeded: the interval is reproducible).
    """

    baseline: str
    other: str
    metric: str
    queries: int
    baseline_mean: float
    other_mean: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    wins: int
    losses: int
    ties: int
    resamples: int

    @property
    def significant(self) -> bool:
        """True when the confidence interval excludes 0 (the difference is more than noise)."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields above (floats rounded to 5 decimals)."""
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def format(self) -> str:
        """One line: ``hybrid - dense mrr@10: +0.0123 [95% CI +0.0081, +0.0166]; wins 80, losses 31, ties 889``."""
        return (
            f"{self.other} - {self.baseline} {self.metric}: {self.diff:+.4f} "
            f"[{self.confidence:.0%} CI {self.ci_low:+.4f}, {self.ci_high:+.4f}]; "
            f"wins {self.wins}, losses {self.losses}, ties {self.ties} ({self.queries} queries)"
        )


def paired_comparison(
    baseline: Sequence[float],
    other: Sequence[float],
    *,
    names: tuple[str, str] = ("baseline", "other"),
    metric: str = "mrr@10",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare two systems query by query: wins, losses, ties and a bootstrap interval of the mean difference.

    The per-query differences ``other - baseline`` are resampled with replacement ``resamples`` times
    (numpy's seeded generator, so the interval is reproducible) and the interval is the percentile
    interval of the resampled means. Pairing removes the spread between queries that both systems
    share, so a small but consistent gain shows as an interval that excludes 0.

    Args:
        baseline: per-query scores of the first system (e.g. reciprocal ranks of dense).
        other: per-query scores of the second, same queries in the same order.
        names: the two systems' names, for reports.
        metric: the metric's name, for reports.
        resamples: bootstrap resamples (``>= 100``).
        confidence: the interval's level, between 0 and 1.
        seed: the generator's seed.

    Raises:
        InputError: lengths differ, no queries, a score is not finite, or a bad ``resamples``/``confidence``.
    """
    import numpy as np

    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(
            f"paired_comparison needs two equally long lists of per-query scores, got {a.shape} and {b.shape}."
        )
    if a.size == 0:
        raise InputError("paired_comparison needs at least one query.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("paired_comparison got a score that is not a finite number; pass per-query metric values.")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise InputError(f"resamples must be an integer >= 100, got {resamples!r}; 2000 is usual.")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1, got {confidence!r}; 0.95 is usual.")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // diff.size)  # bound the index matrix to about 16 MB
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedComparison(
        baseline=names[0],
        other=names[1],
        metric=metric,
        queries=int(diff.size),
        baseline_mean=float(a.mean()),
        other_mean=float(b.mean()),
        diff=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        wins=int((diff > 0).sum()),
        losses=int((diff < 0).sum()),
        ties=int((diff == 0).sum()),
        resamples=resamples,
    )


# ------------------------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class _Paragraph:
    context: str
    title: str
    qas: tuple[tuple[str, str], ...]  # (qa id, question)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist; pass an existing file.")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 ({exc.reason}); convert it to UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} file {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); "
            "pass a SQuAD-format file or a JSONL file."
        ) from exc


def _is_squad(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("data"), list)


def _squad_paragraphs(payload: Any, path: Path) -> list[_Paragraph]:
    where = str(path)
    if not _is_squad(payload):
        raise InputError(f"{where!r} is not in SQuAD format (no top-level \"data\" list); see the SQuAD layout.")
    out: list[_Paragraph] = []
    for a, article in enumerate(payload["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise InputError(f"{where!r}: data[{a}] has no \"paragraphs\" list; fix or remove that entry.")
        title = article.get("title")
        for p, para in enumerate(article["paragraphs"]):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str):
                raise InputError(f"{where!r}: data[{a}].paragraphs[{p}] has no \"context\" string; fix that entry.")
            qas_raw = para.get("qas", [])
            if not isinstance(qas_raw, list):
                raise InputError(f"{where!r}: data[{a}].paragraphs[{p}].qas is not a list; fix that entry.")
            qas = []
            for q, qa in enumerate(qas_raw):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise InputError(
                        f"{where!r}: data[{a}].paragraphs[{p}].qas[{q}] needs an \"id\" and a \"question\" string."
                    )
                qas.append((str(qa["id"]), qa["question"]))
            out.append(_Paragraph(context, str(title) if title is not None else "", tuple(qas)))
    if not out:
        raise InputError(f"{where!r} holds no paragraphs; pass a SQuAD file with data[].paragraphs[].")
    return out


def _paragraph_id(i: int) -> str:
    return f"p{i}"


def _squad_corpus(paragraphs: Sequence[_Paragraph]) -> list[Document]:
    return [
        Document(p.context, source=_paragraph_id(i), metadata={"title": p.title} if p.title else {})
        for i, p in enumerate(paragraphs)
    ]


def task_from_squad(queries_file: str | Path, corpus_file: str | Path | None = None) -> RetrievalTask:
    """Build a task from a SQuAD-format file: paragraphs are the corpus, questions the queries.

    Args:
        queries_file: the SQuAD file whose questions are the queries (and whose paragraphs are the
            corpus when ``corpus_file`` is None).
        corpus_file: another SQuAD file whose paragraphs are the corpus. Each question's relevant
            paragraph is the one of ``corpus_file`` holding a question with the same id (XQuAD's
            parallel files share ids); when the ids do not all match, paragraphs are paired by
            position, which needs both files to have the same number of paragraphs.

    Returns:
        The task; passage ids are ``p0``, ``p1``, ... in ``data[].paragraphs[]`` order of the corpus.

    Raises:
        InputError: a file is missing, not JSON, not SQuAD-shaped, or the two files cannot be aligned.
    """
    qpath = Path(queries_file).expanduser()
    qparas = _squad_paragraphs(_read_json(qpath, "queries"), qpath)
    name = qpath.name
    relevant_of: Callable[[int, str], int]
    if corpus_file is None:
        cparas, alignment = qparas, "same file"
        relevant_of = lambda i, qid: i  # noqa: E731 - each question's own paragraph
    else:
        cpath = Path(corpus_file).expanduser()
        cparas = _squad_paragraphs(_read_json(cpath, "corpus"), cpath)
        name = f"{qpath.name} -> {cpath.name}"
        relevant_of, alignment = _align(qparas, cparas, qpath, cpath)
    queries: list[EvalQuery] = []
    skipped = 0
    for i, para in enumerate(qparas):
        for qid, question in para.qas:
            if not question.strip():
                skipped += 1
                continue
            queries.append(EvalQuery(qid, question.strip(), frozenset({_paragraph_id(relevant_of(i, qid))})))
    if not queries:
        raise InputError(f"{str(qpath)!r} holds no questions; pass a SQuAD file with data[].paragraphs[].qas[].")
    return RetrievalTask(_squad_corpus(cparas), queries, name, alignment, skipped)


def _qa_positions(paragraphs: Sequence[_Paragraph]) -> dict[str, int]:
    """Map each qa id to the position of the paragraph holding it; -1 for an id held twice."""
    out: dict[str, int] = {}
    for i, para in enumerate(paragraphs):
        for qid, _ in para.qas:
            out[qid] = -1 if qid in out else i
    return out


def _align(
    qparas: Sequence[_Paragraph], cparas: Sequence[_Paragraph], qpath: Path, cpath: Path
) -> tuple[Callable[[int, str], int], str]:
    """How to find a question's corpus paragraph: by shared qa id if all ids match, else by position.

    Returns ``(relevant_of(query paragraph position, qa id) -> corpus paragraph position, alignment)``.
    """
    corpus_pos = _qa_positions(cparas)
    qids = [qid for para in qparas for qid, _ in para.qas]
    if qids and all(corpus_pos.get(qid, -1) >= 0 for qid in qids):
        if len(qparas) == len(cparas) and any(
            corpus_pos[qid] != i for i, para in enumerate(qparas) for qid, _ in para.qas
        ):
            logger.warning("%s and %s share qa ids but not paragraph order; pairing by qa id", qpath, cpath)
        return (lambda i, qid: corpus_pos[qid]), "qa ids"
    if len(qparas) != len(cparas):
        raise InputError(
            f"Cannot pair {str(qpath)!r} ({len(qparas)} paragraphs) with {str(cpath)!r} ({len(cparas)} "
            "paragraphs): their qa ids differ and so do their paragraph counts; pass parallel files."
        )
    logger.warning("qa ids of %s and %s differ; pairing paragraphs by position", qpath, cpath)
    return (lambda i, qid: i), "position"


def _read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist; pass an existing file.")
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for n, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{what} file {str(path)!r}, line {n}, is not JSON ({exc.msg}); "
                        "write one JSON object per line."
                    ) from exc
                if not isinstance(row, dict):
                    raise InputError(f"{what} file {str(path)!r}, line {n}, is not a JSON object.")
                rows.append((n, row))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} file {str(path)!r} is not UTF-8 ({exc.reason}); convert it to UTF-8.") from exc
    if not rows:
        raise InputError(f"{what} file {str(path)!r} is empty; write one JSON object per line.")
    return rows


def _id_string(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text else None


def _jsonl_corpus(path: Path) -> list[Document]:
    """A corpus file: SQuAD (paragraphs, ids ``p0``...) or JSONL ``{"id": ..., "text": ...}`` lines."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if _is_squad(payload):
        return _squad_corpus(_squad_paragraphs(payload, path))
    docs: list[Document] = []
    seen: set[str] = set()
    for n, row in _read_jsonl(path, "corpus"):
        doc_id, text = _id_string(row.get("id")), row.get("text")
        if doc_id is None or not isinstance(text, str):
            raise InputError(
                f"corpus file {str(path)!r}, line {n}, needs an \"id\" (string or number) and a \"text\" string."
            )
        if doc_id in seen:
            raise InputError(f"corpus file {str(path)!r}, line {n}: id {doc_id!r} appears twice; ids must be unique.")
        seen.add(doc_id)
        docs.append(Document(text, source=doc_id))
    return docs


def task_from_jsonl(queries_jsonl: str | Path, corpus_file: str | Path) -> RetrievalTask:
    """Build a task from JSONL queries with relevance judgements and a corpus file.

    Args:
        queries_jsonl: one JSON object a line: ``{"query": str, "relevant_ids": [id, ...]}``, with an
            optional ``"id"`` (default ``q<line number>``).
        corpus_file: JSONL ``{"id": ..., "text": ...}`` lines, or a SQuAD file (passage ids ``p0``, ``p1``,
            ... in paragraph order).

    Raises:
        InputError: a file is missing or malformed, a query has no relevant id, or names an id
            that is not in the corpus.
    """
    qpath, cpath = Path(queries_jsonl).expanduser(), Path(corpus_file).expanduser()
    corpus = _jsonl_corpus(cpath)
    known = {doc.source for doc in corpus}
    queries: list[EvalQuery] = []
    skipped = 0
    for n, row in _read_jsonl(qpath, "queries"):
        text, rel_raw = row.get("query"), row.get("relevant_ids")
        if not isinstance(text, str) or not isinstance(rel_raw, list) or not rel_raw:
            raise InputError(
                f"queries file {str(qpath)!r}, line {n}, needs a \"query\" string and a non-empty "
                "\"relevant_ids\" list."
            )
        relevant = [_id_string(r) for r in rel_raw]
        if any(r is None for r in relevant):
            raise InputError(f"queries file {str(qpath)!r}, line {n}: relevant_ids must be strings or numbers.")
        missing = sorted({r for r in relevant if r is not None and r not in known})
        if missing:
            raise InputError(
                f"queries file {str(qpath)!r}, line {n}: relevant id(s) {missing[:3]} are not in the corpus "
                f"{str(cpath)!r}; check that both files use the same ids."
            )
        if not text.strip():
            skipped += 1
            continue
        qid = _id_string(row.get("id")) or f"q{n}"
        queries.append(EvalQuery(qid, text.strip(), frozenset(r for r in relevant if r is not None)))
    if not queries:
        raise InputError(f"queries file {str(qpath)!r} holds no non-blank queries.")
    return RetrievalTask(corpus, queries, f"{qpath.name} -> {cpath.name}", "qrels", skipped)


def load_task(queries_file: str | Path, corpus_file: str | Path | None = None) -> RetrievalTask:
    """Build a task from a SQuAD file (optionally against another file's paragraphs) or from JSONL queries.

    A queries file that parses as one JSON object with a ``data`` list is SQuAD
    (:func:`task_from_squad`); anything else is read as JSONL queries (:func:`task_from_jsonl`), which
    need ``corpus_file``.
    """
    qpath = Path(queries_file).expanduser()
    if not qpath.is_file():
        raise InputError(f"queries file {str(qpath)!r} does not exist; pass an existing file.")
    try:
        payload = json.loads(qpath.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if _is_squad(payload):
        return task_from_squad(qpath, corpus_file)
    if corpus_file is None:
        if isinstance(payload, dict) and "query" not in payload:
            raise InputError(f"{str(qpath)!r} is neither a SQuAD file nor JSONL queries; see `m3e-rag eval --help`.")
        raise InputError(
            f"{str(qpath)!r} is not a SQuAD file, so it is read as JSONL queries, which need --corpus FILE "
            "(JSONL {\"id\", \"text\"} lines or a SQuAD file)."
        )
    return task_from_jsonl(qpath, corpus_file)


# --------------------------------------------------------------------------------------- evaluation


def _passage_ranking(sources: Iterable[str | None], k: int) -> list[str]:
    """Chunk sources, best first -> distinct passage ids, first occurrence kept, at most ``k``."""
    return _first_k_distinct([s for s in sources if s is not None], k)


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
    report_progress: EvalProgress = progress or (lambda stage, done, total: None)

    ids = set(task.ids)
    foreign = [s for s in pipeline.store.sources() if s not in ids]
    if foreign:
        raise InputError(
            f"the index at {pipeline.store.describe()['location']} holds {len(foreign)} sources that are not "
            f"in this task's corpus (e.g. {foreign[0]!r}); evaluate into an empty folder or one used for the "
            "same corpus."
        )
    started = time.perf_counter()
    pipeline.ingest(documents=task.corpus, progress=lambda done, total: report_progress("index", done, total))
    if pipeline.use_sparse and any(m != "dense" for m in mode_list):
        pipeline.sparse_index.build()  # the BM25 matrix and jieba load here, not in the first timed search
    report = EvalReport(
        task=task.name,
        passages=len(task.corpus),
        chunks=pipeline.store.count(),
        queries=len(task.queries),
        k=k,
        depth=depth,
        index_seconds=time.perf_counter() - started,
        model=pipeline.encoder.model_name,
    )

    texts = [q.text for q in task.queries]
    vectors: Any = None
    if any(m in ("dense", "hybrid") for m in mode_list):
        started = time.perf_counter()
        encoder = copy.copy(pipeline.encoder)  # same loaded model (shared per process), own batch size
        encoder.batch_size = max(encoder.batch_size, _QUERY_BATCH)
        parts = []
        for start in range(0, len(texts), _ENCODE_STEP):
            parts.append(encoder.encode_queries(texts[start : start + _ENCODE_STEP]))
            report_progress("encode", min(start + _ENCODE_STEP, len(texts)), len(texts))
        import numpy as np

        vectors = np.concatenate(parts)
        report.encode_seconds = time.perf_counter() - started

    cutoffs = sorted({c for c in (1, 5, k) if c <= k})
    runs: list[tuple[str, SearchMode, Reranker | None]] = [(m, m, None) for m in mode_list]
    if second is not None:
        runs = [run for m in mode_list for run in ((m, m, None), (f"{m}+rerank", m, second))]
    for label, mode, stage_two in runs:
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
                rerank_top_n=rerank_top_n if stage_two is not None else None,
            )
            ranked = _passage_ranking((h.source for h in hits), k)
            short += len(ranked) < k
            for cut in cutoffs:
                recall[cut] += recall_at_k(ranked, query.relevant, cut)
            reciprocal_ranks.append(mrr_at_k(ranked, query.relevant, k))
            mrr += reciprocal_ranks[-1]
            ndcg += ndcg_at_k(ranked, query.relevant, k)
            if (n + 1) % 50 == 0 or n + 1 == len(task.queries):
                report_progress(label, n + 1, len(task.queries))
        count = len(task.queries)
        report.modes[label] = ModeMetrics(
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
    return report
