"""``m3e-rag compare`` rows for a model with BGE-M3's heads in each of its modes, beside M3E with BM25 hybrid.

Stand-ins: the random heads measure the plumbing (each mode is the search it names), never BGE-M3's quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError
from m3e_rag.evaluate.compare import compare_models
from m3e_rag.evaluate.compare_cache import CompareSettings
from m3e_rag.evaluate.retrieval import evaluate
from m3e_rag.evaluate.tasks import load_task
from tests.support import standins
from tests.support.task_files import write_retrieval_task

CORPUS = [
    ("d1", "大熊猫主要吃竹子，一只成年大熊猫每天要吃十几公斤竹子。"),
    ("d2", "北京是中国的首都，故宫和长城都在北京附近。"),
    ("d3", "Python is a programming language that is popular for data science."),
    ("d4", "今天天气晴朗，适合去公园散步，也适合放风筝。"),
    ("d5", "杭州西湖的龙井茶非常有名，春天去喝茶最好。"),
]
QUERIES = [("熊猫吃什么？", "d1"), ("中国的首都是哪里？", "d2"), ("Which language is popular for data science?", "d3"),
           ("哪里的茶有名", "d5")]
MODES = ("dense", "sparse", "hybrid", "hybrid-bm25", "hybrid+colbert")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("learned-compare")
    return {**write_retrieval_task(root, CORPUS, QUERIES), "cache": root / "cache"}


@pytest.mark.slow
def test_a_heads_model_gets_a_row_per_mode_beside_m3e(files: dict[str, Path], tiny_model_path: Path,
                                                      tmp_path: Path) -> None:
    heads = str(standins.bge_m3_standin())
    settings = CompareSettings(modes=MODES, latency_queries=2)
    result = compare_models([str(tiny_model_path), heads], files["queries"], files["corpus"], settings=settings,
                            cache_dir=files["cache"], isolate=False, show_progress=False)
    assert result.errors == {}
    m3e, bge = result.results
    assert set(bge.modes) == set(MODES)
    assert set(m3e.modes) == set(MODES) - {"hybrid+colbert"}  # no heads: not measured, shown as "-"
    assert m3e.modes["hybrid-bm25"] == m3e.modes["hybrid"]  # M3E's hybrid is BM25 hybrid
    table = result.format_table()
    assert "hybrid+colbert MRR@10" in table and "learned-sparse" in table
    # Each of the heads model's rows is the search it names: the same figures as evaluate() with those options.
    task = load_task(files["queries"], files["corpus"])
    rag = RAGPipeline(tmp_path / "idx", model_name=heads)
    learned = evaluate(task, rag, ["sparse", "hybrid"]).to_dict()
    assert bge.modes["sparse"] == pytest.approx(learned["sparse"])
    assert bge.modes["hybrid"] == pytest.approx(learned["hybrid"])


def test_an_unknown_compare_mode_names_the_choices() -> None:
    with pytest.raises(InputError, match="hybrid-bm25, hybrid\\+colbert"):
        CompareSettings(modes=("dense", "colbert"))
