"""BM25 sparse index: tokenizer, scores against a reference BM25, mutation, persistence, RRF."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from m3e_rag.errors import InputError, StoreError
from m3e_rag.index.sparse import postings as sparse_postings
from m3e_rag.index.sparse import tokenize as sparse_tokenize
from m3e_rag.index.sparse.bm25 import SparseIndex, fingerprint
from m3e_rag.index.sparse.folder import load_index, save_index
from m3e_rag.index.sparse.snapshot import FORMAT_VERSION
from m3e_rag.index.sparse.tokenize import STOPWORDS, TOKENIZER_VERSION, tokenize_for_bm25
from m3e_rag.retrieve.fusion import rrf_fuse

EXT_B = "\U00020000"  # 𠀀, CJK Unified Ideographs Extension B: an astral (non-BMP) character

NEWS = {
    "beijing-duck": "北京烤鸭是北京最有名的菜，全聚德的烤鸭外皮酥脆，很多游客专门去吃烤鸭。",
    "shanghai": "上海是中国的经济中心，外滩和陆家嘴是游客常去的地方。",
    "python": "Python is a popular programming language for data science and machine learning.",
    "ml": "机器学习是人工智能的一个分支，深度学习使用多层神经网络。",
    "weather": "今天北京天气晴朗，最高气温二十五度，适合户外运动。",
    "stocks": "股市今天上涨，科技股领涨，投资者情绪乐观。",
    "tea": "中国茶文化历史悠久，绿茶、红茶和乌龙茶各有特色。",
    "football": "昨晚的足球比赛非常精彩，主队两比一战胜了客队。",
    "rag": "RAG 系统先检索相关文档，再交给大语言模型生成答案。",
    "university": "北京大学和清华大学都是中国著名的高等学府。",
}


def make_index(docs: dict[str, str] | None = None, **params: float) -> SparseIndex:
    index = SparseIndex(**params)  # type: ignore[arg-type]
    docs = NEWS if docs is None else docs
    index.upsert(list(docs), list(docs.values()))
    return index


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_chinese_search_mode_and_stopwords() -> None:
    tokens = tokenize_for_bm25("中华人民共和国的首都是北京")
    # search mode: the long word and its dictionary sub-words
    assert {"中华", "人民", "共和国", "中华人民共和国", "首都", "北京"} <= set(tokens)
    assert "的" not in tokens and "是" not in tokens


def test_tokenizer_english_lowercases_and_splits_on_punctuation() -> None:
    assert tokenize_for_bm25("The Quick, brown FOX jumps over the lazy dog!") == [
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
    ]
    assert tokenize_for_bm25("snake_case and m3e-base") == ["snake", "case", "m3e", "base"]


def test_tokenizer_mixed_text_in_one_pass() -> None:
    tokens = tokenize_for_bm25("我用Python写RAG系统，速度提升了3倍")
    assert {"python", "rag", "系统", "速度", "提升", "3", "倍"} <= set(tokens)
    assert "了" not in tokens
    # order follows the text
    assert tokens.index("python") < tokens.index("rag") < tokens.index("系统")


def test_tokenizer_keeps_numbers_whole() -> None:
    tokens = tokenize_for_bm25("圆周率约为3.14，成立于2024年，版本1.2.3。")
    assert {"3.14", "2024", "1.2.3"} <= set(tokens)
    assert "3" not in tokens and "14" not in tokens
    assert tokenize_for_bm25("Pi is 3.14.") == ["pi", "3.14"]


def test_tokenizer_normalises_fullwidth() -> None:
    assert tokenize_for_bm25("ＡＢＣ　１２３，Ｈｅｌｌｏ！") == ["abc", "123", "hello"]
    assert tokenize_for_bm25("３．１４") == ["3.14"]
    assert tokenize_for_bm25("Ｐｙｔｈｏｎ") == tokenize_for_bm25("python")


def test_tokenizer_keeps_extension_b() -> None:
    assert tokenize_for_bm25(EXT_B) == [EXT_B]
    assert EXT_B in tokenize_for_bm25(f"这个字{EXT_B}很少见")


def test_tokenizer_drops_punctuation_whitespace_and_stopwords() -> None:
    assert tokenize_for_bm25("，。！？…… ——\n\t  !!! ... ") == []
    assert tokenize_for_bm25("的 了 是 the a an of to is") == []
    assert tokenize_for_bm25("") == []
    assert {"的", "the"} <= STOPWORDS


def test_tokenizer_rejects_non_str() -> None:
    with pytest.raises(InputError):
        tokenize_for_bm25(None)  # type: ignore[arg-type]


def test_jieba_is_private_and_quiet() -> None:
    import jieba

    tokenize_for_bm25("初始化")
    assert sparse_tokenize._jieba() is not jieba.dt  # the global tokenizer is left alone
    assert logging.getLogger("jieba").level >= logging.WARNING


# --------------------------------------------------------------------------- ranking and scores


def test_chinese_query_ranks_relevant_doc_first() -> None:
    index = make_index()
    results = index.search("北京烤鸭哪里好吃", k=3)
    assert results[0][0] == "beijing-duck"
    assert index.search("深度学习和神经网络", k=1)[0][0] == "ml"
    assert index.search("上海外滩", k=1)[0][0] == "shanghai"
    assert index.search("machine learning language", k=1)[0][0] == "python"
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True) and all(score > 0 for score in scores)


def reference_bm25(corpus: dict[str, list[str]], query: list[str], k1: float, b: float) -> dict[str, float]:
    """Lucene BM25, written plainly: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    tf part = tf / (tf + k1 * (1 - b + b * |D| / avgdl)) (Lucene >= 8 drops the constant (k1 + 1))."""
    n = len(corpus)
    avgdl = sum(len(tokens) for tokens in corpus.values()) / n
    df = Counter(term for tokens in corpus.values() for term in set(tokens))
    scores = {}
    for doc_id, tokens in corpus.items():
        tf = Counter(tokens)
        score = 0.0
        for term in query:  # a repeated query term counts again
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf[term] / (tf[term] + k1 * (1 - b + b * len(tokens) / avgdl))
        scores[doc_id] = score
    return scores


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (1.5, 0.3), (0.9, 1.0)])
def test_scores_match_reference_bm25(k1: float, b: float) -> None:
    docs = dict(NEWS)
    docs["empty"] = "。。。的了"  # no terms: counts in N and avgdl, never matches
    docs["repeat"] = "北京 北京 北京 游客"
    index = make_index(docs, k1=k1, b=b)
    corpus = {doc_id: tokenize_for_bm25(text) for doc_id, text in docs.items()}
    assert index.terms("repeat") == corpus["repeat"] == ["北京", "北京", "北京", "游客"]
    for query in ["北京 游客 中国", "北京北京烤鸭", "machine learning python 学习", "清华大学 未知词"]:
        expected = reference_bm25(corpus, tokenize_for_bm25(query), k1, b)
        got = dict(index.search(query, k=100))
        assert set(got) == {doc_id for doc_id, score in expected.items() if score > 0}
        for doc_id, score in got.items():
            assert score == pytest.approx(expected[doc_id], abs=1e-5), (query, doc_id)


def test_search_k_limits_and_ties_break_by_id() -> None:
    index = make_index({"b": "苹果 香蕉", "a": "苹果 香蕉", "c": "苹果", "d": "橘子"})
    results = index.search("苹果 香蕉", k=10)  # k larger than the corpus is fine
    assert [doc_id for doc_id, _ in results] == ["a", "b", "c"]  # "d" scores 0: left out
    assert results[0][1] == results[1][1]
    assert index.search("苹果 香蕉", k=1) == results[:1]
    assert index.search("苹果 香蕉", k=0) == []
    with pytest.raises(InputError):
        index.search("苹果", k=-1)


def test_empty_index_and_empty_queries_return_nothing() -> None:
    assert SparseIndex().search("北京", k=5) == []
    index = make_index()
    assert index.search("的了是在和", k=5) == []
    assert index.search("the a an of to is", k=5) == []
    assert index.search("，。！？ ... ", k=5) == []
    assert index.search("", k=5) == []
    assert index.search("量子纠缠 xylophone", k=5) == []  # no known term
    only_empty = make_index({"x": "。。。"})
    assert len(only_empty) == 1 and only_empty.search("北京", k=5) == []


def test_allowed_ids_restricts_results() -> None:
    index = make_index()
    everything = dict(index.search("北京", k=10))
    assert {"beijing-duck", "weather", "university"} <= set(everything)
    restricted = index.search("北京", k=10, allowed_ids={"weather", "university", "tea", "not-held"})
    assert {doc_id for doc_id, _ in restricted} == {"weather", "university"}
    assert all(score == everything[doc_id] for doc_id, score in restricted)  # same scores, masked
    assert index.search("北京", k=10, allowed_ids=[]) == []
    assert index.search("北京", k=1, allowed_ids=["university", "weather"])[0][0] in {"university", "weather"}


# --------------------------------------------------------------------------- mutation


def test_upsert_replaces_existing_text() -> None:
    index = make_index()
    assert index.search("全聚德", k=5)[0][0] == "beijing-duck"
    index.upsert(["beijing-duck"], ["杭州西湖的龙井茶很有名。"])
    assert len(index) == len(NEWS)
    assert index.search("全聚德", k=5) == []  # the old text's unique term no longer matches
    assert index.search("龙井茶", k=5)[0][0] == "beijing-duck"


def test_upsert_last_duplicate_wins_and_validates() -> None:
    index = SparseIndex()
    index.upsert(["a", "a"], ["苹果", "香蕉"])
    assert len(index) == 1 and index.terms("a") == ["香蕉"]
    with pytest.raises(InputError):
        index.upsert(["a", "b"], ["only one"])
    with pytest.raises(InputError):
        index.upsert([""], ["text"])
    with pytest.raises(InputError):
        index.upsert(["c"], [None])  # type: ignore[list-item]
    with pytest.raises(InputError):
        index.upsert("abc", "abc")
    assert index.ids() == {"a"}  # nothing was added by the failed calls


def test_delete_removes_and_ignores_unknown() -> None:
    index = make_index()
    assert "tea" in index
    index.delete(["tea", "no-such-id"])
    assert "tea" not in index and len(index) == len(NEWS) - 1
    assert index.search("乌龙茶", k=5) == []
    assert index.ids() == set(NEWS) - {"tea"}
    with pytest.raises(InputError):
        index.delete("tea")
    index.delete(list(index.ids()))
    assert len(index) == 0 and index.search("北京", k=5) == []


def test_term_table_compaction_keeps_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_postings, "_COMPACT_MIN_DEAD", 0)
    index = SparseIndex()
    index.upsert([f"tmp{i}" for i in range(200)], [f"独特词{i} word{i}" for i in range(200)])
    index.build()
    index.upsert(list(NEWS), list(NEWS.values()))
    index.delete([f"tmp{i}" for i in range(200)])
    before = len(index._terms)
    results = index.search("北京 游客 machine", k=10)
    index.compact()  # fold the delta, drop dead positions and (many) unused terms
    assert len(index._terms) < before  # dead terms were dropped
    fresh = make_index()
    assert results == fresh.search("北京 游客 machine", k=10) == index.search("北京 游客 machine", k=10)
    assert Counter(index.terms("tea")) == Counter(tokenize_for_bm25(NEWS["tea"]))
    index.upsert(["new"], ["全新的文档 brand new"])  # numbering continues correctly after compaction
    assert index.search("brand", k=1)[0][0] == "new"


def test_concurrent_upserts_and_searches() -> None:
    index = make_index()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                index.upsert([f"w{n}-{i}"], [f"线程{n}写入的第{i}条 北京 文档"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                for doc_id, score in index.search("北京 文档", k=5):
                    assert isinstance(doc_id, str) and score > 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(index) == len(NEWS) + 60
    written = {f"w{n}-{i}" for n in range(3) for i in range(20)}
    assert {doc_id for doc_id, _ in index.search("写入", k=100)} == written


# --------------------------------------------------------------------------- fingerprint and persistence


def test_fingerprint_tracks_the_id_set() -> None:
    index = make_index()
    assert index.fingerprint == fingerprint(NEWS) == fingerprint(reversed(list(NEWS)))
    assert fingerprint(["a", "b"]) == fingerprint(["b", "a", "a"])
    assert fingerprint(["a", "b"]) != fingerprint(["a"]) != fingerprint([])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])  # ids are delimited
    before = index.fingerprint
    index.upsert(["tea"], ["换了内容，id 不变"])
    assert index.fingerprint == before  # same ids, same fingerprint
    index.upsert(["extra"], ["新文档"])
    assert index.fingerprint != before
    index.delete(["extra"])
    assert index.fingerprint == before


def snapshot_of(folder: Path) -> Path:
    return folder / json.loads((folder / "CURRENT").read_text(encoding="utf-8"))["snapshot"]


def test_save_load_round_trip(tmp_path: Path) -> None:
    index = make_index(k1=1.4, b=0.6)
    index.delete(["stocks"])  # an unused term in the table must not break the files
    path = tmp_path / "nested" / "sparse"
    save_index(index, path)
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", "snap-000001"]  # no temp folder left
    loaded = load_index(path)
    assert (loaded.k1, loaded.b, loaded.method) == (1.4, 0.6, "lucene")
    assert loaded.ids() == index.ids() and loaded.fingerprint == index.fingerprint
    for query in ["北京烤鸭", "中国 大学", "machine learning", "股市", "游客 北京 北京", "茶"]:
        assert loaded.search(query, k=10) == index.search(query, k=10)
        assert loaded.search(query, k=3, allowed_ids=["tea", "university"]) == index.search(
            query, k=3, allowed_ids=["tea", "university"]
        )
    meta = json.loads((snapshot_of(path) / "meta.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["tokenizer_version"] == TOKENIZER_VERSION
    assert meta["bm25"] == {"method": "lucene", "k1": 1.4, "b": 0.6}
    assert meta["fingerprint"] == fingerprint(index.ids())
    assert sorted(json.loads((snapshot_of(path) / "ids.json").read_text(encoding="utf-8"))) == sorted(index.ids())
    loaded.upsert(["new"], ["保存之后新增的文档"])  # a loaded index stays mutable
    assert loaded.search("新增", k=1)[0][0] == "new"


def test_extension_b_round_trips_and_is_searchable(tmp_path: Path) -> None:
    index = SparseIndex()
    index.upsert([f"id-{EXT_B}", "plain"], [f"古籍里的{EXT_B}字", "普通的文字"])
    path = tmp_path / "sparse"
    save_index(index, path)
    raw = (snapshot_of(path) / "ids.json").read_bytes() + (snapshot_of(path) / "terms.json").read_bytes()
    assert EXT_B.encode("utf-8") in raw  # stored as real UTF-8 (4 bytes), ensure_ascii=False
    assert b"\\ud840" not in raw.lower()  # not as escaped surrogate pairs
    loaded = load_index(path)
    assert f"id-{EXT_B}" in loaded
    assert loaded.search(EXT_B, k=5) == index.search(EXT_B, k=5)
    assert [doc_id for doc_id, _ in loaded.search(EXT_B, k=5)] == [f"id-{EXT_B}"]


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    save_index(make_index(), path)
    small = make_index({"only": "只有一个文档"})
    save_index(small, path)
    assert load_index(path).ids() == {"only"}
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", "snap-000002"]  # the old snapshot is gone


def test_empty_index_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    save_index(SparseIndex(), path)
    loaded = load_index(path)
    assert len(loaded) == 0 and loaded.search("北京", k=3) == [] and loaded.fingerprint == fingerprint([])


def test_load_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="rebuild"):
        load_index(tmp_path / "missing")
    path = tmp_path / "sparse"
    path.mkdir()
    (path / "CURRENT").write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match="rebuild"):
        load_index(path)
    save_index(make_index(), path)
    snap = snapshot_of(path)
    good_meta = json.loads((snap / "meta.json").read_text(encoding="utf-8"))
    for change in (
        {"tokenizer_version": "something-else/0"},
        {"format_version": 1},
        {"format": "other"},
        {"ids_sha256": "0" * 64},
        {"count": 3},
        {"bm25": {"method": "lucene", "k1": -1, "b": 0.75}},
    ):
        (snap / "meta.json").write_text(json.dumps({**good_meta, **change}), encoding="utf-8")
        with pytest.raises(StoreError, match="rebuild"):
            load_index(path)
    (snap / "meta.json").write_text(json.dumps(good_meta), encoding="utf-8")
    assert load_index(path).ids() == set(NEWS)
    pos = snap / "pos.npy"
    good_pos = pos.read_bytes()
    pos.write_bytes(good_pos[: len(good_pos) - 8])  # truncated postings
    with pytest.raises(StoreError, match="rebuild"):
        load_index(path)
    pos.write_bytes(good_pos)
    log = snap / "log.jsonl"
    log.write_bytes(b"00000000 {\"op\": \"d\", \"ids\": [\"tea\"]}\n" + b"garbage\n")  # bad checksum, mid-log
    with pytest.raises(StoreError, match="rebuild"):
        load_index(path)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InputError):
        SparseIndex(method="bm25x")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        SparseIndex(k1=-0.1)
    with pytest.raises(InputError):
        SparseIndex(b=1.5)


# --------------------------------------------------------------------------- reciprocal-rank fusion


def test_rrf_arithmetic() -> None:
    fused = rrf_fuse([["a", "b", "c"], ["b", "c", "d"]], k=60)
    assert [doc_id for doc_id, _ in fused] == ["b", "c", "a", "d"]
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61, abs=1e-15)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61, abs=1e-15)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 62, abs=1e-15)
    assert scores["d"] == pytest.approx(1 / 63, abs=1e-15)
    assert rrf_fuse([["x"]], k=0) == [("x", 1.0)]
    assert rrf_fuse([]) == [] and rrf_fuse([[], []]) == []


def test_rrf_weights() -> None:
    fused = dict(rrf_fuse([["a", "b"], ["b", "a"]], weights=[3.0, 1.0], k=1))
    assert fused["a"] == pytest.approx(3 / 2 + 1 / 3, abs=1e-15)  # 1.8333...
    assert fused["b"] == pytest.approx(3 / 3 + 1 / 2, abs=1e-15)  # 1.5
    order = [doc_id for doc_id, _ in rrf_fuse([["a", "b"], ["b", "a"]], weights=[1.0, 3.0], k=1)]
    assert order == ["b", "a"]
    zero = rrf_fuse([["a"], ["b"]], weights=[1.0, 0.0], k=60)
    assert zero == [("a", pytest.approx(1 / 61)), ("b", 0.0)]
    with pytest.raises(InputError):
        rrf_fuse([["a"], ["b"]], weights=[1.0])
    with pytest.raises(InputError):
        rrf_fuse([["a"]], weights=[-1.0])
    with pytest.raises(InputError):
        rrf_fuse([["a"]], k=-1)


def test_rrf_ties_break_by_best_rank_then_id() -> None:
    # Equal scores (1/61 + 1/62): both best ranks are 1, so the id decides.
    assert [doc_id for doc_id, _ in rrf_fuse([["y", "x"], ["x", "y"]])] == ["x", "y"]
    # k=0: "z" has 1/2 (best rank 2), "b" has 1/4 + 1/4 (best rank 4): same score, "z" first.
    fused = rrf_fuse([["x", "z"], ["p1", "p2", "p3", "b"], ["q1", "q2", "q3", "b"]], k=0)
    scores = dict(fused)
    assert scores["z"] == scores["b"] == 0.5
    names = [doc_id for doc_id, _ in fused]
    assert names.index("z") < names.index("b")


def test_rrf_counts_a_repeated_id_once_per_ranking() -> None:
    assert rrf_fuse([["a", "a", "b"]], k=60) == [("a", 1 / 61), ("b", 1 / 63)]


def test_term_coverage_measures_what_bm25_can_see() -> None:
    from m3e_rag.index.sparse.bm25 import SparseIndex

    index = SparseIndex()
    index.upsert(["en1", "en2"], ["The Eiffel Tower was finished in 1889.", "Pandas eat bamboo every day."])
    assert index.term_coverage("Eiffel tower bamboo") == 1.0
    assert index.term_coverage("埃菲尔铁塔是哪一年建成的") == 0.0
    assert index.term_coverage("埃菲尔铁塔 1889") == pytest.approx(1 / len(set(tokenize_for_bm25("埃菲尔铁塔 1889"))))
    assert index.term_coverage("the of") == 0.0
    index.delete(["en1"])
    assert index.term_coverage("Eiffel") == 0.0
    assert SparseIndex().term_coverage("anything") == 0.0


def test_a_batched_upsert_builds_the_index_one_chunk_at_a_time_would() -> None:
    """upsert_terms of many ids (a log replay) takes a numpy path; it must leave the same index."""
    import random

    rng = random.Random(7)
    words = [f"w{i}" for i in range(60)] + ["熊猫", "竹子", "长城"]
    docs = {f"id{i}": [rng.choice(words) for _ in range(rng.randint(0, 12))] for i in range(300)}
    later = {f"id{i}": [rng.choice(words) for _ in range(rng.randint(1, 9))] for i in range(0, 300, 7)}
    later |= {f"new{i}": [rng.choice(words + ["fresh", "新词"]) for _ in range(5)] for i in range(40)}
    batched, single = SparseIndex(), SparseIndex()
    batched.upsert_terms(list(docs), list(docs.values()))
    singles = list(later.items())[:5]  # one at a time, between two batches: delta and segments interleave
    for chunk_id, terms in singles:
        batched.upsert_terms([chunk_id], [terms])
    rest = dict(list(later.items())[5:])
    batched.upsert_terms(list(rest), list(rest.values()))  # replaces held ids, adds new terms
    for chunk_id, terms in [*docs.items(), *later.items()]:
        single.upsert_terms([chunk_id], [terms])
    for index in (batched, single):
        index.delete(["id3", "new5"])
    assert batched._segments, "the batched path was not taken"
    assert batched.ids() == single.ids() and batched.fingerprint == single.fingerprint
    for chunk_id in sorted(batched.ids()):  # before folding: read back from the segments and the delta
        assert sorted(batched.terms(chunk_id)) == sorted(single.terms(chunk_id))
    for query in ("w1 w2 熊猫", "fresh 新词 w59", "竹子 长城 w0 w0"):
        assert batched.search(query, 50) == single.search(query, 50)
    a, b = batched.block(), single.block()  # folded: the same arrays
    assert a["ids"] == b["ids"] and a["terms"] == b["terms"]
    for name in ("doc_len", "ptr", "pos", "tf"):
        assert np.array_equal(a[name], b[name]), name
