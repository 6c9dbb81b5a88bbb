"""Sentence-pair evaluation: metrics against hand-computed values, file layouts, `m3e-rag eval --pairs`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import cli
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.errors import InputError
from m3e_rag.evaluate.pairs import (
    PairSet,
    SentencePair,
    accuracy_at,
    best_threshold_accuracy,
    evaluate_pairs,
    load_pairs,
    pearson,
    spearman,
)

# --------------------------------------------------------------------------------------------- metrics


def test_spearman_with_ties_matches_hand_computation() -> None:
    # y ranks: 1, 2, 3.5, 5, 3.5 (the two 7s share ranks 3 and 4). Pearson of the ranks:
    # dx = -2..2, dy = -2, -1, .5, 2, .5 -> sum dx*dy = 8, sum dx^2 = 10, sum dy^2 = 9.5.
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(10 * 9.5), abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_matches_hand_computation() -> None:
    # dx = -1, 0, 1; dy = -7/3, -1/3, 8/3 -> r = 5 / sqrt(2 * 114/9).
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9), abs=1e-12)
    with pytest.raises(InputError, match="all labels are equal"):
        pearson([1, 2, 3], [1, 1, 1])
    with pytest.raises(InputError, match="equal-length"):
        spearman([1, 2, 3], [1, 2])


def test_correlations_give_scipys_numbers_on_random_data_with_ties() -> None:
    # spearman and pearson are numpy code standing in for scipy.stats (a test dependency); same figures.
    import scipy.stats as scipy_stats
    rng = np.random.default_rng(7)
    compared = 0
    for n in (2, 3, 7, 50, 501, 3000):
        for _ in range(10):
            scores = rng.normal(size=n)
            scores[: n // 2] = np.round(scores[: n // 2], 1)  # ties among the scores
            labels = rng.integers(0, 6, size=n).astype(np.float64)  # graded labels: ties everywhere
            if np.ptp(scores) == 0 or np.ptp(labels) == 0:
                continue
            assert abs(spearman(scores, labels) - float(scipy_stats.spearmanr(scores, labels).statistic)) <= 1e-12
            assert abs(pearson(scores, labels) - float(scipy_stats.pearsonr(scores, labels).statistic)) <= 1e-12
            binary = (labels > 2).astype(np.float64)
            if np.ptp(binary) > 0:
                assert abs(spearman(scores, binary) - float(scipy_stats.spearmanr(scores, binary).statistic)) <= 1e-12
            compared += 1
    assert compared > 40


def test_best_threshold_accuracy_sweeps_every_cut() -> None:
    # Cuts after 0.9 and after 0.7 both get 3 of 4 right; the higher threshold is kept.
    assert best_threshold_accuracy([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((0.75, 0.85))
    # Tied scores cannot be split: the only cuts are above 0.5, between 0.5 and 0.2, below 0.2.
    assert best_threshold_accuracy([0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0]) == pytest.approx((0.75, 0.35))
    acc, threshold = best_threshold_accuracy([0.9, 0.8], [0, 0])  # predicting all 0 is right
    assert acc == 1.0 and threshold > 0.9
    assert best_threshold_accuracy([0.3, 0.1], [1, 1]) == (1.0, pytest.approx(0.1))
    assert accuracy_at([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], 0.75) == 0.5
    with pytest.raises(InputError, match="binary"):
        best_threshold_accuracy([0.1, 0.2], [0.5, 1])


def test_best_threshold_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # many ties
    labels = (rng.random(200) < scores).astype(float)
    acc, threshold = best_threshold_accuracy(scores, labels)
    brute = max(accuracy_at(scores, labels, t) for t in [*np.unique(scores), 2.0])
    assert acc == pytest.approx(brute) and accuracy_at(scores, labels, threshold) == pytest.approx(acc)


# --------------------------------------------------------------------------------------------- files


def test_load_pairs_reads_jsonl_and_both_tsv_layouts(tmp_path: Path) -> None:
    jsonl = tmp_path / "sts.jsonl"
    jsonl.write_text(
        '{"sentence1": "a", "sentence2": "b", "score": 4.5}\n\n{"sentence1": "c", "sentence2": "d", "label": "1"}\n',
        encoding="utf-8",
    )
    got = load_pairs(jsonl)
    assert got.pairs == [SentencePair("a", "b", 4.5), SentencePair("c", "d", 1.0)] and not got.binary
    lcqmc = tmp_path / "lcqmc.tsv"
    lcqmc.write_text("喜欢打篮球的男生\t爱打篮球的男生\t1\n我手机丢了\t我想换个手机\t0\n", encoding="utf-8")
    got = load_pairs(lcqmc)
    assert [p.label for p in got.pairs] == [1.0, 0.0] and got.binary and got.name == "lcqmc.tsv"
    paws = tmp_path / "paws.tsv"
    paws.write_text("id\tsentence1\tsentence2\tlabel\n1\tx y\ty x\t0\n2\t \tz\t1\n3\tp\tq\t1\n", encoding="utf-8")
    got = load_pairs(paws)
    assert [(p.sentence1, p.label) for p in got.pairs] == [("x y", 0.0), ("p", 1.0)] and got.skipped == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a\tb\tmaybe\n", "line 1.*not a number"),
        ("1\ta\tb\t1\n", "exactly 3"),
        ('{"s": "a"}\n', "needs keys sentence1"),
        ("id\tsentence1\tlabel\n1\ta\t1\n", "must name sentence1, sentence2 and label"),
        ("\n", "no usable pairs"),
    ],
)
def test_bad_pair_files_are_refused_by_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("bad.jsonl" if content.startswith("{") else "bad.tsv")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_pairs(path)


# ------------------------------------------------------------------------------------------ with a model


@pytest.fixture()
def pair_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    rows = [("今天天气怎么样？", "今天天气如何？", 1), ("今天天气怎么样？", "你好世界", 0),
            ("熊猫吃竹子", "大熊猫主要吃竹子", 1), ("北京是首都", "Python 是编程语言", 0), ("我爱你", "我喜欢你", 1)]
    path.write_text("".join(f"{a}\t{b}\t{label}\n" for a, b, label in rows), encoding="utf-8")
    return path


def test_evaluate_pairs_scores_cosines_of_the_model(tiny_model_path: Path, pair_file: Path) -> None:
    enc = M3EEncoder(str(tiny_model_path))
    pairs = load_pairs(pair_file)
    report = evaluate_pairs(pairs, enc)
    cosines = enc.similarity([p.sentence1 for p in pairs.pairs], [p.sentence2 for p in pairs.pairs])
    assert report.pairs == 5 and report.binary and report.positives == 3 and report.threshold_fitted
    assert report.spearman == pytest.approx(spearman(cosines, pairs.labels), abs=1e-6)
    assert report.pearson == pytest.approx(pearson(cosines, pairs.labels), abs=1e-6)
    assert (report.accuracy, report.threshold) == pytest.approx(best_threshold_accuracy(cosines, pairs.labels))
    fixed = evaluate_pairs(pairs, enc, threshold=0.5)
    assert not fixed.threshold_fitted and fixed.accuracy == pytest.approx(accuracy_at(cosines, pairs.labels, 0.5))
    graded = PairSet([SentencePair("a", "b", 1.5), SentencePair("c", "d", 3.0)], "graded")
    with pytest.raises(InputError, match="binary"):
        evaluate_pairs(graded, enc, threshold=0.5)


def test_eval_pairs_command(tiny_model_path: Path, pair_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_model_path)
    assert cli.main(["eval", "--pairs", str(pair_file), "--model", model, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 5 and set(out) >= {"spearman", "pearson", "accuracy", "threshold", "binary"}
    assert cli.main(["eval", "--pairs", str(pair_file), "--model", model, "--limit", "4"]) == 0
    text = capsys.readouterr().out
    assert "spearman" in text and "4 pairs" in text and "accuracy" in text
    assert cli.main(["eval", "--pairs", str(pair_file), "--model", model, "--modes", "dense"]) == 2
    assert "--modes" in capsys.readouterr().err
    assert cli.main(["eval", "--model", model]) == 2
    assert "--queries FILE" in capsys.readouterr().err
