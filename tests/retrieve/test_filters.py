"""Filters restrict the candidates BEFORE ranking, in every mode (issue 8, item 3).

151 texts all about bamboo; exactly one has ``topic=b`` and one distinctive phrase, and it is the
weakest BM25 match (one mention of 竹子 in a long text). Filtering BM25's top hits afterwards
(the old behaviour) lost it: sparse returned ``[]`` and hybrid silently fell back to dense.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.errors import InputError

N_OTHERS = 150
NEEDLE_ID = "needle"
NEEDLE = "这是一段很长的关于山间小路、溪流、石桥和村庄的描写，编号甲乙丙，只在末尾提到一次竹子。" * 3


@pytest.fixture(scope="module")
def haystack(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    rag = RAGPipeline(tmp_path_factory.mktemp("filters") / "idx", model_name=str(tiny_model_path))
    texts = [f"竹子竹子竹子，第{i}篇讲竹子的短文。" for i in range(N_OTHERS)] + [NEEDLE]
    metas = [{"topic": "a", "n": i} for i in range(N_OTHERS)] + [{"topic": "b", "n": -1}]
    ids = [f"t{i}" for i in range(N_OTHERS)] + [NEEDLE_ID]
    rag.add_texts(texts, metadatas=metas, ids=ids)
    return rag


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize(
    "filters",
    [{"where": {"topic": "b"}}, {"where_document": {"$contains": "编号甲乙丙"}},
     {"where": {"n": {"$lt": 0}}, "where_document": {"$regex": "石桥"}}],
    ids=["where", "where_document", "both"],
)
def test_the_one_matching_text_is_found_in_every_mode(haystack: RAGPipeline, mode: str,
                                                      filters: dict[str, dict[str, object]]) -> None:
    hits = haystack.search("竹子", k=4, mode=mode, **filters)  # type: ignore[arg-type]
    assert [h.id for h in hits] == [NEEDLE_ID]
    assert hits[0].text == NEEDLE and hits[0].metadata["topic"] == "b"


def test_unfiltered_bm25_would_not_reach_the_needle(haystack: RAGPipeline) -> None:
    """The premise: the needle ranks last by BM25, far below any top-100 cut."""
    ranked = [h.id for h in haystack.search("竹子", k=N_OTHERS + 1, mode="sparse")]
    assert len(ranked) == N_OTHERS + 1 and ranked[-1] == NEEDLE_ID


def test_filtered_sparse_ranking_is_the_unfiltered_ranking_restricted(haystack: RAGPipeline) -> None:
    everything = [h.id for h in haystack.search("竹子 第7篇", k=N_OTHERS + 1, mode="sparse")]
    where = {"n": {"$gte": 100}}
    allowed = {f"t{i}" for i in range(100, N_OTHERS)}
    filtered = [h.id for h in haystack.search("竹子 第7篇", k=10, mode="sparse", where=where)]
    assert filtered == [i for i in everything if i in allowed][:10]


@pytest.mark.parametrize(
    ("where", "k", "resolves_ids"),
    [({"topic": "a"}, 10, False),                 # broad: the head of the ranking holds 10 allowed
     ({"n": {"$gte": 140}}, 5, None),             # 11 of 151 allowed: either path, the same answer
     ({"n": {"$in": [3, 77]}}, 5, None),          # 2 allowed
     ({"topic": "b"}, 3, True)],                  # the needle alone: resolved ids, the exact slow path
    ids=["broad", "tenth", "two", "needle"],
)
def test_filtered_sparse_walks_the_ranking_or_resolves_the_ids_with_one_result(
    haystack: RAGPipeline, monkeypatch: pytest.MonkeyPatch, where: dict[str, object], k: int,
    resolves_ids: bool | None,
) -> None:
    """Broad filters check the head of BM25's own ranking against the filter; narrow ones resolve the
    allowed ids first. Both give the unfiltered ranking restricted to the allowed chunks, scores included."""
    everything = haystack.search("竹子 第7篇", k=N_OTHERS + 1, mode="sparse")
    allowed = {r.id for r in haystack.store.get(where=where, include_text=False)}
    calls: list[object] = []
    real = haystack.store.allowed_ids

    def spy(*args: object, **kwargs: object) -> list[str] | None:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(haystack.store, "allowed_ids", spy)
    monkeypatch.setattr("m3e_rag.retrieve.searcher.SPARSE_VERIFY_ROUNDS", (2, 4))  # heads of 2k and 4k on 151 texts
    got = haystack.search("竹子 第7篇", k=k, mode="sparse", where=where)  # type: ignore[arg-type]
    want = [h for h in everything if h.id in allowed][:k]
    assert [(h.id, round(h.score, 5)) for h in got] == [(h.id, round(h.score, 5)) for h in want]
    if resolves_ids is not None:
        assert bool(calls) is resolves_ids


def test_filters_matching_nothing_give_nothing_in_every_mode(haystack: RAGPipeline) -> None:
    for mode in ("dense", "sparse", "hybrid"):
        assert haystack.search("竹子", k=3, mode=mode, where={"topic": "zzz"}) == []  # type: ignore[arg-type]
        assert haystack.search("竹子", k=3, mode=mode, where_document={"$contains": "不存在的词"}) == []  # type: ignore[arg-type]


def test_bad_filters_are_input_errors(haystack: RAGPipeline) -> None:
    for bad in ({"$bogus": 1}, {"n": {"$gt": "x"}}, {"$and": [{"topic": "a"}]}, {"topic": None}):
        with pytest.raises(InputError, match="where"):
            haystack.search("竹子", mode="sparse", where=bad)
    for bad_doc in ({"$contains": ""}, {"$like": "x"}, {"$regex": "("}):
        with pytest.raises(InputError, match="where_document|filter"):
            haystack.search("竹子", mode="hybrid", where_document=bad_doc)
    with pytest.raises(InputError, match="where must be a dict"):
        haystack.search("竹子", where="topic=b")  # type: ignore[arg-type]


def test_get_and_delete_take_where_document(tmp_path: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.add_texts(["熊猫吃竹子。", "长城很长。", "熊猫也睡觉。"], ids=["p1", "w", "p2"])
    got = rag.store.get(where_document={"$contains": "熊猫"})
    assert sorted(r.id for r in got) == ["p1", "p2"]
    with pytest.raises(InputError, match="empty filter"):
        rag.delete(where={})
    assert rag.store.count() == 3
    assert rag.delete(where_document={"$contains": "熊猫"}) == 2
    assert rag.store.all_ids() == ["w"]
    assert [h.id for h in rag.search("熊猫", k=3, mode="sparse")] == []


def test_cli_search_takes_where_and_where_document(haystack: RAGPipeline, tiny_model_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    index = str(haystack.index_path)
    for mode in ("dense", "sparse", "hybrid"):
        for flag, value in (("--where", {"topic": "b"}), ("--where-document", {"$contains": "编号甲乙丙"})):
            rc = main(["search", "竹子", "--index", index, "--json", "--mode", mode, flag, json.dumps(value)])
            out = capsys.readouterr().out
            assert rc == 0
            assert [h["id"] for h in json.loads(out)] == [NEEDLE_ID]
