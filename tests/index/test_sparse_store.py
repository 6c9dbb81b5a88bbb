"""The BM25 index on disk: incremental writes, compaction, torn logs, kill -9, readers in other processes.

No model is needed: these drive :class:`m3e_rag.index.sparse.folder.SparseFolder` directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3e_rag.errors import StoreError
from m3e_rag.index.sparse import folder as sparse_store
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.folder import SparseFolder
from m3e_rag.index.sparse.tokenize import STOPWORDS, tokenize_for_bm25

DOCS = {
    "duck": "北京烤鸭是北京最有名的菜，很多游客专门去吃烤鸭。",
    "bund": "上海的外滩和陆家嘴是游客常去的地方。",
    "python": "Python is a popular programming language for data science.",
    "tea": "中国茶文化历史悠久，绿茶、红茶和乌龙茶各有特色。",
    "pku": "北京大学和清华大学都是中国著名的高等学府。",
}
QUERIES = ["北京 游客", "茶", "python data", "大学 中国", "外滩"]


def fresh(docs: dict[str, str]) -> SparseIndex:
    index = SparseIndex()
    index.upsert(list(docs), list(docs.values()))
    return index


def snapshot_dir(folder: Path) -> Path:
    return folder / json.loads((folder / "CURRENT").read_text(encoding="utf-8"))["snapshot"]


def same_results(a: SparseIndex, b: SparseIndex) -> None:
    assert a.ids() == b.ids()
    for query in QUERIES:
        got, want = a.search(query, k=10), b.search(query, k=10)
        assert [i for i, _ in got] == [i for i, _ in want], query
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


def test_writes_append_to_the_log_and_leave_the_snapshot_alone(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    disk = SparseFolder.create(folder, fresh(DOCS), generation=1)
    snap = snapshot_dir(folder)
    before = {p.name: p.stat().st_size for p in snap.iterdir() if p.name != "log.jsonl"}
    disk.upsert(["new"], ["杭州西湖的龙井茶"], generation=2)
    disk.delete(["bund"], generation=3)
    disk.upsert(["duck"], ["烤鸭换成了火锅"], generation=4)  # an upsert of a held id replaces its text
    assert {p.name: p.stat().st_size for p in snap.iterdir() if p.name != "log.jsonl"} == before
    assert len((snap / "log.jsonl").read_bytes().splitlines()) == 3  # one record per write
    reopened = SparseFolder.open(folder)
    assert reopened.generation == 4
    expected = dict(DOCS, new="杭州西湖的龙井茶", duck="烤鸭换成了火锅")
    del expected["bund"]
    same_results(reopened.index, fresh(expected))
    same_results(disk.index, fresh(expected))
    assert reopened.index.search("专门", k=5) == []  # the old text of "duck" is gone


def test_compaction_folds_the_log_into_a_new_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse_store, "LOG_MIN_RECORDS", 3)
    folder = tmp_path / "bm25"
    disk = SparseFolder.create(folder, generation=0)
    first = snapshot_dir(folder).name
    for n, (chunk_id, text) in enumerate(DOCS.items(), start=1):
        disk.upsert([chunk_id], [text], generation=n)
        disk.maybe_compact()
    assert snapshot_dir(folder).name != first  # a new snapshot ...
    assert not (folder / first).exists()  # ... and the old one removed
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["CURRENT",
                                                                                      snapshot_dir(folder).name]
    reopened = SparseFolder.open(folder)
    assert reopened.generation == len(DOCS)
    same_results(reopened.index, fresh(DOCS))


def test_a_torn_last_record_is_skipped_then_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    disk = SparseFolder.create(folder, fresh(DOCS), generation=1)
    disk.upsert(["new"], ["杭州西湖的龙井茶"], generation=2)
    log = snapshot_dir(folder) / "log.jsonl"
    whole = log.read_bytes()
    log.write_bytes(whole + b'1234abcd {"op": "u", "ids": ["half"], "ter')  # killed mid-append
    reader = SparseFolder.open(folder, writable=False)
    assert "new" in reader.index and "half" not in reader.index and reader.generation == 2
    assert log.read_bytes().endswith(b"ter")  # a reader never changes the file
    writer = SparseFolder.open(folder)
    assert log.read_bytes() == whole  # the writer drops the torn tail before appending
    writer.delete(["new"], generation=3)
    assert "new" not in SparseFolder.open(folder).index


def test_a_damaged_record_before_the_end_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    disk = SparseFolder.create(folder, fresh(DOCS), generation=1)
    disk.upsert(["a"], ["甲"], generation=2)
    disk.upsert(["b"], ["乙"], generation=3)
    log = snapshot_dir(folder) / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0].replace(b'"a"', b'"z"') + lines[1])  # checksum no longer matches
    with pytest.raises(StoreError, match="rebuild"):
        SparseFolder.open(folder)


def test_a_reader_follows_another_writer_incrementally_and_across_compaction(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    writer = SparseFolder.create(folder, fresh(DOCS), generation=1)
    reader = SparseFolder.open(folder)
    writer.upsert(["new"], ["杭州西湖的龙井茶"], generation=2)
    assert "new" not in reader.index
    assert reader.refresh() and "new" in reader.index and reader.generation == 2
    assert not reader.refresh()  # nothing more to read
    writer.delete(["tea"], generation=3)
    writer.compact()  # another process folds the log: the reader reloads the new snapshot
    assert reader.refresh() and "tea" not in reader.index and reader.generation == 3
    same_results(reader.index, writer.index)


WRITER = r"""
import sys
from pathlib import Path
from m3e_rag.index.sparse.folder import SparseFolder
from m3e_rag.index.sparse import folder as sparse_store
sparse_store.LOG_MIN_RECORDS = 40  # compact often, so the kill can land inside a snapshot write too
folder = Path(sys.argv[1])
disk = SparseFolder.create(folder, generation=0)
for n in range(1, 100000):
    disk.upsert([f"d{n}"], [f"第{n}号文档 北京 doc{n} " * 20], generation=2 * n)
    if n % 7 == 0:
        disk.delete([f"d{n - 3}"], generation=2 * n + 1)
    disk.maybe_compact()
    if n == 1:
        print("ready", flush=True)  # jieba is loaded: writes run at full speed from here
"""


@pytest.mark.slow
def test_kill_9_mid_write_leaves_a_folder_that_opens_with_a_prefix_of_the_writes(tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    for delay in (0.4, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        disk = SparseFolder.open(folder)
        generation = disk.generation
        assert isinstance(generation, int) and generation > 0
        # Exactly the writes up to the last one recorded (upsert of dn: generation 2n; delete of d(n-3)
        # when n % 7 == 0: 2n + 1), nothing half-applied.
        last = generation // 2
        deleted = {f"d{n - 3}" for n in range(7, last + 1, 7) if 2 * n + 1 <= generation}
        assert disk.index.ids() == {f"d{n}" for n in range(1, last + 1)} - deleted
        assert disk.index.search(f"doc{last}", k=1)[0][0] == f"d{last}"
        disk.upsert(["after"], ["重启之后还能写"], generation=generation + 1)  # and it is writable again
        assert "after" in SparseFolder.open(folder).index


# ----------------------------------------------------------------------------- tokenizer properties


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_tokenizer_never_raises_and_yields_clean_terms(text: str) -> None:
    terms = tokenize_for_bm25(text)
    for term in terms:
        assert term  # non-empty
        assert term == term.lower()
        assert term not in STOPWORDS
        assert not term.isspace()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["北京", "烤鸭", "\U00020000", "𠀀𠀁", "與", "這", "嗎", "著", "的", "ＡＢＣ", "Hello",
                                 "3.14", "，", " ", "了", "ß", "İstanbul", "\u3400", "\uf900"]), max_size=30))
def test_tokenizer_on_mixed_scripts_and_extension_b(parts: list[str]) -> None:
    text = "".join(parts)
    terms = tokenize_for_bm25(text)
    assert all(term and term == term.lower() and term not in STOPWORDS for term in terms)
    for ext_b in ("\U00020000", "\U00020001"):
        if ext_b in text:
            assert ext_b in terms  # Extension B ideographs survive as one-character terms


def test_traditional_stopwords_are_dropped_like_simplified_ones() -> None:
    assert {"與", "這", "嗎", "著"} <= STOPWORDS
    assert tokenize_for_bm25("這 與 嗎 著") == tokenize_for_bm25("这 与 吗 着") == []
