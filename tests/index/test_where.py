"""The metadata-filter evaluator of filtered BM25 agrees with Chroma wherever it answers (differential test).

``m3e_rag.index.where.match_where`` decides Chroma's ``where`` on records already fetched, or says it cannot
(None). A wrong True/False would silently change filtered sparse and hybrid results, so every answer it
gives on generated records and filters is compared with ``collection.get(where=...)`` of Chroma itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3e_rag.index.where import match_where

chromadb = pytest.importorskip("chromadb")

KEYS = ("a", "b", "c")
SCALARS = st.one_of(st.sampled_from(["x", "y", "", "中文"]), st.integers(-2, 3), st.sampled_from([-1.5, 0.0, 2.5, 3.0]),
                    st.booleans())


def _records() -> list[dict[str, Any]]:
    """Every mix of a str, an int, a float, a bool or nothing under three keys (some values shared)."""
    values: list[Any] = ["x", "y", 0, 2, 3, 0.0, 2.5, True, False, None]
    out = []
    for i, (a, b, c) in enumerate(itertools.product(values, ["x", 1, 2.5, None], [False, 3, None])):
        meta = {k: v for k, v in zip(KEYS, (a, b, c), strict=True) if v is not None}
        meta["n"] = i  # never empty: Chroma keeps metadata-less records apart
        out.append(meta)
    return out


RECORDS = _records()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Any:
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("where")))
    col = client.create_collection("where-check", embedding_function=None)
    col.add(ids=[f"r{i}" for i in range(len(RECORDS))], embeddings=[[1.0, float(i)] for i in range(len(RECORDS))],
            metadatas=RECORDS)  # type: ignore[arg-type]
    return col


def _field() -> st.SearchStrategy[dict[str, Any]]:
    key = st.sampled_from(KEYS)
    plain = st.builds(lambda k, v: {k: v}, key, SCALARS)
    op = st.builds(lambda k, o, v: {k: {o: v}}, key, st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
                   SCALARS)
    member = st.builds(lambda k, o, vs: {k: {o: vs}}, key, st.sampled_from(["$in", "$nin"]),
                       st.lists(SCALARS, min_size=1, max_size=3))
    return st.one_of(plain, op, member)


WHERE = st.recursive(_field(), lambda inner: st.builds(lambda o, parts: {o: parts}, st.sampled_from(["$and", "$or"]),
                                                        st.lists(inner, min_size=2, max_size=3)), max_leaves=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=WHERE)
def test_every_certain_answer_is_chromas(collection: Any, where: dict[str, Any]) -> None:
    try:
        matched = set(collection.get(where=where, include=[])["ids"])
    except Exception:  # noqa: BLE001 - a filter Chroma refuses (e.g. $gt on a str) never reaches the evaluator
        return
    for i, meta in enumerate(RECORDS):
        verdict = match_where(where, meta)
        if verdict is not None:
            assert verdict == (f"r{i}" in matched), (where, meta)


def test_plain_filters_are_decided_for_every_record(collection: Any) -> None:
    """The evaluator is not vacuous: equality, ranges and lists on present keys are always decided."""
    for where in ({"n": {"$gte": 10}}, {"n": {"$in": [1, 5, 7]}}, {"$and": [{"n": {"$lt": 50}}, {"n": {"$ne": 3}}]}):
        matched = set(collection.get(where=where, include=[])["ids"])
        verdicts = [match_where(where, meta) for meta in RECORDS]
        assert None not in verdicts
        assert {f"r{i}" for i, v in enumerate(verdicts) if v} == matched and matched


def test_uncertain_cases_are_left_to_chroma() -> None:
    assert match_where({"a": {"$ne": "x"}}, {"b": 1}) is None  # missing key under $ne
    assert match_where({"a": {"$gt": 1}}, {"a": 2.5}) is None  # int operand, float value
    assert match_where({"a": 1}, {"a": True}) is None  # bool is not an int to Chroma
    assert match_where({"a": {"$contains": "x"}}, {"a": "xyz"}) is None
    assert match_where({"a": "x"}, {"b": 1}) is False  # $eq on a missing key: certain


def test_filtered_search_over_a_real_index_matches_chromas_filter(tmp_path: Path, tiny_model_path: Path) -> None:
    """End to end: a broad metadata filter on sparse search equals the ranking restricted by Chroma's own filter."""
    from m3e_rag import RAGPipeline

    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    texts = [f"竹子 熊猫 第{i}篇 {'bamboo' if i % 3 else 'panda'}" for i in range(90)]
    metas = [{"lang": "zh" if i % 2 else "en", "n": i, "w": float(i) / 2} for i in range(90)]
    rag.add_texts(texts, metadatas=metas, ids=[f"d{i}" for i in range(90)])
    everything = rag.search("熊猫 bamboo", k=90, mode="sparse")
    for where in ({"lang": "en"}, {"$or": [{"n": {"$lt": 10}}, {"w": {"$gte": 30.0}}]}, {"n": {"$nin": [0, 1, 2]}}):
        allowed = {r.id for r in rag.store.get(where=where, include_text=False)}
        got = rag.search("熊猫 bamboo", k=7, mode="sparse", where=where)
        want = [h for h in everything if h.id in allowed][:7]
        assert [(h.id, round(h.score, 5)) for h in got] == [(h.id, round(h.score, 5)) for h in want]
