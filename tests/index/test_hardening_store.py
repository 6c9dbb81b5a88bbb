"""Issue 12, the store / query / error rows, re-run: each row of the table has a test here.

Row -> before -> now (test):

- 10 MB query -> dense 263 s / 7.2 GB, hybrid 512 s -> capped to the window before any tokenizer.
- lone surrogate in a query or text -> raw tokenizers TypeError -> InputError naming the position.
- chroma.sqlite3 truncated to 0 bytes -> opened as a fresh empty index, rc 0 -> IndexDamagedError, rc 3.
- HNSW segment folder deleted -> count 2,307, dense reaches 232, no error -> IndexDamagedError; doctor repairs.
- corrupt sqlite, read-only folder, full disk -> chromadb tracebacks, rc 1 -> IndexDamaged/StoreError, rc 3/2.
- bad where {"$bogus": 1} -> chromadb traceback, rc 1 -> InputError, one `error:` line, rc 2.
- NaN/inf query_vector, score_threshold=nan, delete(ids="abc") -> nan scores, empty, ids a/b/c -> InputError.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.cli.ingest import parse_json_filter
from m3e_rag.errors import IndexDamagedError, InputError, StoreError
from m3e_rag.index.chroma import ChromaStore, StoreRecord

TEXTS = ["大熊猫主要吃竹子。", "长城是古代的防御工程。", "The Eiffel Tower is in Paris.", "西湖龙井是绿茶。"]


def _clear_clients() -> None:
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    pipeline = RAGPipeline(tmp_path_factory.mktemp("hardening") / "idx", model_name=str(tiny_model_path))
    pipeline.add_texts(TEXTS, ids=["panda", "wall", "tower", "tea"], metadatas=[{"n": i} for i in range(4)])
    return pipeline


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------------------- 10 MB query
def test_ten_megabyte_query_is_capped_before_tokenizers_and_bm25(rag: RAGPipeline,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the whole 10 MB went through the tokenizer (twice) and jieba. Now: a window's worth."""
    import m3e_rag.index.sparse.bm25 as sparse_mod
    from m3e_rag.encode.encoder import M3EEncoder

    big = "大熊猫吃竹子，" * (10 * 2**20 // 7)  # 10 MiB of text
    seen_model: list[int] = []
    seen_bm25: list[int] = []
    real_encode, real_tokenize = M3EEncoder._encode, sparse_mod.tokenize_for_bm25
    real_tok = rag.encoder.tokenizer

    def spy_encode(self: M3EEncoder, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        seen_model.extend(len(t) for t in texts)
        return real_encode(self, texts, *args, **kwargs)

    def spy_tokenize(text: str) -> list[str]:
        seen_bm25.append(len(text))
        return real_tokenize(text)

    class SpyTokenizer:
        is_fast = True

        def __call__(self, text: Any, **kwargs: Any) -> Any:
            seen_model.extend(len(t) for t in ([text] if isinstance(text, str) else text))
            return real_tok(text, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_tok, name)

    monkeypatch.setattr(M3EEncoder, "_encode", spy_encode)
    monkeypatch.setattr(sparse_mod, "tokenize_for_bm25", spy_tokenize)
    monkeypatch.setattr(M3EEncoder, "tokenizer", property(lambda self: SpyTokenizer()))
    for mode in ("dense", "sparse", "hybrid"):
        hits = rag.search(big, k=2, mode=mode)  # type: ignore[arg-type]
        assert hits, mode
    limit = rag.encoder.max_seq_length * 8
    assert seen_model and max(seen_model) <= limit
    assert seen_bm25 and max(seen_bm25) <= limit
    # Capping changes nothing the model reads: the window is full either way.
    monkeypatch.undo()
    assert np.allclose(rag.encoder.encode_query(big), rag.encoder.encode_query(big[:limit]), atol=1e-6)


def test_padded_query_keeps_its_words(rag: RAGPipeline) -> None:
    """Whitespace is collapsed before the character cut: a query padded with 1 MB of spaces still finds its words."""
    hits = rag.search(" " * 2**20 + "龙井", k=1, mode="sparse")
    assert [h.id for h in hits] == ["tea"]


def test_lone_surrogate_is_an_input_error_naming_the_position(rag: RAGPipeline,
                                                               capsys: pytest.CaptureFixture[str],
                                                               tiny_model_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("dense", "sparse", "hybrid"):
        with pytest.raises(InputError, match="surrogate .* at character 2"):
            rag.search("熊猫\ud800吃", mode=mode)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"texts\[1\].*surrogate"):
        rag.add_texts(["好的", "坏\udfff的"])
    with pytest.raises(InputError, match="surrogate"):
        rag.encoder.encode_query("a\udcffb")
    assert rag.store.count() == len(TEXTS)
    # An undecodable byte in argv arrives as a surrogate (surrogateescape): one error line, exit 2.
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    rc, _, err = _cli(capsys, "search", "x\udcffy", "--index", str(rag.index_path))
    assert rc == 2 and "surrogate" in _one_error_line(err)


# -------------------------------------------------------------------------------------- numbers and types
def test_nan_inf_vectors_thresholds_and_strings_for_lists_are_refused(rag: RAGPipeline) -> None:
    dim = rag.encoder.dim
    for bad in (np.full(dim, np.nan), np.full(dim, np.inf), np.r_[np.ones(dim - 1), -np.inf]):
        with pytest.raises(InputError, match="NaN or infinite"):
            rag.search("熊猫", query_vector=bad)
        with pytest.raises(InputError, match="NaN or infinite"):
            rag.store.query(bad.astype(np.float32), 2)
    with pytest.raises(InputError, match="query_vector"):
        rag.search("熊猫", query_vector="abc")  # type: ignore[arg-type]
    for threshold in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(InputError, match="score_threshold"):
            rag.search("熊猫", score_threshold=threshold)
    with pytest.raises(InputError, match="score_threshold"):
        rag.search("熊猫", score_threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="single string"):
        rag.delete(ids="abc")
    with pytest.raises(InputError, match="single string"):
        rag.add_texts("abc")
    with pytest.raises(InputError, match="single string"):
        rag.add_texts(["x"], ids="a")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="dict"):
        rag.add_texts(["x"], metadatas={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="single string"):
        rag.get("panda")
    with pytest.raises(InputError, match="single string"):
        rag.store.get(ids="panda")
    with pytest.raises(InputError, match="NaN or infinite"):
        with rag.store.write_lock():
            rag.store.upsert([StoreRecord("nan", "x", np.full(dim, np.nan, dtype=np.float32), {})])
    assert sorted(rag.store.all_ids()) == ["panda", "tea", "tower", "wall"]


def test_bad_where_is_an_input_error_and_exit_2(rag: RAGPipeline, capsys: pytest.CaptureFixture[str],
                                                 tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("dense", "sparse", "hybrid"):
        with pytest.raises(InputError, match=r"\$bogus"):
            rag.search("熊猫", mode=mode, where={"$bogus": 1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="where"):
        rag.delete(where={"$bogus": 1})
    with pytest.raises(InputError, match="where_document"):
        rag.store.get(where_document={"$contains": 3})
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    index = str(rag.index_path)
    for flag, value in (("--where", '{"$bogus": 1}'), ("--where", "[1]"), ("--where", "{oops"),
                        ("--where-document", '{"$regex": "("}'), ("--where-document", '{"$like": "x"}')):
        rc, out, err = _cli(capsys, "search", "熊猫", "--index", index, f"{flag}={value}")
        assert rc == 2 and out == "", (flag, value, err)
        _one_error_line(err)
    assert rag.store.count() == len(TEXTS)


# ------------------------------------------------------------------------------------ damaged indexes
@pytest.fixture()
def built(tmp_path: Path, tiny_model_path: Path) -> Iterator[Path]:
    index = tmp_path / "idx"
    pipeline = RAGPipeline(index, model_name=str(tiny_model_path))
    pipeline.add_texts(TEXTS, ids=["panda", "wall", "tower", "tea"])
    del pipeline
    _clear_clients()
    yield index


def test_truncated_sqlite_is_damage_not_a_fresh_index(built: Path, tiny_model_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: `chunks: 0`, rc 0 (Chroma made a new empty database in the emptied file)."""
    db = built / "chroma.sqlite3"
    db.write_bytes(b"")
    with pytest.raises(IndexDamagedError, match="m3e-rag doctor --index"):
        RAGPipeline(built, model_name=str(tiny_model_path)).stats()
    rc, out, err = _cli(capsys, "info", "--index", str(built))  # no --model: reads the index first
    assert rc == 3 and "empty (0 bytes)" in _one_error_line(err)
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    rc, out, err = _cli(capsys, "search", "熊猫", "--index", str(built))
    assert rc == 3 and "doctor" in _one_error_line(err)
    assert db.stat().st_size == 0, "opening must not turn the damaged file into a new database"
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--json")
    report = json.loads(out)
    assert rc == 3 and report["healthy"] is False and report["exit_code"] == 3
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [("folder", True), ("sqlite", False)]
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--repair", "--json")
    assert rc == 3 and json.loads(out)["repaired"] == []  # the records are gone: nothing to rebuild from


def test_corrupt_sqlite_is_damage(built: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = built / "chroma.sqlite3"
    with db.open("r+b") as handle:  # overwrite the schema page: sqlite says "malformed"
        handle.seek(100)
        handle.write(b"\x00garbage" * 400)
    with pytest.raises(IndexDamagedError, match="doctor"):
        RAGPipeline(built, model_name=str(tiny_model_path)).stats()
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    rc, _, err = _cli(capsys, "search", "熊猫", "--index", str(built), "--mode", "hybrid")
    assert rc == 3
    _one_error_line(err)
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert rc == 3 and checks["sqlite"]["ok"] is False


def _segment_dirs(index: Path) -> list[Path]:
    return [p for p in index.iterdir() if p.is_dir() and len(p.name) == 36 and p.name.count("-") == 4]


def test_missing_hnsw_segment_is_detected_and_repaired(tmp_path: Path, tiny_model_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Before: count 2,307, dense reached 232 ids, no error. Now: refused on open; doctor --repair re-embeds."""
    import chromadb

    index = tmp_path / "idx"
    n = 150
    store = ChromaStore(index, model_id=str(tiny_model_path), dim=64)  # creates the guarded collection
    meta = dict(store._collection.metadata or {})
    del store
    _clear_clients()
    # The same collection with Chroma's sync threshold lowered from 1000 to 100, so that 150 records
    # (not 1,100) are enough to move vectors out of sqlite's queue into the HNSW files.
    client = chromadb.PersistentClient(str(index))
    client.delete_collection("m3e_rag")
    col = client.create_collection("m3e_rag", metadata=meta, embedding_function=None, configuration={
        "hnsw": {"space": "cosine", "sync_threshold": 100, "batch_size": 100}})
    rng = np.random.default_rng(0)
    col.add(ids=[f"id{i}" for i in range(n)], embeddings=rng.standard_normal((n, 64)).astype(np.float32),
            documents=[f"第{i}段：熊猫和竹子。" for i in range(n)], metadatas=[{"n": i} for i in range(n)])
    del client, col
    _clear_clients()
    store = ChromaStore(index, model_id=str(tiny_model_path), dim=64)  # healthy: opens, records the id
    assert store.count() == n
    del store
    _clear_clients()
    (segment,) = _segment_dirs(index)
    shutil.rmtree(segment)

    with pytest.raises(IndexDamagedError, match="HNSW .*doctor --index"):
        ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    _clear_clients()
    rc, out, _ = _cli(capsys, "doctor", "--index", str(index), "--json")
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert rc == 3 and checks["hnsw"]["ok"] is False and checks["hnsw"]["repairable"] is True
    assert report["counts"]["records"] == n

    rc, out, _ = _cli(capsys, "doctor", "--index", str(index), "--repair", "--json")
    report = json.loads(out)
    assert rc == 0 and report["healthy"] is True, report
    assert any(f"re-embedded {n} records" in line for line in report["repaired"])
    _clear_clients()
    store = ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    assert store.count() == n
    got = {r.id: r for r in store.get(ids=["id0", f"id{n - 1}"])}
    assert got[f"id{n - 1}"].text == f"第{n - 1}段：熊猫和竹子。" and got[f"id{n - 1}"].metadata["n"] == n - 1
    probe = store.get(ids=["id7"], include_embeddings=True)[0].metadata["_embedding"]
    assert len(store.query(probe, n)) == n  # dense reaches every record again
    assert store.query(probe, 1)[0].id == "id7"


def test_read_only_index_is_a_store_error(built: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma cannot open a folder it cannot write (it writes on start); the lock file fails first.

    Simulated (the suite may run as root, which ignores permissions): the errors are the ones a
    read-only mount gave on this machine.
    """
    from filelock import FileLock

    def read_only(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(built / ".m3e-rag-write.lock"))

    monkeypatch.setattr(FileLock, "acquire", read_only)
    with pytest.raises(StoreError, match="cannot be written .*writable"):
        RAGPipeline(built, model_name=str(tiny_model_path)).stats()
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    rc, _, err = _cli(capsys, "search", "熊猫", "--index", str(built))
    assert rc == 2 and "writable" in _one_error_line(err)
    monkeypatch.undo()

    import chromadb
    from chromadb.errors import InternalError

    def readonly_db(*args: Any, **kwargs: Any) -> None:
        raise InternalError("error returned from database: (code: 8) attempt to write a readonly database")

    monkeypatch.setattr(chromadb, "PersistentClient", readonly_db)
    with pytest.raises(StoreError, match="cannot be written"):
        RAGPipeline(built, model_name=str(tiny_model_path)).stats()


def test_full_disk_is_a_store_error_and_loses_nothing(built: Path, tiny_model_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rag = RAGPipeline(built, model_name=str(tiny_model_path))
    before = sorted(rag.store.all_ids())
    collection = type(rag.store._collection)

    def enospc(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collection, "upsert", enospc)
    with pytest.raises(StoreError, match="full"):
        rag.add_texts(["新的一段。"], ids=["new"])
    # Chroma's own message for a full disk is often unspecific; the free space tells.
    from chromadb.errors import InternalError

    import m3e_rag.index.boundary as boundary

    def compaction(self: Any, *args: Any, **kwargs: Any) -> None:
        raise InternalError("Error in compaction: Failed to apply logs to the metadata segment")

    monkeypatch.setattr(collection, "upsert", compaction)
    monkeypatch.setattr(boundary, "LOW_DISK_BYTES", 2**62)
    with pytest.raises(StoreError, match="full"):
        rag.add_texts(["新的一段。"], ids=["new"])
    monkeypatch.undo()
    assert sorted(rag.store.all_ids()) == before


def test_unexpected_exception_is_exit_1_with_a_hint(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import m3e_rag.index.doctor as doctor

    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(doctor, "run", boom)
    rc, _, err = _cli(capsys, "doctor", "--index", str(tmp_path))
    assert rc == 1 and "bug in m3e-rag" in _one_error_line(err) and "KeyError" in err


def test_doctor_on_a_healthy_index(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--json")
    report = json.loads(out)
    assert rc == 0 and report["healthy"] is True and report["exit_code"] == 0
    assert {c["name"] for c in report["checks"]} == {"folder", "sqlite", "collection", "model", "hnsw", "bm25",
                                                     "manifest"}
    assert all(c["ok"] for c in report["checks"])
    assert report["counts"]["records"] == len(TEXTS) and report["model"]
    assert set(report) == {"index", "collection", "healthy", "checks", "counts", "model", "repaired", "advice",
                           "exit_code"}
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built))
    assert rc == 0 and "healthy" in out


def test_collection_deleted_outside_m3e_rag(built: Path, tiny_model_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import chromadb

    chromadb.PersistentClient(str(built)).delete_collection("m3e_rag")
    _clear_clients()
    with pytest.raises(IndexDamagedError, match="missing"):
        RAGPipeline(built, model_name=str(tiny_model_path)).stats()
    _clear_clients()
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--repair", "--json")
    assert rc == 3 and "forgot" in json.loads(out)["repaired"][0]  # deleted on purpose: forget it
    _clear_clients()
    assert RAGPipeline(built, model_name=str(tiny_model_path)).stats()["chunks"] == 0
    with sqlite3.connect(built / "chroma.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM collections").fetchone()[0] == 1


# ------------------------------------------------------------------------------- --where, fuzzed
_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.text(), _JSON, max_size=5))
def test_where_json_objects_round_trip(value: dict[str, Any]) -> None:
    assert parse_json_filter(json.dumps(value), "--where", "{}") == value
    assert parse_json_filter(json.dumps(value, ensure_ascii=False, indent=1), "--where", "{}") == value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60) | _JSON.map(json.dumps)
       | st.sampled_from(["[" * 100_000, "{\"a\":" * 50_000, "\ud800", "{\"a\": NaN}", "-x"]))
def test_any_where_text_gives_exit_2_and_one_error_line(text: str, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    try:
        parsed = parse_json_filter(text, "--where", "{}")
    except InputError:
        parsed = None
    else:
        assert parsed is None or json.loads(text) == parsed
    # No index there: the command always fails, but only ever with exit 2 and one `error:` line.
    rc, out, err = _cli(capsys, "search", "q", "--index", str(tmp_path / "none"), f"--where={text}")
    assert rc == 2 and out == ""
    _one_error_line(err)


def test_doctor_finishes_an_interrupted_repair(built: Path, tiny_model_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A repair killed between deleting the damaged collection and renaming its copy loses nothing."""
    import chromadb

    client = chromadb.PersistentClient(str(built))
    old = client.get_collection("m3e_rag")
    everything = old.get(include=["embeddings", "documents", "metadatas"])
    copy = client.create_collection("m3e_rag-repair-0badc0de", metadata=old.metadata, embedding_function=None,
                                    configuration={"hnsw": {"space": "cosine"}})
    copy.add(ids=everything["ids"], embeddings=everything["embeddings"], documents=everything["documents"],
             metadatas=everything["metadatas"])
    client.delete_collection("m3e_rag")
    del client, old, copy
    _clear_clients()
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--json")
    assert rc == 3 and "interrupted" in json.loads(out)["checks"][2]["detail"]
    rc, out, _ = _cli(capsys, "doctor", "--index", str(built), "--repair", "--json")
    report = json.loads(out)
    assert rc == 0 and "interrupted repair" in report["repaired"][0], report
    _clear_clients()
    rag = RAGPipeline(built, model_name=str(tiny_model_path))
    assert sorted(rag.store.all_ids()) == sorted(["panda", "wall", "tower", "tea"])
    assert [h.id for h in rag.search("龙井", k=1, mode="hybrid", where_document={"$contains": "龙井"})] == ["tea"]


_HOT_JOURNAL_WRITER = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # spill changed pages into the database file before commit
conn.execute("BEGIN IMMEDIATE")
(coll,) = conn.execute("SELECT id FROM collections").fetchone()
for i in range(3000):
    conn.execute("INSERT INTO collection_metadata (collection_id, key, str_value) VALUES (?, ?, ?)",
                 (coll, f"junk{i}", "x" * 200))
os._exit(9)  # die mid-transaction, like kill -9: a hot rollback journal stays behind
"""


def test_writer_killed_mid_transaction_is_not_damage(built: Path, tiny_model_path: Path) -> None:
    """A hot journal needs write access to roll back: the read-only pre-open check must not call it damage."""
    import subprocess
    import sys

    db = built / "chroma.sqlite3"
    proc = subprocess.run([sys.executable, "-c", _HOT_JOURNAL_WRITER, str(db)], timeout=120)
    assert proc.returncode == 9 and Path(f"{db}-journal").stat().st_size > 0
    rag = RAGPipeline(built, model_name=str(tiny_model_path))
    assert sorted(rag.store.all_ids()) == sorted(["panda", "wall", "tower", "tea"])
    assert not any(key.startswith("junk") for key in rag.store._collection.metadata or {})
