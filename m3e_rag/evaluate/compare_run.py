"""One model's row of a comparison: :func:`run_model` and the measurements it takes on this machine.

Index the task's corpus into the model's cache slot (or find it done), run the retrieval evaluation
and the sentence-pair evaluation, and measure what only this machine can say: indexing speed,
single-query latency, peak RSS, load average and index bytes on disk, plus the weights' licence.
:func:`m3e_rag.evaluate.compare.compare_models` calls it once per model, in a worker process or not.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from m3e_rag.encode.registry import spec_for
from m3e_rag.evaluate.compare_cache import CompareSettings, _label, _resolved_name, _Slot
from m3e_rag.evaluate.compare_report import ModelResult
from m3e_rag.evaluate.jsonfiles import read_json_or_none, write_json
from m3e_rag.evaluate.pairs import PairSet
from m3e_rag.evaluate.tasks import RetrievalTask

if TYPE_CHECKING:
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.pipeline import RAGPipeline

__all__ = ["run_model"]

#: ``progress(stage, done, total)``: stages ``index``, ``encode``, each mode, ``latency``, ``pairs``.
StageProgress = Callable[[str, int, int], None]


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not available on this platform
        return None


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _card_licence(resolved: str) -> str | None:
    """``license:`` from the YAML front matter of a local model folder's README.md, if any."""
    readme = Path(resolved) / "README.md"
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    match = re.search(r"^license:\s*['\"]?([^'\"\n]+)", front, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def _licence(model: str, resolved: str) -> tuple[str, str]:
    spec = spec_for(model) or spec_for(resolved)
    if spec is not None:
        return spec.licence, spec.licence_link
    card = _card_licence(resolved)
    if card:
        return f"{card} (model card)", str(Path(resolved) / "README.md")
    return "unknown", ""


def _latency_ms(rag: RAGPipeline, texts: Sequence[str], k: int, progress: StageProgress) -> float | None:
    """Median wall time of one dense search per query (embedding included), after one warm-up."""
    if not texts:
        return None
    rag.search(texts[0], k=k, mode="dense")
    times = []
    for n, text in enumerate(texts, 1):
        started = time.perf_counter()
        rag.search(text, k=k, mode="dense")
        times.append(time.perf_counter() - started)
        if n % 10 == 0 or n == len(texts):
            progress("latency", n, len(texts))
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return median * 1000


def _build_index(
    rag: RAGPipeline, task: RetrievalTask, slot: _Slot, progress: StageProgress
) -> tuple[dict[str, Any], bool]:
    """Index the corpus (or find it done); returns the index record and whether it was reused."""
    info = read_json_or_none(slot.index_info)
    count = rag.store.count()
    if isinstance(info, dict) and info.get("chunks") == count and count > 0:
        return info, True
    started = time.perf_counter()
    report = rag.ingest(documents=task.corpus, progress=lambda done, total: progress("index", done, total))
    seconds = time.perf_counter() - started
    chunks = rag.store.count()
    info = {"passages": len(task.corpus), "chunks": chunks, "texts_embedded": report.texts_embedded,
            "seconds": seconds, "chunks_before": count}
    write_json(slot.index_info, info)
    return info, False


def run_model(
    model: str,
    task: RetrievalTask,
    pairs: PairSet | None,
    settings: CompareSettings,
    folder: str | Path,
    *,
    progress: StageProgress | None = None,
    rss_scope: str = "worker",
) -> ModelResult:
    """Measure one model on ``task`` (and ``pairs``), indexing into ``folder/index``.

    This is one row of :func:`compare_models`; it runs in whatever process calls it.
    """
    from m3e_rag.evaluate.pairs import evaluate_pairs
    from m3e_rag.evaluate.retrieval import evaluate
    from m3e_rag.pipeline import RAGPipeline

    report_progress: StageProgress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    resolved = _resolved_name(model)
    slot = _Slot(Path(folder), Path(folder) / "result.json", Path(folder) / "error.txt")
    slot.index.mkdir(parents=True, exist_ok=True)
    # The resolved name (hub id, or absolute folder) is what the index records, so a relative and an
    # absolute path to one folder open the same cached index.
    rag = RAGPipeline(slot.index, model_name=resolved, **settings.pipeline_options())
    info, reused = _build_index(rag, task, slot, report_progress)
    from m3e_rag.evaluate.compare_heads import VARIANTS, score_variants

    report = evaluate(task, rag, [m for m in settings.modes if m not in VARIANTS] or ["dense"], k=settings.k,
                      progress=report_progress)
    modes = {**report.to_dict(), **score_variants(task, rag, settings.modes, settings.k, report_progress)}
    latency = _latency_ms(rag, [q.text for q in task.queries[: settings.latency_queries]], settings.k,
                          report_progress)
    pair_report = None
    if pairs is not None:
        pair_report = evaluate_pairs(pairs, cast("M3EEncoder", rag.encoder),  # built from a model name above
                                     progress=lambda done, total: report_progress("pairs", done, total))
    embedded, chunks, seconds = info.get("texts_embedded") or 0, info.get("chunks") or 0, info.get("seconds")
    per_s = None
    if embedded and chunks and seconds:
        per_s = len(task.corpus) * min(1.0, embedded / chunks) / float(seconds)
    licence, licence_url = _licence(model, resolved)
    dim = rag.encoder.dim
    return ModelResult(
        model=model,
        label=_label(model, resolved),
        resolved=rag.encoder.model_name,
        dim=dim,
        passages=len(task.corpus),
        chunks=report.chunks,
        queries=report.queries,
        modes={mode: metrics for mode, metrics in modes.items() if metrics is not None},
        pairs=pair_report.to_dict() if pair_report else None,
        index_seconds=float(seconds) if seconds is not None and embedded else None,
        passages_per_s=per_s,
        query_p50_ms=latency,
        rss_mib=_peak_rss_mib(),
        rss_scope=rss_scope,
        vector_bytes=4 * dim,
        index_bytes_per_chunk=_folder_bytes(slot.index) / report.chunks if report.chunks else None,
        licence=licence,
        licence_url=licence_url,
        reused_index=reused,
        load_average=_load_average(),
        seconds=time.perf_counter() - started,
    )
