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

Example::

    from m3e_rag.evaluate.compare import compare_models

    result = compare_models(["m3e-small", "m3e-base", "bge-base-zh-v1.5"], "cmrc2018_dev.json",
                            cache_dir=".m3e_compare")
    print(result.format_table())
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3e_rag.encode.registry import spec_for
from m3e_rag.errors import InputError, M3ERagError, MissingExtraError
from m3e_rag.evaluate.pairs import PairSet, load_pairs
from m3e_rag.evaluate.retrieval import RetrievalTask, load_task
from m3e_rag.retrieve.modes import check_k, check_mode

if TYPE_CHECKING:
    from m3e_rag.pipeline import RAGPipeline

__all__ = [
    "CompareSettings",
    "ModelResult",
    "Comparison",
    "compare_models",
    "run_model",
    "plot_comparison",
    "DEFAULT_CACHE_DIR",
]

logger = logging.getLogger(__name__)

#: Where indexes and results are kept unless told otherwise.
DEFAULT_CACHE_DIR = ".m3e_compare"
#: Bump when the meaning of a stored result changes, so old results are not read back as new.
_RESULT_VERSION = 1
#: ``progress(stage, done, total)``: stages ``index``, ``encode``, each mode, ``latency``, ``pairs``.
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CompareSettings:
    """What every model is measured with (part of the cache key).

    Attributes:
        modes: search modes scored, in order.
        k: cutoff of MRR and nDCG (recall also at 1 and 5).
        limit: score only the first ``limit`` queries (the whole corpus is still indexed).
        chunk_tokens: chunk budget; None uses the pipeline's default (256, capped by the window).
        overlap_tokens: overlap between chunks; None uses the pipeline's default.
        backend: ``torch``, ``onnx`` or ``onnx-int8`` for every model.
        device: torch device; None picks CUDA when available.
        latency_queries: single queries timed one at a time (dense mode, embedding included).
        pairs_limit: score only the first ``pairs_limit`` sentence pairs.
    """

    modes: tuple[str, ...] = ("dense", "sparse", "hybrid")
    k: int = 10
    limit: int | None = None
    chunk_tokens: int | None = None
    overlap_tokens: int | None = None
    backend: str = "torch"
    device: str | None = None
    latency_queries: int = 50
    pairs_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.modes:
            raise InputError("modes is empty; give e.g. dense,sparse,hybrid.")
        object.__setattr__(self, "modes", tuple(check_mode(m) for m in dict.fromkeys(self.modes)))
        check_k(self.k, "k")
        for name in ("limit", "chunk_tokens", "overlap_tokens", "pairs_limit"):
            value = getattr(self, name)
            if value is not None and (name != "overlap_tokens" or value != 0):
                check_k(value, name)
        check_k(self.latency_queries, "latency_queries")
        if self.backend not in ("torch", "onnx", "onnx-int8"):
            raise InputError(f"backend must be one of torch, onnx, onnx-int8; got {self.backend!r}.")

    def pipeline_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`RAGPipeline` (only those set)."""
        out: dict[str, Any] = {"backend": self.backend, "device": self.device}
        if self.chunk_tokens is not None:
            out["chunk_tokens"] = self.chunk_tokens
        if self.overlap_tokens is not None:
            out["overlap_tokens"] = self.overlap_tokens
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = asdict(self)
        data["modes"] = list(self.modes)
        return data


@dataclass
class ModelResult:
    """One model's row of the comparison.

    Attributes:
        model: the name as given (alias, hub id or folder).
        label: a short name for tables and plots (alias, or the folder's name).
        resolved: the name the encoder loaded (hub id or folder).
        dim: embedding dimension.
        passages: corpus passages; ``chunks``: what they became in the index.
        queries: queries scored per mode.
        modes: ``{mode: {metric: value}}`` as ``m3e-rag eval --json`` prints it.
        pairs: the sentence-pair report (``PairReport.to_dict()``), when pairs were given.
        index_seconds: wall time of building the index (None when it was built by an earlier run
            that left no timing).
        passages_per_s: corpus passages indexed per second (chunk, embed, store) on this machine;
            for an index completed after an interruption, scaled by the share embedded in that run.
        query_p50_ms: median latency of one dense search, query embedding included.
        rss_mib: peak resident memory; ``rss_scope`` says whose (``worker`` or ``process``).
        vector_bytes: bytes of one stored vector (float32); ``index_bytes_per_chunk``: the whole
            index folder on disk divided by the chunks (vectors, HNSW graph, texts, BM25).
        licence / licence_url: the weights' licence as the registry knows it, else the folder's
            model card front matter, else ``unknown``.
        reused_index: the index was found complete and reused.
        load_average: the machine's 1/5/15-minute load averages when the model finished (speed figures
            taken with other work on the cores are slower than the model is).
        cached: this whole result was read back from the cache (not measured in this run).
        seconds: wall time of this model's run.
        error: why the model could not be measured (then the figures are empty).
    """

    model: str
    label: str = ""
    resolved: str = ""
    dim: int = 0
    passages: int = 0
    chunks: int = 0
    queries: int = 0
    modes: dict[str, dict[str, float]] = field(default_factory=dict)
    pairs: dict[str, Any] | None = None
    index_seconds: float | None = None
    passages_per_s: float | None = None
    query_p50_ms: float | None = None
    rss_mib: float | None = None
    rss_scope: str = "worker"
    vector_bytes: int = 0
    index_bytes_per_chunk: float | None = None
    licence: str = "unknown"
    licence_url: str = ""
    reused_index: bool = False
    load_average: list[float] | None = None
    cached: bool = False
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the attributes above."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResult:
        """Rebuild a result written by :meth:`to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def metric(self, mode: str, name: str) -> float | None:
        """One metric (``"mrr@10"``, ``"recall@5"``, ``"ndcg@10"``) of one mode, None if absent."""
        return self.modes.get(mode, {}).get(name)


@dataclass
class Comparison:
    """Every model's result on one task, in the order given."""

    results: list[ModelResult]
    task: str
    settings: CompareSettings
    cache_dir: Path
    pairs_name: str | None = None
    queries: int = 0
    passages: int = 0

    @property
    def errors(self) -> dict[str, str]:
        """``{model: error}`` for the models that could not be measured."""
        return {r.model: r.error for r in self.results if r.error}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: task, settings, cache folder and one dict per model."""
        return {
            "task": self.task,
            "pairs": self.pairs_name,
            "queries": self.queries,
            "passages": self.passages,
            "settings": self.settings.to_dict(),
            "cache_dir": str(self.cache_dir),
            "models": [r.to_dict() for r in self.results],
        }

    def format_table(self) -> str:
        """One plain-text table, one row per model; measured columns, then a legend."""
        k = self.settings.k
        header = ["model", "dim"]
        for mode in self.settings.modes:
            header += [f"{mode} MRR@{k}", f"{mode} R@5" if k >= 5 else f"{mode} R@{k}", f"{mode} nDCG@{k}"]
        if self.pairs_name is not None:
            header.append("pair ρ")
        header += ["passages/s", "query p50 ms", "RSS MiB", "B/vector", "licence"]
        rows = [header]
        recall_name = "recall@5" if k >= 5 else f"recall@{k}"
        for r in self.results:
            if r.error:
                rows.append([r.label, "-", *(["-"] * (len(header) - 3)), f"error: {r.error[:60]}"])
                continue
            row = [r.label + ("*" if r.cached else ""), str(r.dim)]
            for mode in self.settings.modes:
                row += [_fmt(r.metric(mode, f"mrr@{k}")), _fmt(r.metric(mode, recall_name)),
                        _fmt(r.metric(mode, f"ndcg@{k}"))]
            if self.pairs_name is not None:
                row.append(_fmt(r.pairs["spearman"] if r.pairs else None))
            row += [
                _fmt(r.passages_per_s, 1),
                _fmt(r.query_p50_ms, 1),
                _fmt(r.rss_mib, 0) + ("" if r.rss_scope == "worker" else " (proc)"),
                str(r.vector_bytes),
                _short_licence(r.licence),
            ]
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(
            f"{self.task}: {self.queries} queries, {self.passages} passages"
            + (f"; pairs: {self.pairs_name} (Spearman of cosine with labels)" if self.pairs_name else "")
        )
        lines.append(
            "passages/s: corpus indexed per second (chunk+embed+store); query p50: one dense search incl. "
            "embedding; RSS: peak per model worker; B/vector: float32 vector bytes. Speed and memory are "
            "this machine's."
        )
        loads = [f"{r.label} {r.load_average[0]:.1f}" for r in self.results if r.load_average]
        if loads:
            lines.append(f"load average (1 min, {os.cpu_count()} CPUs) when each model finished: " + ", ".join(loads))
        if any(r.cached for r in self.results):
            lines.append(f"* read back from {self.cache_dir} (measured by an earlier run; --fresh to measure again)")
        return "\n".join(lines)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _short_licence(licence: str) -> str:
    return licence if len(licence) <= 24 else licence[:21] + "..."


# -------------------------------------------------------------------------------------------- keys


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _corpus_digest(task: RetrievalTask) -> str:
    return _digest([[d.source, d.text] for d in task.corpus])


def _queries_digest(task: RetrievalTask) -> str:
    return _digest([[q.qid, q.text, sorted(q.relevant)] for q in task.queries])


def _pairs_digest(pairs: PairSet | None) -> str | None:
    if pairs is None:
        return None
    return _digest([[p.sentence1, p.sentence2, p.label] for p in pairs.pairs])


def _resolved_name(model: str) -> str:
    from m3e_rag.encode.loading import resolve_model_name

    name = resolve_model_name(model)
    local = Path(name).expanduser()
    return str(local.resolve()) if local.exists() else name


_GENERIC_FOLDERS = {"model", "models", "weights", "checkpoint", "snapshot", "main"}


def _cache_name(model: str, resolved: str) -> str:
    """The name part of a model's cache folder (kept stable: changing it orphans cached indexes)."""
    spec = spec_for(model) or spec_for(resolved)
    if spec is not None:
        return spec.alias
    path = Path(resolved)
    return path.name if path.exists() else model


def _label(model: str, resolved: str) -> str:
    """A short name for tables and plots: the alias, else the folder's name (with its parent's if generic)."""
    name = _cache_name(model, resolved)
    path = Path(resolved)
    if path.exists() and (name.lower() in _GENERIC_FOLDERS or re.fullmatch(r"[0-9a-f]{12,}", name)):
        return f"{path.parent.name}/{name}"
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-40:] or "model"


@dataclass(frozen=True)
class _Slot:
    """Where one model's index and result live."""

    folder: Path
    result: Path
    error: Path

    @property
    def index(self) -> Path:
        return self.folder / "index"

    @property
    def index_info(self) -> Path:
        return self.folder / "index.json"


def _slot(cache_dir: Path, resolved: str, cache_name: str, corpus: str, queries: str, pairs: str | None,
          settings: CompareSettings) -> _Slot:
    index_key = _digest({"model": resolved, "corpus": corpus, "chunk_tokens": settings.chunk_tokens,
                         "overlap_tokens": settings.overlap_tokens, "backend": settings.backend})[:12]
    result_key = _digest({"index": index_key, "queries": queries, "pairs": pairs, "version": _RESULT_VERSION,
                          **{k: v for k, v in settings.to_dict().items() if k != "device"}})[:12]
    folder = cache_dir / f"{_slug(cache_name)}-{index_key}"
    return _Slot(folder, folder / f"result-{result_key}.json", folder / f"error-{result_key}.txt")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------------------- measurements


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
    info = _read_json(slot.index_info)
    count = rag.store.count()
    if isinstance(info, dict) and info.get("chunks") == count and count > 0:
        return info, True
    started = time.perf_counter()
    report = rag.ingest(documents=task.corpus, progress=lambda done, total: progress("index", done, total))
    seconds = time.perf_counter() - started
    chunks = rag.store.count()
    info = {"passages": len(task.corpus), "chunks": chunks, "texts_embedded": report.texts_embedded,
            "seconds": seconds, "chunks_before": count}
    _write_json(slot.index_info, info)
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
    report = evaluate(task, rag, settings.modes, k=settings.k, progress=report_progress)
    latency = _latency_ms(rag, [q.text for q in task.queries[: settings.latency_queries]], settings.k,
                          report_progress)
    pair_report = None
    if pairs is not None:
        pair_report = evaluate_pairs(pairs, rag.encoder,
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
        modes=report.to_dict(),
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


# -------------------------------------------------------------------------------------------- running


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
    _write_json(slot.result, result.to_dict())
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
        corpus: another SQuAD file or a JSONL corpus (see :func:`m3e_rag.evaluate.retrieval.load_task`).
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
        cached = None if fresh else _read_json(slot.result)
        if isinstance(cached, dict):
            result = replace(ModelResult.from_dict(cached), cached=True, label=label)
            _say(show, verbose, f"[{n}/{len(names)}] {label}: read back from {slot.result}")
            comparison.results.append(result)
            continue
        _say(show, verbose, f"[{n}/{len(names)}] {label}: measuring (index in {slot.index})")
        slot.error.unlink(missing_ok=True)
        if isolate:
            payload = {"model": model, "label": label, "queries": _absolute(queries), "pairs": _absolute(pairs),
                       "corpus": _absolute(corpus), "settings": settings.to_dict(),
                       "folder": str(slot.folder), "result": str(slot.result), "error": str(slot.error),
                       "verbose": verbose, "show_progress": show}
            slot.folder.mkdir(parents=True, exist_ok=True)
            _run_in_worker(payload, slot)
            data = _read_json(slot.result)
            if isinstance(data, dict):
                comparison.results.append(replace(ModelResult.from_dict(data), label=label))
            else:
                error = slot.error.read_text(encoding="utf-8") if slot.error.exists() else "no result written"
                comparison.results.append(ModelResult(model, label=label, resolved=name, error=error.strip()))
            continue
        bars = _StageBars(label, show)
        try:
            result = run_model(model, task, pair_set, settings, slot.folder, progress=bars, rss_scope="process")
        except M3ERagError as exc:
            comparison.results.append(ModelResult(model, label=label, resolved=name, error=str(exc)))
            continue
        finally:
            bars.close()
        _write_json(slot.result, result.to_dict())
        comparison.results.append(result)
    return comparison


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _say(show: bool, verbose: bool, message: str) -> None:
    if show or verbose:
        sys.stderr.write(message + "\n")
    logger.info(message)


# ------------------------------------------------------------------------------------------------ plot


def plot_comparison(
    comparison: Comparison, path: str | Path, *, mode: str | None = None, metric: str | None = None
) -> Path:
    """Write a PNG of quality against speed, one labelled point per measured model.

    x: passages indexed per second (log scale); y: ``metric`` of ``mode`` (default nDCG@k of the
    first mode). Needs the ``plot`` extra (matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "plot", "The comparison plot") from exc
    mode = check_mode(mode) if mode is not None else comparison.settings.modes[0]
    if mode not in comparison.settings.modes:
        raise InputError(f"mode {mode!r} was not measured; measured: {', '.join(comparison.settings.modes)}.")
    metric = metric or f"ndcg@{comparison.settings.k}"
    points: list[tuple[str, float, float]] = []
    for r in comparison.results:
        x, y = r.passages_per_s, r.metric(mode, metric)
        if not r.error and x is not None and y is not None:
            points.append((r.label, x, y))
    if not points:
        raise InputError("no model has both a speed and a quality figure to plot; run the comparison first.")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for label, x, y in points:
            ax.scatter([x], [y], s=40)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel("passages indexed per second on this machine (log scale)")
        ax.set_ylabel(f"{mode} {metric}")
        ax.set_title(f"{comparison.task}: quality against speed", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        out = Path(path).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out
