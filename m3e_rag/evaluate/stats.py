"""Paired statistics: whether one system beats another on the same queries, or the gap is noise.

:func:`paired_comparison` takes per-query scores of two systems (e.g. the reciprocal ranks that
:class:`~m3e_rag.evaluate.retrieval.ModeMetrics` keeps) and reports wins, losses, ties and a seeded
bootstrap confidence interval of the mean difference, as a :class:`PairedComparison`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from m3e_rag.errors import InputError

__all__ = ["PairedComparison", "paired_comparison"]


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
