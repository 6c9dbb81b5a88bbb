"""Hybrid fusion (z-score and RRF) properties and the paired per-query comparison of two systems."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3e_rag.errors import InputError
from m3e_rag.evaluate.retrieval import EvalReport, ModeMetrics
from m3e_rag.evaluate.stats import paired_comparison
from m3e_rag.retrieve.fusion import HybridWeights, fuse_hybrid, zscore_fuse
from m3e_rag.types import RetrievedChunk


def chunks(scores: dict[str, float]) -> list[RetrievedChunk]:
    return [RetrievedChunk(cid, f"text {cid}", score) for cid, score in scores.items()]


DENSE = chunks({"a": 0.83, "b": 0.82, "c": 0.815, "d": 0.81, "e": 0.80, "f": 0.79})


def order(dense: list[RetrievedChunk], sparse: list[RetrievedChunk], weights: HybridWeights | None = None,
          coverage: float = 1.0) -> str:
    return "".join(r.id for r in fuse_hybrid(dense, sparse, weights or HybridWeights(), coverage))


# ------------------------------------------------------------------------------------------ fusion


def test_no_bm25_evidence_gives_exactly_the_dense_ranking() -> None:
    assert order(DENSE, []) == "abcdef"  # no query term in the index: BM25 returns nothing
    # A BM25 list giving every candidate the same score (a common word matched everywhere) carries
    # no evidence either.
    flat = chunks({cid: 2.0 for cid in "fedcba"})
    assert order(DENSE, flat) == "abcdef"
    # Coverage scaling, when asked for, mutes BM25 entirely at coverage 0 in both methods.
    lifted = chunks({"f": 9.0, "e": 1.0})
    assert order(DENSE, lifted, HybridWeights(coverage_power=2.0), coverage=0.0) == "abcdef"
    assert order(DENSE, lifted, HybridWeights(1.0, 1.0, "rrf", coverage_power=2.0), coverage=0.0) == "abcdef"
    scores = {r.id: r for r in fuse_hybrid(DENSE, lifted, HybridWeights())}
    assert scores["f"].metadata == {"dense_score": 0.79, "sparse_score": 9.0}


def test_strong_bm25_evidence_lifts_and_weak_evidence_does_not() -> None:
    # Twenty candidates a side, as a search with fetch_k=20 sees them; "j" is dense's 10th.
    ids = "abcdefghijklmnopqrst"
    dense = chunks({cid: 0.85 - 0.005 * i for i, cid in enumerate(ids)})

    def bm25(top: float) -> list[RetrievedChunk]:
        rest = {cid: 2.2 - 0.06 * i for i, cid in enumerate(c for c in ids if c != "j")}
        return chunks({"j": top, **rest})

    # A BM25 top hit standing far above the rest (a rare term matched) lifts "j" from 10 to 1 ...
    assert order(dense, bm25(15.0))[0] == "j"
    # ... one barely above the rest (a common term) moves it a few places at most.
    assert order(dense, bm25(2.3)).index("j") >= 5
    # A lone BM25 hit (a term found in one chunk only) stands above "no match" (BM25's floor, 0).
    assert order(dense, chunks({"j": 3.0})).index("j") < 5
    # A passage dense did not find at all ranks at dense's floor: it enters the top 10 on strong
    # BM25 evidence only; a mid-pack BM25 score (1.09 among 1.00-1.18) leaves it at the bottom.
    assert order(dense, chunks({"z": 15.0, **{c: 1.0 + 0.01 * i for i, c in enumerate(ids[:19])}})).index("z") < 10
    assert order(dense, chunks({"z": 1.09, **{c: 1.0 + 0.01 * i for i, c in enumerate(ids[:19])}})).index("z") >= 15


def test_rrf_method_keeps_the_previous_coverage_rule() -> None:
    dense = [RetrievedChunk(i, i, 0.9) for i in "abcd"]
    sparse = [RetrievedChunk(i, i, 5.0) for i in "dc"]
    rrf = HybridWeights(dense=1.0, sparse=1.0, method="rrf", coverage_power=2.0)
    assert order(dense, sparse, rrf, 0.0) == "abcd"
    assert order(dense, sparse, rrf, 1.0) == "dcab"  # plain RRF: d has 1/64 + 1/61 > a's 1/61
    assert order(dense, sparse, rrf, 0.15) == "acbd"  # squared coverage: only near neighbours swap


@settings(max_examples=60, deadline=None)
@given(
    dense=st.lists(st.floats(-1, 1, allow_nan=False), min_size=0, max_size=12),
    sparse=st.lists(st.floats(0.01, 50, allow_nan=False), min_size=0, max_size=12),
    offset=st.integers(0, 12),
    alpha=st.floats(0.05, 0.95),
)
def test_fusion_is_deterministic_and_keeps_every_candidate(dense: list[float], sparse: list[float], offset: int,
                                                            alpha: float) -> None:
    d = [RetrievedChunk(f"c{i}", "", s) for i, s in enumerate(sorted(dense, reverse=True))]
    s = [RetrievedChunk(f"c{i + offset}", "", v) for i, v in enumerate(sorted(sparse, reverse=True))]
    weights = HybridWeights(alpha, 1 - alpha)
    first = [(r.id, r.score) for r in fuse_hybrid(d, s, weights)]
    assert first == [(r.id, r.score) for r in fuse_hybrid(list(d), list(s), weights)]
    assert {cid for cid, _ in first} == {r.id for r in d} | {r.id for r in s}
    assert all(a[1] >= b[1] for a, b in zip(first, first[1:], strict=False))
    if not s:
        assert [cid for cid, _ in first] == [r.id for r in d]
    # Dense-only candidates keep their dense order among themselves, whatever BM25 says.
    dense_only = [cid for cid, _ in first if cid not in {r.id for r in s}]
    assert dense_only == [r.id for r in d if r.id not in {x.id for x in s}]


def test_zscore_fuse_standardises_each_list() -> None:
    fused = dict(zscore_fuse([[("a", 3.0), ("b", 1.0)], [("b", 10.0), ("a", 0.0)]], [1.0, 1.0]))
    assert fused == pytest.approx({"a": 0.0, "b": 0.0})  # z = +-1 in each list, opposite signs
    assert zscore_fuse([[("a", 1.0)]]) == [("a", 0.0)]
    # With a floor (BM25: 0) a lone hit is +1 and every id the list did not return gets -1.
    lone = dict(zscore_fuse([[("a", 0.9), ("b", 0.8), ("c", 0.7)], [("c", 4.0)]], floors=[None, 0.0]))
    assert lone["c"] == pytest.approx(-1.2247 + 1.0, abs=1e-3) and lone["a"] == pytest.approx(1.2247 - 1.0, abs=1e-3)
    with pytest.raises(InputError, match="floors"):
        zscore_fuse([[("a", 1.0)]], floors=[0.0, 0.0])
    with pytest.raises(InputError, match="weights"):
        zscore_fuse([[("a", 1.0)]], [1.0, 2.0])
    with pytest.raises(InputError, match="finite"):
        zscore_fuse([[("a", float("nan"))]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "linear"}, "method must be one of zscore, rrf"),
        ({"sparse": -0.5}, "sparse must be a finite number >= 0"),
        ({"dense": 0.0, "sparse": 0.0}, "both 0"),
        ({"coverage_power": float("nan")}, "coverage_power"),
        ({"rrf_k": -1}, "rrf_k"),
    ],
)
def test_hybrid_weights_refuse_what_cannot_fuse(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        HybridWeights(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ paired comparison


def test_paired_comparison_on_synthetic_data() -> None:
    same = paired_comparison([1.0, 0.5, 0.0], [1.0, 0.5, 0.0], names=("dense", "hybrid"))
    assert (same.diff, same.ci_low, same.ci_high, same.ties, same.significant) == (0.0, 0.0, 0.0, 3, False)

    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 400)
    better = base + 0.05
    up = paired_comparison(base, better, names=("dense", "hybrid"))
    assert up.wins == 400 and up.losses == 0 and up.diff == pytest.approx(0.05)
    assert up.ci_low == pytest.approx(0.05) and up.significant
    assert up.format().startswith("hybrid - dense mrr@10: +0.0500 [95% CI +0.0500, +0.0500]; wins 400")

    # Pure noise: the interval holds 0; the same seed gives the same interval.
    noisy = base + rng.normal(0, 0.2, 400)
    a = paired_comparison(base, noisy, seed=3)
    b = paired_comparison(base, noisy, seed=3)
    assert a == b and a.ci_low < 0 < a.ci_high and not a.significant
    assert a.wins + a.losses + a.ties == 400
    assert a.ci_high - a.ci_low == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(400), rel=0.25)


def test_paired_comparison_refuses_mismatched_input() -> None:
    with pytest.raises(InputError, match="equally long"):
        paired_comparison([1.0, 0.0], [1.0])
    with pytest.raises(InputError, match="at least one query"):
        paired_comparison([], [])
    with pytest.raises(InputError, match="resamples"):
        paired_comparison([1.0], [0.0], resamples=10)


def test_report_compare_pairs_the_modes_per_query() -> None:
    report = EvalReport(task="t", passages=3, chunks=3, queries=3, k=10, depth=40)
    report.modes["dense"] = ModeMetrics("dense", 10, {10: 1.0}, 0.5, 0.5, 3, reciprocal_ranks=[1.0, 0.5, 0.0])
    report.modes["hybrid"] = ModeMetrics("hybrid", 10, {10: 1.0}, 0.8, 0.8, 3, reciprocal_ranks=[1.0, 1.0, 0.5])
    result = report.compare("dense", "hybrid")
    assert (result.wins, result.losses, result.ties) == (2, 0, 1)
    assert result.diff == pytest.approx(1 / 3) and result.metric == "mrr@10"
    with pytest.raises(InputError, match="holds dense, hybrid"):
        report.compare("dense", "sparse")
