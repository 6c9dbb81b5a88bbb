"""Answer-in-context recall (issue 21): the metric, whole-document sets, the eval flag, the benchmark.

The metric is checked on hand-made pieces with a one-token-per-character tokenizer, so every
expected count is worked out by hand: an answer inside, straddling and outside a piece, a budget
that cuts a piece in the middle, and offsets against string search.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3e_rag.errors import InputError
from m3e_rag.evaluate.context_recall import (
    Piece,
    TokenCounter,
    answer_in_context,
    fit_to_budget,
    locate_piece,
    parse_budgets,
    score_context,
)
from m3e_rag.evaluate.tasks import AnswerSpan, EvalQuery, RetrievalTask, load_task, task_from_squad
from m3e_rag.types import Document

REPO = Path(__file__).resolve().parents[2]


class CharTokenizer:
    """One token per non-space character, offsets like a fast tokenizer's (no model needed)."""

    def __call__(self, texts: list[str], *, add_special_tokens: bool = False,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:
        spans = [[(i, i + 1) for i, ch in enumerate(t) if not ch.isspace()] for t in texts]
        return {"input_ids": [[0] * len(s) for s in spans], "offset_mapping": spans}


def chars() -> TokenCounter:
    return TokenCounter(CharTokenizer(), "one token per character")


DOC = "0123456789abcdefghij"  # source "d": every character one token


def piece(start: int, end: int, source: str = "d") -> Piece:
    return Piece(source, start, end, DOC[start:end])


def span(start: int, end: int, source: str = "d") -> AnswerSpan:
    return AnswerSpan(source, start, end, DOC[start:end])


# ------------------------------------------------------------------------------------------ metric


def test_answer_inside_a_piece_is_a_hit_and_tokens_are_the_pieces() -> None:
    visible, used = fit_to_budget([piece(0, 5), piece(10, 15)], 100, chars())
    assert used == 10
    assert answer_in_context(visible, [span(11, 14)])
    assert answer_in_context(visible, [span(0, 5)])  # the whole piece, both edges included


def test_answer_straddling_two_pieces_is_not_a_hit() -> None:
    visible, _ = fit_to_budget([piece(0, 10), piece(10, 20)], 100, chars())
    assert not answer_in_context(visible, [span(8, 12)])  # half in each: the LLM gets two passages
    # One piece that holds it whole makes it a hit, wherever it ranks.
    visible, _ = fit_to_budget([piece(0, 10), piece(10, 20), piece(6, 14)], 100, chars())
    assert answer_in_context(visible, [span(8, 12)])


def test_answer_outside_every_piece_or_in_another_source_is_a_miss() -> None:
    visible, _ = fit_to_budget([piece(0, 5), piece(10, 15)], 100, chars())
    assert not answer_in_context(visible, [span(6, 9)])
    assert not answer_in_context(visible, [span(11, 14, source="other")])
    # Any one of several gold answers is enough.
    assert answer_in_context(visible, [span(6, 9), span(2, 3)])


def test_budget_cut_in_the_middle_of_a_piece() -> None:
    pieces = [piece(0, 4), piece(10, 20), piece(4, 8)]
    visible, used = fit_to_budget(pieces, 9, chars())
    assert used == 9  # 4 whole + 5 of the second; the third is never reached
    assert [v.piece for v in visible] == pieces[:2]
    assert answer_in_context(visible, [span(12, 15)])  # inside the 5 visible characters "abcde"
    assert not answer_in_context(visible, [span(14, 16)])  # its tail was cut off
    assert not answer_in_context(visible, [span(5, 7)])  # in the third piece, beyond the budget
    visible, used = fit_to_budget(pieces, 4, chars())
    assert used == 4 and len(visible) == 1
    visible, used = fit_to_budget(pieces, 1000, chars())
    assert used == 18 and len(visible) == 3  # the budget is a ceiling, not what is spent


def test_offsets_not_string_search() -> None:
    doc = "北京是首都。上海不是首都。"
    first = doc.index("首都")
    second = doc.index("首都", first + 1)
    early = Piece("d", 0, 6, doc[0:6])  # holds the text 首都 at its first occurrence
    gold = AnswerSpan("d", second, second + 2, "首都")  # the set's answer is the second one
    visible, _ = fit_to_budget([early], 100, chars())
    assert "首都" in early.text and not answer_in_context(visible, [gold])
    late = Piece("d", 6, len(doc), doc[6:])
    visible, _ = fit_to_budget([early, late], 100, chars())
    assert answer_in_context(visible, [gold])


def test_locate_piece_uses_the_recorded_start_then_the_nearest_occurrence() -> None:
    doc = "abc xyz abc xyz abc"
    assert locate_piece("abc", "d", doc, hint=8) == Piece("d", 8, 11, "abc")  # recorded start holds it
    assert locate_piece("abc", "d", doc, hint=15) == Piece("d", 16, 19, "abc")  # wrong start: nearest
    assert locate_piece("abc", "d", doc) == Piece("d", 0, 3, "abc")  # no start: the first
    assert locate_piece("qqq", "d", doc, hint=0) is None  # the splitter changed the text
    lost = Piece.unlocated("d", "abc")
    visible, used = fit_to_budget([lost], 100, chars())
    assert used == 3 and not answer_in_context(visible, [AnswerSpan("d", 0, 3, "abc")])


def test_token_counter_with_a_real_fast_tokenizer(tiny_model_path: Path) -> None:
    counter = TokenCounter.from_pretrained(str(tiny_model_path))
    text = "大熊猫吃竹子 bamboo"
    ends = counter.token_ends(text)
    assert ends[:6] == [1, 2, 3, 4, 5, 6]  # one token per CJK character in M3E's WordPiece
    assert ends[-1] == len(text) and counter.count(text) == len(ends)
    visible, used = fit_to_budget([Piece("d", 10, 10 + len(text), text)], 3, counter)
    assert used == 3 and visible[0].end == 13
    with pytest.raises(InputError, match="character offsets"):
        TokenCounter(object(), "no tokenizer")


def hand_task() -> RetrievalTask:
    corpus = [Document(DOC, source="d")]
    queries = [
        EvalQuery("q1", "one", frozenset({"d"}), (span(2, 4),)),
        EvalQuery("q2", "two", frozenset({"d"}), (span(12, 14),)),
        EvalQuery("q3", "three", frozenset({"d"}), ()),  # no answer span: not scored
        EvalQuery("q4", "four", frozenset({"d"}), (span(17, 19),)),
    ]
    return RetrievalTask(corpus, queries, "hand")


def test_score_context_per_budget_per_query_and_paired() -> None:
    ranked = {0: [piece(0, 5), piece(10, 20)], 1: [piece(5, 10), piece(10, 20)],
              3: [piece(0, 10), piece(10, 17), piece(17, 20)]}
    asked: list[int] = []

    def wide(n: int, query: EvalQuery, budget: int) -> list[Piece]:
        return ranked[n]

    def tight(n: int, query: EvalQuery, budget: int) -> list[Piece]:
        asked.append(budget)
        return [p for a in query.answers for p in [piece(a.start, a.end)]]  # exactly the answer

    report = score_context(hand_task(), {"wide": wide, "tight": tight}, chars(), [16, 4], baseline="wide")
    assert report.budgets == (4, 16) and report.queries == 3 and report.unscored == 1
    w4, w16 = report.systems["wide"][4], report.systems["wide"][16]
    assert w4.hits == [1, 0, 0] and w4.tokens == [4, 4, 4]
    assert w16.hits == [1, 1, 0] and w16.tokens == [15, 15, 16]  # q4's answer lies past the cut
    assert report.systems["tight"][4].hits == [1, 1, 1] and report.systems["tight"][4].mean_tokens == 2
    assert sorted(asked) == [4, 4, 4, 16, 16, 16]  # asked once per query and budget
    c = report.compare("tight", 4)
    assert (c.wins, c.losses, c.ties) == (2, 0, 1) and c.diff == pytest.approx(2 / 3)
    assert c.metric == "answer-in-context@4" and c.baseline == "wide"
    reach = report.tokens_to_reach(0.95)
    assert reach["tight"] == {"budget": 4, "mean_tokens": 2.0, "target_recall": 0.95}
    assert reach["wide"] is None  # 2/3 never reaches 95% of the best (1.0)
    data = report.to_dict()
    assert data["systems"]["wide"]["16"] == {"recall": 0.6667, "mean_tokens": 15.3}
    assert len(data["paired"]) == 2 and "one token per character" in report.format_table()


def test_score_context_refuses_what_it_cannot_score() -> None:
    task = hand_task()
    systems = {"s": lambda n, q, b: []}
    with pytest.raises(InputError, match="baseline 'x'"):
        score_context(task, systems, chars(), [8], baseline="x")
    with pytest.raises(InputError, match="positive number of tokens"):
        score_context(task, systems, chars(), [0])
    no_answers = RetrievalTask(task.corpus, [EvalQuery("q", "x", frozenset({"d"}))], "jsonl")
    with pytest.raises(InputError, match="answer span"):
        score_context(no_answers, systems, chars(), [8])
    assert parse_budgets("512, 256,256") == (256, 512)
    for bad in ("", "12a", "-5", "0"):
        with pytest.raises(InputError):
            parse_budgets(bad)


# ------------------------------------------------------------------------- whole-document sets


def write_squad(path: Path, articles: list[list[tuple[str, list[tuple[str, str, list[tuple[int, str]]]]]]]) -> Path:
    """articles: [[(context, [(qa id, question, [(answer_start, text)])])]]."""
    data = [{"title": f"t{a}", "paragraphs": [
        {"context": ctx, "qas": [{"id": qid, "question": q, "answers": [{"answer_start": s, "text": t} for s, t in ans]}
                                 for qid, q, ans in qas]} for ctx, qas in paras]} for a, paras in enumerate(articles)]
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False), encoding="utf-8")
    return path


ZH = [
    [("大熊猫生活在四川。它们吃竹子。", [("a", "大熊猫生活在哪里？", [(6, "四川")])]),
     ("大熊猫每天吃很多竹子。", [("b", "大熊猫吃什么？", [(8, "竹子")])])],
    [("长城在中国北方，全长两万多公里。", [("c", "长城有多长？", [(10, "两万多公里")])])],
]
EN = [
    [("Giant pandas live in Sichuan. They eat bamboo.", [("a", "Where?", [(21, "Sichuan")])]),
     ("Pandas eat a lot of bamboo every day.", [("b", "What?", [(20, "bamboo")])])],
    [("The Great Wall is in northern China and over 20,000 km long.", [("c", "How long?", [(45, "20,000 km")])])],
]


def check_spans(task: RetrievalTask) -> int:
    corpus = {d.source: d.text for d in task.corpus}
    count = 0
    for q in task.queries:
        for a in q.answers:
            assert corpus[a.source][a.start : a.start + len(a.text)] == a.text and a.end == a.start + len(a.text)
            assert a.source in q.relevant
            count += 1
    return count


def test_document_sets_join_articles_and_shift_offsets_exactly(tmp_path: Path) -> None:
    zh, en = write_squad(tmp_path / "zh.json", ZH), write_squad(tmp_path / "en.json", EN)
    para = task_from_squad(zh)
    doc = task_from_squad(zh, granularity="document")
    assert para.ids == ["p0", "p1", "p2"] and doc.ids == ["d0", "d1"]
    assert doc.corpus[0].text == ZH[0][0][0] + "\n\n" + ZH[0][1][0] and doc.granularity == "document"
    assert [q.relevant for q in doc.queries] == [{"d0"}, {"d0"}, {"d1"}]
    assert doc.queries[1].answers == (AnswerSpan("d0", len(ZH[0][0][0]) + 2 + 8, len(ZH[0][0][0]) + 12, "竹子"),)
    assert check_spans(para) == check_spans(doc) == 3
    cross = task_from_squad(zh, en, granularity="document")  # zh questions, the English file's answers
    assert check_spans(cross) == 3 and cross.queries[2].answers[0].text == "20,000 km"
    assert load_task(zh, granularity="document").ids == ["d0", "d1"]


def test_bad_answer_offsets_are_repaired_or_dropped_and_counted(tmp_path: Path) -> None:
    path = write_squad(tmp_path / "bad.json", [[("北京是首都，北京很大。", [
        ("x", "q1", [(-1, "首都"), (3, "上海")]),  # -1 -> found at 3 (repaired); 上海 is nowhere (dropped)
        ("y", "q2", [(7, "北京")]),  # points at 很大: the nearest 北京 is at 6
        ("z", "q3", [(-1, "不在这里")]),  # no locatable answer: the query has none
    ])]])
    task = task_from_squad(path)
    assert task.answers_repaired == 2 and task.answers_dropped == 2
    assert [q.answers for q in task.queries] == [
        (AnswerSpan("p0", 3, 5, "首都"),), (AnswerSpan("p0", 6, 8, "北京"),), ()]


def test_granularity_errors_are_clear(tmp_path: Path) -> None:
    zh = write_squad(tmp_path / "zh.json", ZH)
    with pytest.raises(InputError, match="granularity must be one of"):
        task_from_squad(zh, granularity="sentence")  # type: ignore[arg-type]
    q = tmp_path / "q.jsonl"
    q.write_text('{"query": "x", "relevant_ids": ["p0"]}\n', encoding="utf-8")
    with pytest.raises(InputError, match="needs a SQuAD file"):
        load_task(q, zh, granularity="document")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.integers(0, 29), st.integers(1, 5)),
                         min_size=1, max_size=4), min_size=1, max_size=4))
def test_document_offsets_shift_exactly_for_any_articles(
    tmp_path_factory: pytest.TempPathFactory, articles: list[list[tuple[str, int, int]]]
) -> None:
    raw = []
    for a, paras in enumerate(articles):
        group = []
        for p, (ctx, start, length) in enumerate(paras):
            s = min(start, len(ctx) - 1)
            group.append((ctx, [(f"{a}-{p}", "q?", [(s, ctx[s : s + length])])]))
        raw.append(group)
    path = write_squad(tmp_path_factory.mktemp("h") / "s.json", raw)
    doc = task_from_squad(path, granularity="document")
    assert len(doc.corpus) == len(articles)
    # Every answer was given at its true offset: none is moved or lost, each is exact in its document.
    assert check_spans(doc) == sum(len(p) for p in articles) and doc.answers_dropped == 0


# --------------------------------------------------------------------------- the eval command


def run_cli(*args: str, model: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", M3E_MODEL=str(model))
    return subprocess.run([sys.executable, "-m", "m3e_rag", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_cli_eval_context_budgets(tmp_path: Path, tiny_model_path: Path) -> None:
    zh = write_squad(tmp_path / "zh.json", ZH)
    proc = run_cli("eval", "--queries", str(zh), "--modes", "dense,sparse", "--granularity", "document",
                   "--context-budgets", "4,64", "--json", model=tiny_model_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert {"dense", "sparse"} <= set(data)  # passage metrics stay
    ctx = data["context"]
    assert ctx["queries"] == 3 and ctx["baseline"] == "dense top-10" and "tiny" in ctx["tokenizer"]
    assert set(ctx["systems"]) == {"dense top-10", "sparse top-10", "dense context", "sparse context"}
    for by in ctx["systems"].values():
        assert set(by) == {"4", "64"} and by["4"]["mean_tokens"] <= 4
        assert by["64"]["recall"] == 1.0  # two small documents: everything fits in 64 tokens
    assert {c["metric"] for c in ctx["paired"]} == {"answer-in-context@4", "answer-in-context@64"}
    table = run_cli("eval", "--queries", str(zh), "--modes", "sparse", "--context-budgets", "64",
                    model=tiny_model_path)
    assert table.returncode == 0 and "answer-in-context recall" in table.stdout and "@64" in table.stdout


def test_cli_eval_context_budgets_bad_input_is_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    zh = write_squad(tmp_path / "zh.json", ZH)
    (tmp_path / "q.jsonl").write_text('{"query": "x", "relevant_ids": ["p0"]}\n', encoding="utf-8")
    cases = [
        (["--queries", str(zh), "--context-budgets", "256,lots"], "not one"),
        (["--queries", str(tmp_path / "q.jsonl"), "--corpus", str(zh), "--context-budgets", "256"], "answer span"),
        (["--queries", str(tmp_path / "q.jsonl"), "--corpus", str(zh), "--granularity", "document"],
         "needs a SQuAD file"),
        (["--pairs", str(tmp_path / "q.jsonl"), "--context-budgets", "256"], "--context-budgets"),
    ]
    for args, message in cases:
        proc = run_cli("eval", *args, model=tiny_model_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


# ------------------------------------------------------------------------------- the benchmark


@pytest.mark.slow
def test_context_benchmark_smoke(tmp_path: Path, tiny_model_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cmrc2018").mkdir(parents=True)
    (data / "xquad").mkdir()
    write_squad(data / "cmrc2018" / "cmrc2018_dev.json", [[p] for article in ZH for p in article])
    write_squad(data / "xquad" / "xquad.zh.json", ZH)
    write_squad(data / "xquad" / "xquad.en.json", EN)
    out = tmp_path / "context.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "context.py"), "--data", str(data), "--model",
         str(tiny_model_path), "--budgets", "8,64", "--sample", "2", "--out", str(out), "--cache", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["results"]) == {"cmrc2018 paragraph", "xquad-zh-zh paragraph", "xquad-zh-zh document",
                                      "xquad-zh-en paragraph", "xquad-zh-en document"}
    assert any("cmrc2018" in note for note in result["notes"])  # one paragraph per article: not rerun
    for r in result["results"].values():
        assert r["queries"] == 2 and r["baseline"] == "m3e-rag top-k"
        assert {"m3e-rag top-k", "LangChain tutorial", "LlamaIndex defaults"} <= set(r["systems"])
        for name in ("LangChain tutorial", "LlamaIndex defaults"):
            placed = r["index"][name]["placement"]
            assert placed["unplaced"] == 0 and placed["by_recorded_offset"] > 0
        assert set(r["tokens_to_95pct_of_best"]) == set(r["systems"])
    assert "m3e-rag top-k" in proc.stdout and "@64" in proc.stdout
