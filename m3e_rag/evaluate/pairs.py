"""Sentence-pair evaluation (s2s): how well a model's cosine similarity tracks human labels.

A pair set is a file of ``sentence1, sentence2, label`` rows, in the layouts of LCQMC, PAWS-X
(binary labels: paraphrase or not) and STS-B (graded scores, e.g. 0-5):

- JSONL: one object a line, ``{"sentence1": ..., "sentence2": ..., "label": ...}`` (``score`` is
  accepted for ``label``; ``text_a``/``text_b`` and ``text1``/``text2`` for the sentences);
- TSV: three tab-separated columns ``sentence1 <TAB> sentence2 <TAB> label`` without a header, or
  any number of columns with a header row naming them (PAWS-X's ``id sentence1 sentence2 label``).

:func:`evaluate_pairs` embeds both sides alike (:meth:`M3EEncoder.similarity`) and reports the
Spearman and Pearson correlation of the cosines with the labels and, for binary labels, the
accuracy at the best threshold. That threshold is fitted on the same pairs, so it is an upper
bound: fit it on a dev split and pass it as ``threshold=`` for the test split.

Example::

    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.evaluate.pairs import evaluate_pairs, load_pairs

    report = evaluate_pairs(load_pairs("lcqmc_test.tsv"), M3EEncoder("m3e-base"))
    print(report.format_table())
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m3e_rag.errors import InputError

if TYPE_CHECKING:
    from m3e_rag.encode.encoder import M3EEncoder

__all__ = [
    "SentencePair",
    "PairSet",
    "PairReport",
    "load_pairs",
    "evaluate_pairs",
    "spearman",
    "pearson",
    "best_threshold_accuracy",
    "accuracy_at",
]

logger = logging.getLogger(__name__)

#: ``progress(done, total)`` in pairs scored.
PairProgress = Callable[[int, int], None]

_FIRST = ("sentence1", "text_a", "text1", "s1", "query1")
_SECOND = ("sentence2", "text_b", "text2", "s2", "query2")
_LABEL = ("label", "score", "similarity", "gold_label")
#: Pairs embedded per step (a progress report after each).
_STEP = 512
#: Batch size for the short sentences of pair sets (the encoder sorts by token length).
_PAIR_BATCH = 64


@dataclass(frozen=True)
class SentencePair:
    """Two sentences and their label (1/0 for paraphrase sets, a graded score for STS)."""

    sentence1: str
    sentence2: str
    label: float


@dataclass
class PairSet:
    """Sentence pairs read from a file.

    Attributes:
        pairs: the usable pairs, in file order.
        name: the file's name, for reports.
        skipped: rows left out because a sentence was blank (counted, and logged when read).
    """

    pairs: list[SentencePair]
    name: str = ""
    skipped: int = 0

    @property
    def labels(self) -> np.ndarray:
        """The labels as a float64 array."""
        return np.asarray([p.label for p in self.pairs], dtype=np.float64)

    @property
    def binary(self) -> bool:
        """Whether every label is 0 or 1 (then threshold accuracy is reported)."""
        return bool(np.isin(self.labels, (0.0, 1.0)).all())

    def limit(self, n: int | None) -> PairSet:
        """The first ``n`` pairs (all when None)."""
        if n is None:
            return self
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"limit must be a positive integer, got {n!r}.")
        return PairSet(self.pairs[:n], self.name, self.skipped)


@dataclass
class PairReport:
    """What :func:`evaluate_pairs` measured.

    Attributes:
        name: the pair set's name.
        model: the model that embedded the sentences.
        pairs: pairs scored.
        skipped: pairs left out when reading (blank sentences).
        spearman: Spearman rank correlation of cosine with label (ties get average ranks).
        pearson: Pearson correlation of cosine with label.
        binary: whether the labels are 0/1.
        accuracy: accuracy of ``cosine >= threshold`` against the labels (binary sets only).
        threshold: the threshold used (binary sets only).
        threshold_fitted: True when the threshold was chosen on these very pairs (an upper bound).
        positives: pairs labelled 1 (binary sets only).
        mean_cosine: mean cosine over all pairs (M3E's cluster high: read ranks, not raw values).
        prompt: the prompt both sides were encoded with.
        seconds: wall time of embedding and scoring.
    """

    name: str
    model: str
    pairs: int
    skipped: int
    spearman: float
    pearson: float
    binary: bool
    accuracy: float | None = None
    threshold: float | None = None
    threshold_fitted: bool = False
    positives: int | None = None
    mean_cosine: float = 0.0
    prompt: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the attributes above."""
        return {
            "name": self.name,
            "model": self.model,
            "pairs": self.pairs,
            "skipped": self.skipped,
            "spearman": self.spearman,
            "pearson": self.pearson,
            "binary": self.binary,
            "accuracy": self.accuracy,
            "threshold": self.threshold,
            "threshold_fitted": self.threshold_fitted,
            "positives": self.positives,
            "mean_cosine": self.mean_cosine,
            "prompt": self.prompt,
            "seconds": round(self.seconds, 3),
        }

    def format_table(self, digits: int = 4) -> str:
        """A few plain-text lines: correlations, then accuracy and threshold for binary labels."""
        lines = [
            f"{self.name}: {self.pairs} pairs"
            + (f" ({self.skipped} skipped: blank sentence)" if self.skipped else "")
            + f"; model {self.model}",
            f"spearman  {self.spearman:.{digits}f}",
            f"pearson   {self.pearson:.{digits}f}",
        ]
        if self.binary and self.accuracy is not None and self.threshold is not None:
            how = "best threshold, fitted on these pairs" if self.threshold_fitted else "given threshold"
            lines.append(f"accuracy  {self.accuracy:.{digits}f} at cosine >= {self.threshold:.{digits}f} ({how})")
            lines.append(f"positives {self.positives} of {self.pairs}")
        lines.append(f"mean cosine {self.mean_cosine:.{digits}f}; {self.seconds:.1f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- reading


def _label(value: object, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InputError(f"{where}: label {value!r} is not a number; labels are 0/1 or a score.") from None
    else:
        raise InputError(f"{where}: label {value!r} is not a number; labels are 0/1 or a score.")
    if not math.isfinite(number):
        raise InputError(f"{where}: label {value!r} is not a finite number.")
    return number


def _pick(row: dict[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in row:
            return name, row[name]
    return None, None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"pairs file {str(path)!r} does not exist; pass an existing JSONL or TSV file.")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"pairs file {str(path)!r} is not UTF-8 ({exc.reason}); convert it to UTF-8.") from exc


def _jsonl_rows(lines: list[str], path: Path) -> list[tuple[str, object, object, object]]:
    rows: list[tuple[str, object, object, object]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"pairs file {str(path)!r}, line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}, is not JSON ({exc.msg}); write one JSON object per line.") from exc
        if not isinstance(row, dict):
            raise InputError(f"{where}, is not a JSON object.")
        k1, s1 = _pick(row, _FIRST)
        k2, s2 = _pick(row, _SECOND)
        k3, label = _pick(row, _LABEL)
        if k1 is None or k2 is None or k3 is None:
            raise InputError(
                f"{where}, needs keys sentence1, sentence2 and label (or score); found {sorted(row)[:6]}."
            )
        rows.append((where, s1, s2, label))
    return rows


def _tsv_rows(lines: list[str], path: Path) -> list[tuple[str, object, object, object]]:
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return []
    header = [c.strip().lower() for c in lines[first].split("\t")]
    columns: tuple[int, int, int] | None = None
    start = first
    if any(name in header for name in (*_FIRST, *_SECOND, *_LABEL)):
        found = [next((header.index(n) for n in names if n in header), None) for names in (_FIRST, _SECOND, _LABEL)]
        if any(i is None for i in found):
            raise InputError(
                f"pairs file {str(path)!r}: the header {header} must name sentence1, sentence2 and label "
                "(or text_a, text_b, score) columns."
            )
        columns = (int(found[0] or 0), int(found[1] or 0), int(found[2] or 0))
        start = first + 1
    rows: list[tuple[str, object, object, object]] = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split("\t")
        where = f"pairs file {str(path)!r}, line {n}"
        if columns is None:
            if len(cells) != 3:
                raise InputError(
                    f"{where}, has {len(cells)} tab-separated columns; without a header row a TSV pairs file needs "
                    "exactly 3 (sentence1, sentence2, label). Add a header naming the columns."
                )
            rows.append((where, cells[0], cells[1], cells[2]))
        else:
            if len(cells) <= max(columns):
                raise InputError(f"{where}, has {len(cells)} columns; the header names {len(header)}.")
            rows.append((where, cells[columns[0]], cells[columns[1]], cells[columns[2]]))
    return rows


def load_pairs(path: str | Path) -> PairSet:
    """Read a JSONL or TSV file of ``sentence1, sentence2, label`` rows (see the module doc).

    The format follows the extension (``.jsonl``/``.json`` or ``.tsv``/``.txt``/``.csv`` with tabs), or
    the first line (``{`` means JSONL). Rows with a blank sentence are skipped and counted.

    Raises:
        InputError: a missing or non-UTF-8 file, a malformed row (named by line), a non-numeric
            label, or a file without usable pairs.
    """
    file = Path(path).expanduser()
    lines = _read_lines(file)
    first = next((line.strip() for line in lines if line.strip()), "")
    suffix = file.suffix.lower()
    is_jsonl = suffix in (".jsonl", ".json", ".ndjson") or (suffix not in (".tsv", ".txt", ".csv") and first[:1] == "{")
    rows = _jsonl_rows(lines, file) if is_jsonl else _tsv_rows(lines, file)
    pairs: list[SentencePair] = []
    skipped = 0
    for where, s1, s2, raw_label in rows:
        if not isinstance(s1, str) or not isinstance(s2, str):
            raise InputError(f"{where}: sentence1 and sentence2 must be strings.")
        label = _label(raw_label, where)
        if not s1.strip() or not s2.strip():
            skipped += 1
            continue
        pairs.append(SentencePair(s1.strip(), s2.strip(), label))
    if skipped:
        logger.warning("%s: skipped %d pair(s) with a blank sentence", file.name, skipped)
    if not pairs:
        raise InputError(f"pairs file {str(file)!r} holds no usable pairs; see `m3e-rag eval --help` for the layout.")
    return PairSet(pairs, file.name, skipped)


# --------------------------------------------------------------------------------------------- metrics


def _check_xy(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(f"correlation needs two equal-length 1-d sequences, got shapes {a.shape} and {b.shape}.")
    if a.size < 2:
        raise InputError("correlation needs at least 2 pairs.")
    for name, v in (("scores", a), ("labels", b)):
        if np.ptp(v) == 0:
            raise InputError(f"all {name} are equal, so their correlation is undefined; use a set with varied labels.")
    return a, b


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v``; tied values share the average of their ranks (``scipy.stats.rankdata``'s way)."""
    order = np.argsort(v, kind="mergesort")
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = np.arange(order.size, dtype=np.intp)
    ordered = v[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = starts.cumsum()[inverse]
    bounds = np.r_[np.flatnonzero(starts), starts.size]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def _pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r as ``scipy.stats.pearsonr`` computes it, so the figures stay the same.

    Centre both, scale each by its largest deviation before taking the norm (no overflow), and clip
    to [-1, 1] (rounding can step past).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        am, bm = a - a.mean(), b - b.mean()
        amax, bmax = np.abs(am).max(), np.abs(bm).max()
        norm_a = amax * np.linalg.norm(am / amax)
        norm_b = bmax * np.linalg.norm(bm / bmax)
        return float(np.clip(np.dot(am / norm_a, bm / norm_b), -1.0, 1.0))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation: Pearson's r of the ranks, ties getting their average rank (nan if a value is)."""
    a, b = _check_xy(x, y)
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    return _pearson_r(_average_ranks(a), _average_ranks(b))


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation (exactly +-1 for two points, as ``scipy.stats.pearsonr`` gives it)."""
    a, b = _check_xy(x, y)
    r = _pearson_r(a, b)
    return float(np.round(r)) if a.size == 2 else r


def _binary_labels(labels: Sequence[float] | np.ndarray, scores: np.ndarray) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != scores.shape or scores.ndim != 1 or scores.size == 0:
        raise InputError(f"scores and labels must be equal-length 1-d sequences, got {scores.shape} and {y.shape}.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise InputError("threshold accuracy needs binary labels (0 or 1); graded labels get correlations only.")
    return y.astype(bool)


def accuracy_at(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of pairs where ``score >= threshold`` agrees with the 0/1 label."""
    s = np.asarray(scores, dtype=np.float64)
    y = _binary_labels(labels, s)
    return float(np.mean((s >= threshold) == y))


def best_threshold_accuracy(
    scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """The highest accuracy of ``score >= t`` over all thresholds ``t``, and that ``t``.

    Every cut between two distinct scores is tried (O(n log n)); the threshold returned lies midway
    between the two scores around the best cut (above the top score when predicting all 0 wins).
    Among equally good cuts the highest threshold is kept.

    Returns:
        ``(accuracy, threshold)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = _binary_labels(labels, s)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    n = s.size
    negatives = int(n - y.sum())
    # Predict positive for the top j pairs: correct = positives among them + negatives below them.
    top_pos = np.concatenate(([0], np.cumsum(y_sorted)))
    j = np.arange(n + 1)
    correct = top_pos + (negatives - (j - top_pos))
    # A cut is only possible where the score changes (or at either end).
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s_sorted[:-1] != s_sorted[1:]
    best = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if best == 0:
        threshold = float(np.nextafter(s_sorted[0], np.inf))
    elif best == n:
        threshold = float(s_sorted[-1])
    else:
        threshold = float((s_sorted[best - 1] + s_sorted[best]) / 2)
    return float(correct[best] / n), threshold


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_pairs(
    pairs: PairSet,
    encoder: M3EEncoder,
    *,
    prompt: str | None = None,
    threshold: float | None = None,
    progress: PairProgress | None = None,
) -> PairReport:
    """Score a pair set with ``encoder``: correlations of cosine with the labels, threshold accuracy.

    Args:
        pairs: the pairs (:func:`load_pairs`).
        encoder: the model; both sentences of a pair are encoded alike (:meth:`M3EEncoder.similarity`).
        prompt: the prompt for both sides (default: the model's document-side prompt, '' for M3E/BGE).
        threshold: for binary labels, the cosine threshold to apply; None fits the best one on these
            pairs (an optimistic figure: fit on dev, apply on test).
        progress: called as ``progress(done, total)`` in pairs.

    Raises:
        InputError: no pairs, constant labels, or a threshold given for graded labels.
    """
    if not pairs.pairs:
        raise InputError("the pair set is empty; nothing to evaluate.")
    binary = pairs.binary
    if threshold is not None and not binary:
        raise InputError("threshold= applies to binary (0/1) labels only; this set has graded labels.")
    started = time.perf_counter()
    enc = copy.copy(encoder)  # same loaded model (shared per process), own batch size
    enc.batch_size = max(enc.batch_size, _PAIR_BATCH)
    total = len(pairs.pairs)
    parts = []
    for start in range(0, total, _STEP):
        chunk = pairs.pairs[start : start + _STEP]
        parts.append(enc.similarity([p.sentence1 for p in chunk], [p.sentence2 for p in chunk], prompt=prompt))
        if progress is not None:
            progress(min(start + _STEP, total), total)
    scores = np.concatenate(parts).astype(np.float64)
    labels = pairs.labels
    report = PairReport(
        name=pairs.name,
        model=encoder.model_name,
        pairs=total,
        skipped=pairs.skipped,
        spearman=spearman(scores, labels),
        pearson=pearson(scores, labels),
        binary=binary,
        mean_cosine=float(scores.mean()),
        prompt=encoder.document_prompt if prompt is None else prompt,
    )
    if binary:
        if threshold is None:
            report.accuracy, report.threshold = best_threshold_accuracy(scores, labels)
            report.threshold_fitted = True
        else:
            report.accuracy, report.threshold = accuracy_at(scores, labels, threshold), float(threshold)
        report.positives = int(labels.sum())
    report.seconds = time.perf_counter() - started
    return report
