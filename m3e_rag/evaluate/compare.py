"""Choose a model by your own data: the same evaluation for each model, one table.

:func:`compare_models` runs, for every model named, what ``m3e-rag eval`` runs (index the corpus
through :class:`~m3e_rag.pipeline.RAGPipeline`, chunking included; score every query per search
mode with :func:`m3e_rag.evaluate.retrieval.evaluate`), optionally the sentence-pair evaluation of
:mod:`m3e_rag.evaluate.pairs`, and measures on this machine: indexing speed, single-query latency, peak
memory and the bytes each stored vector costs. Each model gets its own index under a cache folder.

Resumable: a model's index is kept under ``<cache_dir>/<model>-<index key>/index`` (key: model,
corpus, chunking and backend), and its finished result as JSON beside it (key: the index key plus
queries, pairs and settings). Run the same command again after an interruption and finished
models are read back, a finished index is reused and a half-built one is completed (the pipeline's
ingest is incremental). ``fresh=True`` recomputes results (indexes are still reused).

By default every model runs in its own worker process, so its peak RSS is its own and one model's
memory is returned before the next loads; ``isolate=False`` runs them in this process (then RSS is
the process's peak so far, labelled so).

This module runs the models in turn (each in a worker process, or here); one model's row is
:func:`m3e_rag.evaluate.compare_run.run_model`, the cache keys and slots are
:mod:`m3e_rag.evaluate.compare_cache`, the table and plot :mod:`m3e_rag.evaluate.compare_report`.

Example::

    from m3e_rag.evaluate.compare import compare_models

    result = compare_models(["m3e-small", "m3e-base", "bge-base-zh-v1.5"], "cmrc2018_dev.json",
                            cache_dir=".m3e_compare")
    print(result.format_table())
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError, M3ERagError
from m3e_rag.evaluate.compare_cache import (
    CompareSettings,
    _cache_name,
    _corpus_digest,
    _label,
    _pairs_digest,
    _queries_digest,
    _resolved_name,
    _Slot,
    _slot,
)
from m3e_rag.evaluate.compare_report import Comparison, ModelResult
from m3e_rag.evaluate.compare_run import run_model
from m3e_rag.evaluate.jsonfiles import read_json_or_none, write_json
from m3e_rag.evaluate.pairs import PairSet, load_pairs
from m3e_rag.evaluate.tasks import RetrievalTask, load_task

__all__ = ["compare_models", "DEFAULT_CACHE_DIR"]

logger = logging.getLogger(__name__)

#: Where indexes and results are kept unless told otherwise.
DEFAULT_CACHE_DIR = ".m3e_compare"


class _StageBars:
    """One tqdm bar at a time on a terminal (``leave=False``), log lines otherwise."""

    def __init__(self, label: str, show: bool) -> None:
        self.label, self.show = label, show
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        logger.info("%s %s: %d/%d", self.label, stage, done, total)
        if not self.show:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{self.label} {stage}", leave=False, file=sys.stderr)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run_in_worker(payload: dict[str, Any], slot: _Slot) -> None:
    """Run :func:`run_model` in a fresh interpreter; it writes the result (or error) file."""
    code = "import sys; from m3e_rag.evaluate.compare import _worker_main; sys.exit(_worker_main())"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(payload), text=True, check=False)
    if proc.returncode != 0 and not slot.error.exists() and not slot.result.exists():
        if proc.returncode in (-2, 130):
            raise KeyboardInterrupt
        slot.error.write_text(f"worker process exited with code {proc.returncode}", encoding="utf-8")


def _worker_main() -> int:
    """Entry point of a worker process: payload JSON on stdin, result JSON written to its slot."""
    payload = json.loads(sys.stdin.read())
    logging.basicConfig(level=logging.INFO if payload.get("verbose") else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not payload.get("verbose"):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    slot = _Slot(Path(payload["folder"]), Path(payload["result"]), Path(payload["error"]))
    settings = CompareSettings(**{**payload["settings"], "modes": tuple(payload["settings"]["modes"])})
    bars = _StageBars(payload["label"], bool(payload.get("show_progress")) and sys.stderr.isatty())
    try:
        task = load_task(payload["queries"], payload.get("corpus")).limit(settings.limit)
        pairs = load_pairs(payload["pairs"]).limit(settings.pairs_limit) if payload.get("pairs") else None
        result = run_model(payload["model"], task, pairs, settings, slot.folder, progress=bars)
    except M3ERagError as exc:
        slot.error.write_text(str(exc), encoding="utf-8")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        bars.close()
    write_json(slot.result, result.to_dict())
    return 0


def compare_models(
    models: Sequence[str],
    queries: str | Path,
    corpus: str | Path | None = None,
    *,
    pairs: str | Path | None = None,
    settings: CompareSettings | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    fresh: bool = False,
    isolate: bool = True,
    verbose: bool = False,
    show_progress: bool | None = None,
) -> Comparison:
    """Measure each model on the same task, resuming whatever an earlier run finished.

    Args:
        models: aliases (``m3e-base``, ``bge-base-zh-v1.5``), hub ids or local folders; at least one.
        queries: a SQuAD file or JSONL queries (as for ``m3e-rag eval``).
        corpus: another SQuAD file or a JSONL corpus (see :func:`m3e_rag.evaluate.tasks.load_task`).
        pairs: a sentence-pair file (:func:`m3e_rag.evaluate.pairs.load_pairs`) scored for each model too.
        settings: modes, cutoff, limits, chunking, backend (:class:`CompareSettings`).
        cache_dir: where indexes and results are kept.
        fresh: measure again even when a finished result is cached (indexes are still reused).
        isolate: run each model in its own worker process (honest per-model RSS).
        verbose: log progress details (also in workers).
        show_progress: progress bars on stderr; None shows them when stderr is a terminal.

    Returns:
        The :class:`Comparison`; a model that failed has ``error`` set and the others are measured.

    Raises:
        InputError: no models, a model named twice, or unreadable data (before any model loads).
    """
    names = [m.strip() for m in models if isinstance(m, str) and m.strip()]
    if not names or len(names) != len(list(models)):
        raise InputError("models must be a non-empty list of model names (aliases, hub ids or folders).")
    settings = settings or CompareSettings()
    resolved = [_resolved_name(m) for m in names]
    if len(set(resolved)) != len(resolved):
        raise InputError(f"a model is named twice in {names}; name each model once.")
    task = load_task(queries, corpus).limit(settings.limit)
    pair_set = load_pairs(pairs).limit(settings.pairs_limit) if pairs is not None else None
    cache = Path(cache_dir).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    corpus_key, queries_key, pairs_key = _corpus_digest(task), _queries_digest(task), _pairs_digest(pair_set)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    comparison = Comparison([], task.name, settings, cache, pair_set.name if pair_set else None,
                            len(task.queries), len(task.corpus))
    for n, (model, name) in enumerate(zip(names, resolved, strict=True), 1):
        label = _label(model, name)
        slot = _slot(cache, name, _cache_name(model, name), corpus_key, queries_key, pairs_key, settings)
        cached = None if fresh else read_json_or_none(slot.result)
        if isinstance(cached, dict):
            result = replace(ModelResult.from_dict(cached), cached=True, label=label)
            _say(show, verbose, f"[{n}/{len(names)}] {label}: read back from {slot.result}")
            comparison.results.append(result)
            continue
        _say(show, verbose, f"[{n}/{len(names)}] {label}: measuring (index in {slot.index})")
        slot.error.unlink(missing_ok=True)
        if isolate:
            files = {"queries": _absolute(queries), "pairs": _absolute(pairs), "corpus": _absolute(corpus)}
            result = _measure_in_worker(model, label, name, files, settings, slot, verbose=verbose, show=show)
        else:
            result = _measure_here(model, label, name, task, pair_set, settings, slot, show=show)
        comparison.results.append(result)
    return comparison


def _measure_in_worker(model: str, label: str, resolved: str, files: dict[str, str | None],
                       settings: CompareSettings, slot: _Slot, *, verbose: bool, show: bool) -> ModelResult:
    """One model measured in a worker process (``files``: its absolute queries, pairs and corpus paths)."""
    payload = {"model": model, "label": label, "queries": files["queries"], "pairs": files["pairs"],
               "corpus": files["corpus"], "settings": settings.to_dict(),
               "folder": str(slot.folder), "result": str(slot.result), "error": str(slot.error),
               "verbose": verbose, "show_progress": show}
    slot.folder.mkdir(parents=True, exist_ok=True)
    _run_in_worker(payload, slot)
    data = read_json_or_none(slot.result)
    if isinstance(data, dict):
        return replace(ModelResult.from_dict(data), label=label)
    error = slot.error.read_text(encoding="utf-8") if slot.error.exists() else "no result written"
    return ModelResult(model, label=label, resolved=resolved, error=error.strip())


def _measure_here(model: str, label: str, resolved: str, task: RetrievalTask, pair_set: PairSet | None,
                  settings: CompareSettings, slot: _Slot, *, show: bool) -> ModelResult:
    """One model measured in this process (RSS is then the process's peak); its result is cached on success."""
    bars = _StageBars(label, show)
    try:
        result = run_model(model, task, pair_set, settings, slot.folder, progress=bars, rss_scope="process")
    except M3ERagError as exc:
        return ModelResult(model, label=label, resolved=resolved, error=str(exc))
    finally:
        bars.close()
    write_json(slot.result, result.to_dict())
    return result


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _say(show: bool, verbose: bool, message: str) -> None:
    if show or verbose:
        sys.stderr.write(message + "\n")
    logger.info(message)
