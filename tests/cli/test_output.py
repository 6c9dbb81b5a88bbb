"""What ``m3e-rag`` prints for a person (issue 23): the text around the match, named scores, an ingest bar with a
total, a rate and an ETA on a terminal, and the loader options as flags."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.evaluate.retrieval import EvalReport, ModeMetrics
from m3e_rag.retrieve.snippets import score_label, snippet
from tests.support import standins

FILLER = "这一段讲的是别的事情，和问题没有关系。" * 12
ANSWER = "埃菲尔铁塔高三百三十米。"
#: One chunk (under 256 tokens) longer than the 200 characters a hit shows, the answer in its middle.
ONE_CHUNK = FILLER[: 19 * 6] + ANSWER + FILLER[: 19 * 6]


def test_snippet_is_a_window_around_the_first_matched_term_with_ellipses() -> None:
    """Before: the demo cut every hit at its first 90 characters (the answer was past them in 2 of 5 queries)."""
    text = FILLER + ANSWER + FILLER
    shown = snippet(text, "埃菲尔铁塔有多高？", width=60)  # terminal columns: a Chinese character takes two
    assert "埃菲尔铁塔高三百三十米" in shown and shown.startswith("…") and shown.endswith("…")
    assert 28 <= len(shown) - 2 <= 30
    # English: the question's own word ("tall") wins over the topic words every sentence repeats; no cut words.
    english = ("The Eiffel Tower stands in Paris. " * 6 + "The Eiffel Tower is 330 metres tall. "
               + "The Eiffel Tower has three levels. " * 6)
    shown = snippet(english, "How tall is the Eiffel Tower?", width=60)
    assert "330 metres tall" in shown and shown.startswith("…")
    assert shown[1:].split()[0] in {"The", "Eiffel", "Tower", "stands", "in", "Paris.", "is", "330"}
    assert snippet("短文本。", "熊猫") == "短文本。"  # short text: whole, no ellipsis
    assert snippet(FILLER, "xyzzy", width=20) == FILLER[:10] + "…"  # nothing matched: the beginning


def test_score_labels_name_what_the_score_is() -> None:
    assert [score_label(m) for m in ("dense", "sparse", "hybrid")] == ["cosine", "BM25", "fused"]
    assert score_label("hybrid", reranked=True) == "rerank"


@pytest.fixture(scope="module")
def long_index(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    folder = tmp_path_factory.mktemp("output") / "idx"
    RAGPipeline(folder, model_name=str(tiny_model_path)).ingest(
        texts=[ONE_CHUNK, "绿茶是不发酵茶。"], sources=["tower", "tea"]
    )
    return folder


@pytest.mark.parametrize(("mode", "label"), [("sparse", "BM25"), ("dense", "cosine"), ("hybrid", "fused")])
def test_search_text_output_labels_scores_and_shows_the_match(mode: str, label: str, long_index: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `1. [-0.2900] source` and the first 200 characters, whatever the score was."""
    assert main(["search", "埃菲尔铁塔", "--index", str(long_index), "--mode", mode, "-k", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    first = next(n for n, line in enumerate(lines) if line.endswith("] tower"))
    assert lines[first].startswith(("1. [", "2. [")) and f"[{label} " in lines[first]
    assert ANSWER[:-1] in lines[first + 1] and lines[first + 1].strip().startswith("…")
    assert f"({label}: " in lines[-1]  # what the score means, once, under the hits


def test_reranked_hits_say_rerank_and_keep_the_first_stage_score(long_index: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    reranker = str(standins.tiny_cross_encoder())
    assert main(["search", "埃菲尔铁塔", "--index", str(long_index), "--reranker", reranker, "-k", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("1. [rerank ") and "; fused " in first


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ingest_bar_on_a_terminal_has_a_total_a_rate_and_an_eta(tmp_path: Path, tiny_model_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `ingest: 0chunk` the whole time, then the final count: no total, no ETA."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.txt").write_text(FILLER + f"第{i}篇。", encoding="utf-8")
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    argv = ["ingest", str(docs), "--index", str(tmp_path / "idx"), "--model", str(tiny_model_path),
            "--chunk-tokens", "64", "--overlap-tokens", "0", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # --json: stdout is the report, as before
    chunks = report["chunks_added"]
    drawn = terminal.getvalue().split("\r")
    assert "ingest 3 files, " in drawn[1] and "/" in drawn[1].split("|")[-1]  # a total from the first frame on
    assert f"{chunks}/{chunks} [" in drawn[-1] and ("chunk/s]" in drawn[-1] or "s/chunk]" in drawn[-1])  # a rate
    assert any("<" in frame and "<?" not in frame for frame in drawn)  # an ETA once the rate is known


def test_ingest_off_a_terminal_draws_no_bar(tmp_path: Path, tiny_model_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("熊猫吃竹子。", encoding="utf-8")
    assert main(["ingest", str(tmp_path / "a.txt"), "--index", str(tmp_path / "idx"), "--model",
                 str(tiny_model_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["chunks_added"] == 1 and "chunk" not in err


def test_counting_encoder_reports_each_batch_and_embeds_the_same(tiny_model_path: Path) -> None:
    """The bar moves per embedded batch, not per 256-chunk step; the vectors are the encoder's own."""
    from m3e_rag.cli.progress import CountingEncoder
    from m3e_rag.encode.encoder import M3EEncoder

    texts = [f"第{i}句话讲熊猫。" for i in range(10)]
    counting = CountingEncoder(str(tiny_model_path), device="cpu", batch_size=4)
    seen: list[int] = []
    counting.on_embedded = seen.append
    vectors = counting.encode_documents(texts)
    assert seen == [4, 4, 2]
    plain = M3EEncoder(str(tiny_model_path), device="cpu", batch_size=4).encode_documents(texts)
    assert np.allclose(vectors, plain, atol=1e-5)


def test_loader_options_are_flags_and_the_skip_reason_names_them(tmp_path: Path, tiny_model_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a CSV without a `text` column was skipped with "pass text_column=", and the CLI had no such flag."""
    (tmp_path / "faq.csv").write_text("id,content\n1,熊猫吃竹子。\n2,绿茶是不发酵茶。\n", encoding="utf-8")
    (tmp_path / "notes.jsonl").write_text('{"body": "长城很长。"}\n', encoding="utf-8")
    common = ["--index", str(tmp_path / "idx"), "--model", str(tiny_model_path), "--json"]
    assert main(["ingest", str(tmp_path / "faq.csv"), str(tmp_path / "notes.jsonl"), *common]) == 0
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads(capsys.readouterr().out)["files_skipped"]}
    assert "--text-column" in skipped["faq.csv"] and "--text-field" in skipped["notes.jsonl#0"]
    assert main(["ingest", str(tmp_path / "faq.csv"), str(tmp_path / "notes.jsonl"), "--text-column", "content",
                 "--text-field", "body", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files_skipped"] == [] and report["chunks_added"] == 3


def test_eval_says_what_its_counts_count() -> None:
    """Before: "fewer than 10 passages returned: {'dense': 13}" (13 was a number of queries)."""
    dense = ModeMetrics("dense", 10, {1: 0.5, 5: 0.7, 10: 0.8}, 0.6, 0.65, queries=50, short_rankings=13)
    table = EvalReport("squad", passages=40, chunks=44, queries=50, k=10, depth=40, modes={"dense": dense},
                       model="m").format_table()
    assert "fewer than 10 distinct passages came back for 13 of 50 queries in dense" in table
    assert "{" not in table and "mean over the 50 queries" in table and "mrr@10, 1/rank" in table


def test_first_chunk_estimate_counts_a_chunk_per_small_file(tmp_path: Path) -> None:
    from m3e_rag.cli.progress import estimate_chunks, walk_totals

    for name, size in (("a.txt", 10), ("b.txt", 20), ("big.txt", 3 * 224 * 5), ("huge.bin", 5000)):
        (tmp_path / name).write_bytes(b"x" * size)
    files, sizes = walk_totals([str(tmp_path)], None, None, False, max_file_bytes=4000)
    assert files == 4 and sorted(sizes) == [10, 20, 3 * 224 * 5]  # the file over the limit is not read
    assert estimate_chunks(sizes, 256, 32) == 1 + 1 + 5
