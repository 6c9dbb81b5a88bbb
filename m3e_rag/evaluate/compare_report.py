"""The comparison's results: one :class:`ModelResult` per model, the :class:`Comparison` table and its plot.

A :class:`ModelResult` is what :func:`m3e_rag.evaluate.compare_run.run_model` measured for one model
(and what the cache keeps as JSON); a :class:`Comparison` holds every model's, prints them as one
plain-text table and, through :func:`plot_comparison`, as a PNG of quality against speed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError, MissingExtraError
from m3e_rag.evaluate.compare_cache import CompareSettings
from m3e_rag.evaluate.compare_heads import check_compare_mode

__all__ = ["ModelResult", "Comparison", "plot_comparison"]


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
            + ("" if set(self.settings.modes) <= {"dense"} else
               " sparse/hybrid: the model's own learned-sparse list when it has a sparse head (BGE-M3), else BM25; "
               "-bm25: BM25 by name; +colbert: ColBERT second stage (models with BGE-M3's heads).")
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
    mode = check_compare_mode(mode) if mode is not None else comparison.settings.modes[0]
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
