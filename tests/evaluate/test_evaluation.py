"""Retrieval evaluation: metric arithmetic, task building, evaluate() end to end, the eval command.

Also the pipeline-level guarantees the evaluation leans on: the BM25 index stays in step with the
store through upsert, delete and reopen (and is rebuilt when its file is missing or corrupt), and
a CJK Extension B character survives ingest, persistence and sparse search.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError
from m3e_rag.evaluate.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from m3e_rag.evaluate.retrieval import EvalReport, ModeMetrics, evaluate
from m3e_rag.evaluate.tasks import load_task, task_from_jsonl, task_from_squad

# ------------------------------------------------------------------------------------------ metrics


def test_metrics_on_hand_made_rankings() -> None:
    ranked = ["a", "b", "c", "d", "e", "f"]
    assert recall_at_k(ranked, {"c"}, 1) == 0.0
    assert recall_at_k(ranked, {"c"}, 3) == 1.0
    assert recall_at_k(ranked, {"c", "z"}, 5) == 0.5
    assert recall_at_k(ranked, {"a", "f", "z", "y"}, 5) == 0.25
    assert mrr_at_k(ranked, {"c"}, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, {"e", "b"}, 10) == 0.5  # the first relevant counts
    assert mrr_at_k(ranked, {"f"}, 5) == 0.0  # beyond the cutoff
    assert mrr_at_k(ranked, {"z"}, 10) == 0.0
    # One relevant at rank 3: DCG = 1/log2(4) = 0.5, ideal 1.
    assert ndcg_at_k(ranked, {"c"}, 10) == pytest.approx(0.5)
    # Relevant b (rank 2) and z (missing): DCG = 1/log2(3); ideal = 1 + 1/log2(3).
    assert ndcg_at_k(ranked, {"b", "z"}, 10) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # Ideal DCG over min(|relevant|, k): three relevant, k = 2, top two relevant -> 1.0.
    assert ndcg_at_k(["r1", "r2", "x"], {"r1", "r2", "r3"}, 2) == pytest.approx(1.0)
    # Relevant at ranks 1 and 4: (1 + 1/log2(5)) / (1 + 1/log2(3)).
    assert ndcg_at_k(["r1", "x", "y", "r2"], {"r1", "r2"}, 10) == pytest.approx(
        (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k([], {"a"}, 10) == 0.0 and recall_at_k([], {"a"}, 10) == 0.0


def test_metrics_count_a_repeated_id_once() -> None:
    ranked = ["a", "a", "a", "b"]  # e.g. three chunks of one passage
    assert mrr_at_k(ranked, {"b"}, 2) == 0.5
    assert recall_at_k(ranked, {"b"}, 2) == 1.0
    assert ndcg_at_k(ranked, {"a"}, 10) == 1.0


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(InputError, match="relevant"):
        recall_at_k(["a"], set(), 5)
    with pytest.raises(InputError, match="positive integer"):
        mrr_at_k(["a"], {"a"}, 0)


def test_report_json_shape_and_table() -> None:
    metrics = ModeMetrics("dense", 10, {1: 0.5, 5: 0.75, 10: 1.0}, mrr=0.6, ndcg=0.7, queries=4)
    report = EvalReport("t", passages=3, chunks=5, queries=4, k=10, depth=40, modes={"dense": metrics})
    assert report.to_dict() == {
        "dense": {"recall@1": 0.5, "recall@5": 0.75, "recall@10": 1.0, "mrr@10": 0.6, "ndcg@10": 0.7}
    }
    table = report.format_table()
    assert "recall@5" in table and "0.7500" in table and "4 queries" in table


# ------------------------------------------------------------------------------------ task building

ZH = [
    ("大熊猫", "大熊猫生活在中国四川的山区，几乎只吃竹子。", [("q1", "大熊猫吃什么？"), ("q2", "大熊猫生活在哪里？")]),
    ("埃菲尔铁塔", "埃菲尔铁塔位于巴黎，于1889年建成。", [("q3", "埃菲尔铁塔是哪一年建成的？")]),
    ("光合作用", "光合作用是植物利用阳光把二氧化碳和水变成糖的过程。", [("q4", "植物怎样利用阳光制造糖？")]),
    ("长城", "长城是中国古代修建的军事防御工程，全长两万多公里。", [("q5", "长城有多长？")]),
    ("绿茶", "绿茶是不发酵的茶，西湖龙井是最有名的绿茶之一。", [("q6", "最有名的绿茶是什么？")]),
    ("Python", "Python 是一种编程语言，第一个版本发布于1991年。", [("q7", "Python 是什么时候发布的？")]),
]
EN = [
    ("Giant panda", "The giant panda lives in the mountains of Sichuan, China, and eats almost only bamboo.",
     [("q1", "What does the giant panda eat?"), ("q2", "Where does the giant panda live?")]),
    ("Eiffel Tower", "The Eiffel Tower stands in Paris and was completed in 1889.",
     [("q3", "In which year was the Eiffel Tower completed?")]),
    ("Photosynthesis", "Photosynthesis is the process by which plants use sunlight to turn carbon dioxide and "
     "water into sugar.", [("q4", "How do plants make sugar from sunlight?")]),
    ("Great Wall", "The Great Wall is an ancient Chinese military fortification more than 20,000 km long.",
     [("q5", "How long is the Great Wall?")]),
    ("Green tea", "Green tea is unfermented; West Lake Longjing is one of the most famous green teas.",
     [("q6", "What is the most famous green tea?")]),
    ("Python", "Python is a programming language whose first version was released in 1991.",
     [("q7", "When was Python released?")]),
]


def write_squad(path: Path, paragraphs: list[tuple[str, str, list[tuple[str, str]]]], per_article: int = 2) -> Path:
    data = []
    for start in range(0, len(paragraphs), per_article):
        group = paragraphs[start : start + per_article]
        data.append({
            "title": group[0][0],
            "paragraphs": [
                {"context": ctx, "qas": [{"id": qid, "question": q, "answers": []} for qid, q in qas]}
                for _, ctx, qas in group
            ],
        })
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_squad_task_same_file(tmp_path: Path) -> None:
    task = task_from_squad(write_squad(tmp_path / "zh.json", ZH))
    assert task.ids == [f"p{i}" for i in range(6)]
    assert [d.text for d in task.corpus] == [ctx for _, ctx, _ in ZH]
    assert [(q.qid, set(q.relevant)) for q in task.queries] == [
        ("q1", {"p0"}), ("q2", {"p0"}), ("q3", {"p1"}), ("q4", {"p2"}), ("q5", {"p3"}), ("q6", {"p4"}), ("q7", {"p5"})
    ]
    assert task.alignment == "same file" and task.limit(3).queries == task.queries[:3]
    assert len(task.limit(3).corpus) == 6


def test_squad_task_across_parallel_files_pairs_by_qa_id(tmp_path: Path) -> None:
    zh = write_squad(tmp_path / "zh.json", ZH)
    # The English file lists its paragraphs in another order: pairing must follow the qa ids.
    en = write_squad(tmp_path / "en.json", EN[::-1], per_article=3)
    task = task_from_squad(zh, corpus_file=en)
    assert task.alignment == "qa ids"
    by_id = {d.source: d.text for d in task.corpus}
    for query in task.queries:
        (pid,) = query.relevant
        english = {qid for _, ctx, qas in EN for qid, _ in qas if ctx == by_id[pid]}
        assert query.qid in english
    assert by_id["p0"].startswith("Python")  # corpus ids are positions in the corpus file


def test_squad_task_falls_back_to_position_and_refuses_mismatch(tmp_path: Path) -> None:
    zh = write_squad(tmp_path / "zh.json", ZH)
    renamed = [(t, ctx, [(f"en-{qid}", q) for qid, q in qas]) for t, ctx, qas in EN]
    en = write_squad(tmp_path / "en.json", renamed)
    task = task_from_squad(zh, corpus_file=en)
    assert task.alignment == "position"
    assert [set(q.relevant) for q in task.queries][:3] == [{"p0"}, {"p0"}, {"p1"}]
    short = write_squad(tmp_path / "short.json", renamed[:4])
    with pytest.raises(InputError, match="Cannot pair"):
        task_from_squad(zh, corpus_file=short)


def test_jsonl_task_with_jsonl_and_squad_corpus(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        {"id": "panda", "text": "大熊猫吃竹子。"}, {"id": 7, "text": "The Eiffel Tower is in Paris."},
    ])
    queries = write_jsonl(tmp_path / "q.jsonl", [
        {"query": "熊猫吃什么", "relevant_ids": ["panda"]},
        {"id": "x", "query": "Where is the Eiffel Tower?", "relevant_ids": [7, "panda"]},
    ])
    task = task_from_jsonl(queries, corpus)
    assert task.ids == ["panda", "7"] and task.alignment == "qrels"
    assert [(q.qid, set(q.relevant)) for q in task.queries] == [("q1", {"panda"}), ("x", {"7", "panda"})]
    assert load_task(queries, corpus).queries == task.queries

    squad = write_squad(tmp_path / "zh.json", ZH)
    on_squad = task_from_jsonl(write_jsonl(tmp_path / "q2.jsonl", [{"query": "长城", "relevant_ids": ["p3"]}]), squad)
    assert len(on_squad.corpus) == 6 and on_squad.queries[0].relevant == {"p3"}
    assert load_task(squad).alignment == "same file"


@pytest.mark.parametrize(
    ("queries", "corpus", "message"),
    [
        ("missing.json", None, "does not exist"),
        ("broken.json", None, "JSONL queries, which need --corpus"),
        ("q_unknown.jsonl", "corpus.jsonl", "not in the corpus"),
        ("q_norel.jsonl", "corpus.jsonl", "non-empty \"relevant_ids\""),
        ("q_bad.jsonl", "corpus.jsonl", "line 2, is not JSON"),
        ("q_ok.jsonl", "corpus_dup.jsonl", "appears twice"),
        ("notsquad.json", "corpus.jsonl", "needs a \"query\" string"),
    ],
)
def test_bad_files_raise_input_errors(tmp_path: Path, queries: str, corpus: str | None, message: str) -> None:
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": "a", "text": "甲"}, {"id": "b", "text": "乙"}])
    write_jsonl(tmp_path / "corpus_dup.jsonl", [{"id": "a", "text": "甲"}, {"id": "a", "text": "乙"}])
    write_jsonl(tmp_path / "q_unknown.jsonl", [{"query": "甲", "relevant_ids": ["zzz"]}])
    write_jsonl(tmp_path / "q_norel.jsonl", [{"query": "甲", "relevant_ids": []}])
    write_jsonl(tmp_path / "q_ok.jsonl", [{"query": "甲", "relevant_ids": ["a"]}])
    (tmp_path / "q_bad.jsonl").write_text('{"query": "甲", "relevant_ids": ["a"]}\n{oops\n', encoding="utf-8")
    (tmp_path / "broken.json").write_text('{"data": [', encoding="utf-8")
    (tmp_path / "notsquad.json").write_text('{"version": 1}', encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_task(tmp_path / queries, None if corpus is None else tmp_path / corpus)


def test_squad_shape_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "1"}]}]}]}), encoding="utf-8")
    with pytest.raises(InputError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]"):
        task_from_squad(path)


# ---------------------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def bilingual_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("squad")
    return write_squad(folder / "zh.json", ZH), write_squad(folder / "en.json", EN)


def test_evaluate_plumbing_with_the_tiny_model(tmp_path: Path, bilingual_files: tuple[Path, Path],
                                               tiny_model_path: Path) -> None:
    task = task_from_squad(bilingual_files[0]).limit(3)
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path), chunk_tokens=16, overlap_tokens=0)
    report = evaluate(task, rag, ("sparse", "dense"), k=3, depth=5)
    assert list(report.modes) == ["sparse", "dense"] and report.queries == 3 and report.depth == 5
    assert report.chunks > report.passages == 6  # short chunks: passages span several
    assert set(report.to_dict()["dense"]) == {"recall@1", "recall@3", "mrr@3", "ndcg@3"}
    # Random weights rank at random, but BM25 finds the passage of "大熊猫吃什么？" first.
    assert report.modes["sparse"].recall[1] == 1.0
    with pytest.raises(InputError, match="mode must be one of"):
        evaluate(task, rag, ("fuzzy",))


@pytest.mark.slow
def test_evaluate_cross_lingual_end_to_end(tmp_path: Path, bilingual_files: tuple[Path, Path],
                                           bilingual_model_path: Path) -> None:
    zh, en = bilingual_files
    task = task_from_squad(zh, corpus_file=en)
    rag = RAGPipeline(tmp_path / "idx", model_name=str(bilingual_model_path))
    stages: set[str] = set()
    report = evaluate(task, rag, ("dense", "sparse", "hybrid"), progress=lambda s, d, t: stages.add(s))
    assert stages == {"index", "encode", "dense", "sparse", "hybrid"}
    assert report.passages == 6 and report.chunks >= 6 and report.queries == 7
    shape = {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    assert set(report.to_dict()) == {"dense", "sparse", "hybrid"}
    assert all(set(v) == shape for v in report.to_dict().values())
    dense, hybrid = report.modes["dense"], report.modes["hybrid"]
    assert dense.recall[10] == hybrid.recall[10] == 1.0  # six passages: everything is in the top 10
    assert dense.recall[1] >= 6 / 7 and dense.mrr >= 0.9  # an easy set for a real bilingual model
    assert hybrid.mrr >= dense.mrr - 0.05  # BM25 sees no Chinese terms in English text: no harm done
    assert report.modes["sparse"].short_rankings == 7  # BM25 matches only a few numbers and names
    assert 0 <= report.modes["sparse"].mrr <= 1

    # The same index again: nothing is re-embedded; another corpus in it is refused.
    again = evaluate(task, rag, ("dense",))
    assert again.to_dict()["dense"] == report.to_dict()["dense"]
    rag.ingest(texts=["无关的文字。"], sources=["stranger"])
    with pytest.raises(InputError, match="not in this task's corpus"):
        evaluate(task, rag, ("dense",))


def test_search_with_a_precomputed_query_vector(tmp_path: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["第一段文字。", "Second text.", "第三段。"], sources=["a", "b", "c"])
    vec = rag.encoder.encode_queries(["文字"])[0]
    for mode in ("dense", "hybrid"):
        assert [h.id for h in rag.search("文字", k=3, mode=mode, query_vector=vec)] == [
            h.id for h in rag.search("文字", k=3, mode=mode)
        ]
    with pytest.raises(InputError, match="query_vector has shape"):
        rag.search("文字", query_vector=[0.1, 0.2])


def test_hybrid_fusion_mutes_bm25_by_squared_coverage() -> None:
    from m3e_rag.retrieve.fusion import HybridWeights, fuse_hybrid
    from m3e_rag.types import RetrievedChunk

    dense = [RetrievedChunk(i, i, 0.9) for i in "abcd"]
    sparse = [RetrievedChunk(i, i, 5.0) for i in "dc"]

    def order(coverage: float, **weights: float) -> str:
        # The RRF rule that was the default before z-score fusion (issue #13), still offered.
        options: dict[str, Any] = {"dense": 1.0, "sparse": 1.0, "method": "rrf", "coverage_power": 2.0, **weights}
        return "".join(r.id for r in fuse_hybrid(dense, sparse, HybridWeights(**options), coverage))

    assert order(0.0) == "abcd"  # BM25 sees nothing: the dense ranking exactly
    assert order(1.0) == "dcab"  # full coverage: plain RRF (d: 1/64 + 1/61 beats a: 1/61)
    # A cross-lingual fragment (coverage 0.15): squared (weight 0.0225) it only swaps neighbours;
    # linear (weight 0.15) it lifts BM25's picks over dense's first.
    assert order(0.15) == "acbd"
    assert order(0.15, coverage_power=1.0) == "cdab"
    assert order(0.15, coverage_power=0.0) == "dcab"
    with pytest.raises(InputError, match="coverage_power"):
        order(0.5, coverage_power=-1.0)


# -------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, model: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if model is not None:
        env["M3E_MODEL"] = str(model)
    return subprocess.run([sys.executable, "-m", "m3e_rag", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_cli_eval_prints_metrics_json(tmp_path: Path, bilingual_files: tuple[Path, Path],
                                      bilingual_model_path: Path) -> None:
    zh, en = bilingual_files
    proc = run_cli("eval", "--queries", str(zh), "--corpus", str(en), "--json", model=bilingual_model_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert set(data) == {"dense", "sparse", "hybrid"}
    for metrics in data.values():
        assert set(metrics) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert data["dense"]["recall@10"] == 1.0

    table = run_cli("eval", "--queries", str(zh), "--modes", "sparse", "-k", "3", "--limit", "2",
                    "--index", str(tmp_path / "idx"), model=bilingual_model_path)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "recall@3" in table.stdout and "mrr@3" in table.stdout and "2 queries" in table.stdout
    assert "\r" not in table.stderr  # no progress bar when stderr is not a terminal


def test_cli_eval_bad_input_is_one_line_exit_2(tmp_path: Path, tiny_model_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text('{"query": "x", "relevant_ids": ["a"]}\n', encoding="utf-8")
    cases = [
        (["--queries", str(tmp_path / "nope.json")], "does not exist"),
        (["--queries", str(tmp_path / "q.jsonl")], "need --corpus"),
        (["--queries", str(tmp_path / "q.jsonl"), "--corpus", str(tmp_path / "q.jsonl"), "--modes", "fuzzy"],
         "mode must be one of"),
    ]
    for args, message in cases:
        proc = run_cli("eval", *args, model=tiny_model_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


# ------------------------------------------------------------ sparse index in step with the store


def reopen(index: Path, model: Path) -> RAGPipeline:
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    return RAGPipeline(index, model_name=str(model))


def test_sparse_index_follows_upsert_delete_and_reopen(tmp_path: Path, tiny_model_path: Path) -> None:
    index = tmp_path / "idx"
    rag = RAGPipeline(index, model_name=str(tiny_model_path))
    rag.ingest(texts=["大熊猫吃竹子。", "长城很长。", "Green tea is unfermented."], sources=["panda", "wall", "tea"])
    ids = rag.add_texts(["西湖龙井是绿茶。"], ids=["longjing"])
    rag.add_texts(["龙井茶产于杭州。"], ids=ids)  # an upsert replaces the text, BM25 included
    assert rag.delete(source="wall") == 1
    sparse_dir = index / "sparse_bm25"

    def saved_ids() -> set[str]:
        from m3e_rag.index.sparse.folder import load_index

        return load_index(sparse_dir).ids()

    again = reopen(index, tiny_model_path)
    store_ids = set(again.store.all_ids())
    assert set(again.sparse_index.ids()) == store_ids and len(store_ids) == 3
    assert again.search("长城", k=5, mode="sparse") == []
    assert [h.id for h in again.search("杭州", k=5, mode="sparse")] == ["longjing"]
    assert again.search("西湖", k=5, mode="sparse") == []
    assert saved_ids() == store_ids

    shutil.rmtree(sparse_dir)  # missing: rebuilt from the store on open, and saved again
    rebuilt = reopen(index, tiny_model_path)
    assert set(rebuilt.sparse_index.ids()) == store_ids and saved_ids() == store_ids
    assert [h.source for h in rebuilt.search("竹子", k=1, mode="sparse")] == ["panda"]

    (sparse_dir / "CURRENT").write_bytes(b"\x00 not json {")  # corrupt: rebuilt, never a failed search
    healed = reopen(index, tiny_model_path)
    assert [h.source for h in healed.search("竹子", k=1, mode="hybrid")] == ["panda"]
    assert set(healed.sparse_index.ids()) == store_ids
    assert saved_ids() == store_ids

    # A stale file (another id set) is rebuilt too.
    stale = reopen(index, tiny_model_path)
    stale.sparse_index.upsert(["ghost"], ["幽灵"])
    stale._save_sparse()
    fresh = reopen(index, tiny_model_path)
    assert "ghost" not in fresh.sparse_index.ids() and set(fresh.sparse_index.ids()) == store_ids


def test_cjk_extension_b_round_trip_through_the_pipeline(tmp_path: Path, tiny_model_path: Path) -> None:
    text = "𠀀是扩展B区的第一个汉字，码位U+20000。"
    index = tmp_path / "idx"
    rag = RAGPipeline(index, model_name=str(tiny_model_path))
    rag.ingest(texts=[text, "普通的中文句子。"], sources=["extb", "plain"])
    hits = reopen(index, tiny_model_path).search("𠀀", k=3, mode="sparse")
    assert [h.source for h in hits] == ["extb"]
    assert hits[0].text == text and "\U00020000" in hits[0].text
    assert text[hits[0].metadata["start"] : hits[0].metadata["end"]] == hits[0].text
    hybrid = {h.source: h for h in reopen(index, tiny_model_path).search("𠀀", k=2, mode="hybrid")}
    # Two chunks only: their order is the random-weight model's; the text must come back intact.
    assert hybrid["extb"].text == text and hybrid["extb"].metadata["sparse_score"] > 0
    from m3e_rag.index.sparse.folder import load_index

    assert "𠀀" in load_index(index / "sparse_bm25").terms(hits[0].id)
