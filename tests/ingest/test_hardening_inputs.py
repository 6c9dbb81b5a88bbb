"""Issue 12, file-input rows re-run: huge files, SIGINT, symlinks, odd names, bad bytes, huge CSV fields.

Each test names the row of the issue's table it re-runs and what the outcome was before. Memory is
not measured here (that is ``benchmarks/big_file.py``); the tests check the mechanisms that bound
it (streaming, windows, steps) and that nothing is lost or misplaced on the way.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.cli.ingest import _file_size
from m3e_rag.ingest import ingestor as ingestor_module
from m3e_rag.ingest.chunking import WINDOW_CHARS, Chunker
from m3e_rag.ingest.loaders import FileLoader, StreamedDocument, csvfile, load_paths, textfile
from m3e_rag.ingest.run import IngestInterrupted, IngestRun

ZH = "自然语言处理是人工智能的一个重要方向，它研究如何让计算机理解人类的语言。"
EN = "Natural language processing is a field of AI, e.g. it includes 3.14 and U.S. examples. "
ONE_LINE = (ZH + EN) * 4  # no line break anywhere: the worst case for line-based segmentation


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_path: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model_path))


def _pipeline(tmp_path: Path, tiny_model_path: Path, **kwargs) -> RAGPipeline:
    return RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path), chunk_tokens=64, overlap_tokens=8, **kwargs)


# ---------------------------------------------------------------- row: one 200 MB single-line .txt


def test_big_single_line_file_streams_with_exact_spans(tmp_path, tiny_tokenizer, monkeypatch):
    """Before: the whole file was read, tokenized and chunked at once (275 MB RAM per MB of text).

    Now a file over the streaming threshold is decoded block by block and chunked window by
    window; spans are exact offsets into the whole text and nothing is lost.
    """
    monkeypatch.setattr(textfile, "STREAM_THRESHOLD_BYTES", 64 * 1024)
    monkeypatch.setattr(textfile, "BLOCK_BYTES", 10_007)  # blocks cut multi-byte characters in two
    text = ONE_LINE * 300  # ~170k characters, ~350 KB of UTF-8, one line
    path = tmp_path / "big" / "one_line.txt"
    path.parent.mkdir()
    path.write_bytes(text.encode("utf-8"))

    docs = list(FileLoader([path.parent]))
    assert len(docs) == 1 and isinstance(docs[0], StreamedDocument)
    doc = docs[0]
    assert doc.metadata["encoding"] == "utf-8"
    segments = list(doc.segments())
    assert len(segments) > 10 and "".join(segments) == text

    chunker = Chunker(tiny_tokenizer, max_tokens=128, overlap_tokens=16)
    chunks = list(chunker.iter_chunks(doc.segments(), source=doc.source))
    covered = bytearray(len(text))
    for i, c in enumerate(chunks):
        assert c.index == i
        assert text[c.start : c.end] == c.text
        assert 0 < c.n_tokens <= 128
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text))), "text lost between chunks"
    # Spans cross window boundaries correctly, and segmenting changes nothing.
    assert max(c.end for c in chunks) > 3 * WINDOW_CHARS
    assert [(c.start, c.end) for c in chunks] == [(c.start, c.end) for c in chunker.split_text(text)]
    sampled = chunks[:: max(1, len(chunks) // 20)]
    assert all(c.n_tokens == len(tiny_tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in sampled)


def test_chunker_yields_before_the_stream_ends(tiny_tokenizer):
    """Memory is O(window): the first chunks come out while most of the text is still unread."""
    pulled = 0

    def blocks() -> Iterator[str]:
        nonlocal pulled
        for _ in range(200):
            pulled += 1
            yield ONE_LINE * 10

    chunker = Chunker(tiny_tokenizer, max_tokens=64, overlap_tokens=0)
    first = next(chunker.iter_chunks(blocks()))
    assert first.start == 0
    assert pulled < 40  # 200 blocks would be ~1.2 M characters; a window is WINDOW_CHARS


def test_ingest_streams_in_steps_and_spans_are_exact(tmp_path, tiny_model_path, monkeypatch):
    """The pipeline embeds and stores in steps while the file is still being read."""
    monkeypatch.setattr(textfile, "STREAM_THRESHOLD_BYTES", 8 * 1024)
    monkeypatch.setattr(textfile, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(ingestor_module, "INGEST_STEP_CHUNKS", 16)
    text = ONE_LINE * 12
    path = tmp_path / "docs" / "one_line.txt"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    rag = _pipeline(tmp_path, tiny_model_path)
    steps: list[int] = []
    report = rag.ingest(path.parent, progress=lambda done, known: steps.append(done))
    assert report.documents == 1 and report.chunks_added > 32
    assert len(steps) >= report.chunks_added // 16  # one commit per step, not one at the end
    stored = rag.store.get(where={"source": path.resolve().as_posix()})
    assert len(stored) == report.chunks_added
    for rec in stored:
        assert text[rec.metadata["start"] : rec.metadata["end"]] == rec.text
    # Re-ingesting the unchanged file embeds nothing and removes nothing.
    again = rag.ingest(path.parent)
    assert (again.chunks_added, again.chunks_removed, again.chunks_unchanged) == (0, 0, report.chunks_added)


# ---------------------------------------------------------------- row: SIGINT swallowed


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """Python's own SIGINT handler for the test (what a user's process has), the previous one restored.

    In the whole suite another library can leave its own handler installed (asyncio runners install
    one while they run); ingest defers Ctrl-C only under Python's default handler, by design.
    """
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint_handler")
def test_sigint_stops_after_the_current_step(tmp_path, tiny_model_path, monkeypatch):
    """Before: SIGINT was swallowed until the whole file was chunked. Now: the step in progress is
    committed, then IngestInterrupted (a KeyboardInterrupt) carries what was committed."""
    monkeypatch.setattr(ingestor_module, "INGEST_STEP_CHUNKS", 8)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"f{i}.txt").write_text(f"第{i}个文件。" + ONE_LINE * 2, encoding="utf-8")
    rag = _pipeline(tmp_path, tiny_model_path)
    calls = 0

    def progress(done: int, known: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(IngestInterrupted) as info:
        rag.ingest(folder, progress=progress)
    report = info.value.report
    assert isinstance(info.value, KeyboardInterrupt)
    assert report.interrupted
    assert 0 < report.chunks_added == rag.store.count()  # exactly what was committed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    # Running it again completes the ingest without re-embedding what was committed.
    done = rag.ingest(folder)
    assert done.chunks_unchanged == report.chunks_added and not done.interrupted
    assert rag.store.count() == report.chunks_added + done.chunks_added


@pytest.mark.usefixtures("python_sigint_handler")
def test_cli_prints_the_committed_report_and_exits_130(tmp_path, tiny_model_path, monkeypatch, capsys):
    monkeypatch.setattr(ingestor_module, "INGEST_STEP_CHUNKS", 8)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.txt").write_text(ONE_LINE * 2, encoding="utf-8")
    real_flush = IngestRun._flush

    def flush_then_interrupt(self: IngestRun) -> None:
        real_flush(self)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(IngestRun, "_flush", flush_then_interrupt)
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    rc = main(
        ["ingest", str(folder), "--index", str(tmp_path / "idx"), "--chunk-tokens", "64", "--overlap-tokens", "8"]
    )
    out, err = capsys.readouterr()
    assert rc == 130
    assert "interrupted" in out and "chunks added" in out
    assert "interrupted" in err


# ---------------------------------------------------------------- row: per-file size limit


def test_file_over_the_size_limit_is_skipped_with_the_reason(tmp_path):
    (tmp_path / "small.txt").write_text("小文件。", encoding="utf-8")
    (tmp_path / "large.txt").write_text("大" * 5000, encoding="utf-8")
    result = load_paths([tmp_path], max_file_bytes=1000)
    assert [d.metadata["file_name"] for d in result.documents] == ["small.txt"]
    [skip] = result.skipped
    assert skip.path.endswith("/large.txt")
    assert "over the limit of 1,000 bytes" in skip.reason and "max_file_bytes" in skip.reason
    assert len(load_paths([tmp_path], max_file_bytes=None).documents) == 2
    assert _file_size("200M") == 200 * 1024**2 and _file_size("1.5k") == 1536 and _file_size("none") is None


# ---------------------------------------------------------------- rows: one bad file aborts the ingest


def test_symlink_loop_odd_name_and_fifo_are_skipped_and_the_rest_ingested(tmp_path, tiny_model_path):
    """Before: `s.txt -> s.txt` raised RuntimeError and `x\\xff.txt` UnicodeEncodeError: ingest aborted."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("好的文件。", encoding="utf-8")
    os.symlink("s.txt", folder / "s.txt")
    os.symlink("missing.txt", folder / "broken.txt")
    os.mkfifo(folder / "pipe.txt")
    odd = os.path.join(os.fsencode(folder), b"x\xff.txt")
    with open(odd, "wb") as fh:
        fh.write("名字里有坏字节。".encode())
    rag = _pipeline(tmp_path, tiny_model_path)
    report = rag.ingest(folder)
    reasons = {Path(s.path).name: s.reason for s in report.files_skipped}
    assert "symbolic link loop" in reasons["s.txt"]
    assert "broken symbolic link" in reasons["broken.txt"]
    assert reasons["pipe.txt"] == "not a regular file"
    sources = set(rag.store.sources())
    shown = (folder.resolve() / "x\\xff.txt").as_posix()  # the byte shown escaped, with a backslash
    assert sources == {(folder / "good.txt").resolve().as_posix(), shown}
    [rec] = rag.store.get(where={"source": shown})
    assert rec.text == "名字里有坏字节。" and rec.metadata["file_name"] == "x\\xff.txt"


# ---------------------------------------------------------------- row: symlink to /etc/passwd


def test_symlinks_out_of_the_roots_are_not_followed_by_default(tmp_path):
    """Before: a link to /etc/passwd inside the folder was followed and indexed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("外面的秘密。", encoding="utf-8")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_text("外面的文件夹。", encoding="utf-8")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "own.txt").write_text("自己的文件。", encoding="utf-8")
    os.symlink(outside / "secret.txt", root / "secret_link.txt")
    os.symlink(outside / "sub", root / "linked_folder")
    os.symlink(root / "own.txt", root / "alias.txt")  # inside the root: followed, loaded once

    result = load_paths([root])
    assert [d.text for d in result.documents] == ["自己的文件。"]
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(reasons) == {"secret_link.txt", "linked_folder"}
    assert all("outside the ingested folders" in r and "follow_symlinks=True" in r for r in reasons.values())

    followed = load_paths([root], follow_symlinks=True)
    assert sorted(d.text for d in followed.documents) == sorted(["自己的文件。", "外面的秘密。", "外面的文件夹。"])
    assert followed.skipped == []


def test_folder_link_back_up_the_tree_is_walked_once(tmp_path):
    root = tmp_path / "docs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("一次。", encoding="utf-8")
    os.symlink(root, root / "a" / "up")
    result = load_paths([root], follow_symlinks=True)
    assert [d.text for d in result.documents] == ["一次。"]
    assert [Path(s.path).name for s in result.skipped] == ["up"]


# ---------------------------------------------------------------- row: English text with 1-3 bad bytes


@pytest.mark.parametrize("bad", [b"\xff", b"\xe9\x81", b"\x93\xfe\xb3"])
def test_a_few_bad_bytes_keep_utf8(tmp_path, bad):
    """Before: detected as cp932 / gb18030 / big5, letters silently replaced."""
    words = "The quick brown fox jumps over the lazy dog while reading the documentation. " * 6
    data = words[:200].encode() + bad + words[200:].encode()
    (tmp_path / "en.txt").write_bytes(data)
    result = load_paths([tmp_path])
    [doc] = result.documents
    assert doc.metadata["encoding"] == "utf-8"
    assert doc.metadata["decode_errors"] == len(bad)
    assert doc.text.replace("\ufffd", "") == words
    assert [n.reason for n in result.notes] == [f"decoded as utf-8 with {len(bad)} invalid byte(s) replaced by U+FFFD"]


# ---------------------------------------------------------------- row: CSV with one 50 MB field


def test_csv_row_over_the_field_limit_is_skipped_not_the_file(tmp_path, monkeypatch):
    """Before: one field over the csv module's limit skipped the whole file (good rows lost)."""
    monkeypatch.setattr(csvfile, "MAX_FIELD_CHARS", 300_000)
    big = "大" * 400_000  # over our limit: this row is skipped with the reason
    medium = "中" * 200_000  # over the csv module's default 131,072: loads now
    path = tmp_path / "t.csv"
    path.write_text(
        f'id,text\n1,第一行\n2,"{big}"\n3,"{medium}"\n4,"多行\n第四行"\n5,"坏的引号"x"\n6,最后一行\n', encoding="utf-8"
    )
    result = load_paths([path])
    rows = {d.metadata["row"]: d.text for d in result.documents}
    assert rows[0] == "第一行" and rows[2] == medium and rows[3] == "多行\n第四行" and rows[5] == "最后一行"
    skipped = {s.path.rsplit("#", 1)[1]: s.reason for s in result.skipped}
    assert "over the CSV field limit of 300,000" in skipped["1"]
    assert 4 in rows or "4" in skipped  # a malformed row is loaded as parsed, or skipped alone


def test_jsonl_bad_lines_skip_the_line_not_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "一"}\n{bad json\n' + "[" * 100_000 + "\n" + '{"text": "四"}\n', encoding="utf-8")
    result = load_paths([path])
    assert [d.text for d in result.documents] == ["一", "四"]
    assert [s.path.rsplit("#", 1)[1] for s in result.skipped] == ["1", "2"]
