"""Issue 24, the index rows ("hostile clients and hostile files, round two"), re-run: one test (or more) per row.

Row -> before -> now (test):

1. sqlite with scattered overwritten pages -> rc 1 and a 36-line traceback (``PanicException`` is not an
   ``Exception``) -> IndexDamagedError, rc 3, one line naming doctor. Last 3 pages zeroed -> doctor said damaged,
   search / info rc 0 -> every open runs the check doctor runs: all three say damaged (rc 3).
2. an index on a read-only mount -> search refused ("cannot be written") -> searched in every mode; writes refused.
3. get / delete(ids=...) with more than 32,766 ids, k >= ~32.8k -> "too many SQL variables ... run doctor" -> batched.
4. Chroma server errors naming ``m3e-rag doctor --index http://...`` -> doctor named for embedded folders only.
5. zero-width characters and soft hyphens inside words -> no BM25 match -> removed before tokenising (and encoding).
6. a 300-level ``$and`` -> accepted in sparse mode, refused in dense -> the same InputError in every mode.
7. metadata key ``"$and"`` / ``""`` (NaN / inf values) -> Chroma's error or stored as None -> InputError, none written.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.errors import IndexDamagedError, InputError, StoreError
from m3e_rag.index.boundary import MAX_FILTER_DEPTH, store_boundary, translate_store_error
from m3e_rag.index.chroma import ChromaStore, StoreRecord
from m3e_rag.index.info import index_stats

TEXTS = ["大熊猫主要吃竹子。", "长城是古代的防御工程。", "The Eiffel Tower is in Paris.", "西湖龙井是绿茶。"]


def _clear_clients() -> None:
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def _vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    vecs = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _build(index: Path, model: Path, texts: list[str]) -> Path:
    """A real index of the tiny stand-in (vectors given: nothing is embedded), BM25 side included."""
    rag = RAGPipeline(index, model_name=str(model))
    rag.add_texts(texts, ids=[f"id{i}" for i in range(len(texts))], embeddings=_vectors(len(texts)),
                  metadatas=[{"n": i, "source": f"/docs/f{i % 7}.md"} for i in range(len(texts))])
    del rag
    _clear_clients()
    return index


def _cli(*argv: str, model: Path | None = None) -> tuple[int, list[str]]:
    """Run the real `m3e-rag` command; its stderr lines, less the M3E licence notice of a model load."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("M3E_MODEL", None)
    if model is not None:
        env["M3E_MODEL"] = str(model)
    done = subprocess.run([sys.executable, "-m", "m3e_rag", *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    notice = "M3E weights: check their licence"
    lines = [line for line in done.stderr.splitlines() if line.strip() and notice not in line]
    return done.returncode, lines


def _one_doctor_line(lines: list[str]) -> str:
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "m3e-rag doctor --index" in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------- row 1: damaged sqlite
class PanicException(BaseException):  # noqa: N818 - the name pyo3 gives its panics
    """Stands in for ``pyo3_runtime.PanicException`` (same name, a BaseException only)."""


def test_a_real_chroma_panic_becomes_index_damage(tmp_path: Path, tiny_model_path: Path) -> None:
    """Overwrite the page Chroma reads its migrations from: its Rust side panics (``Expect it to be fetched``)."""
    import chromadb

    index = _build(tmp_path / "idx", tiny_model_path, TEXTS)
    db = index / "chroma.sqlite3"
    with sqlite3.connect(db) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'migrations'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as handle:
        handle.seek((root - 1) * page)
        handle.write(b"\xa5" * page)
    with pytest.raises(IndexDamagedError, match=f"m3e-rag doctor --index {index}") as caught:
        with store_boundary("open the index", str(index)):
            chromadb.PersistentClient(path=str(index))
    cause = caught.value.__cause__
    assert type(cause).__name__ == "PanicException" and not isinstance(cause, Exception)
    assert type(cause).__module__ == "pyo3_runtime"


def test_panics_are_translated_but_ctrl_c_exit_and_cancellation_are_not(tmp_path: Path) -> None:
    with pytest.raises(IndexDamagedError, match="doctor --index"):
        with store_boundary("search", str(tmp_path)):
            raise PanicException('Database(SqliteError { code: 11, message: "database disk image is malformed" })')
    with pytest.raises(StoreError, match="PanicException") as caught:  # an unknown panic: typed, no doctor
        with store_boundary("search", str(tmp_path)):
            raise PanicException("index out of bounds")
    assert "doctor" not in str(caught.value)
    for passing in (KeyboardInterrupt(), SystemExit(3), GeneratorExit(), asyncio.CancelledError()):
        with pytest.raises(type(passing)):
            with store_boundary("search", str(tmp_path)):
                raise passing


def _garbage_pages(db: Path, first: int, last: int, seed: int) -> None:
    """Overwrite pages ``first``..``last`` (1-based) of ``db`` with deterministic garbage."""
    rng = random.Random(seed)
    with db.open("r+b") as handle:
        for page in range(first, last + 1):
            handle.seek((page - 1) * 4096)
            handle.write(bytes(rng.randrange(256) for _ in range(4096)))


@pytest.mark.slow
def test_scattered_overwritten_pages_exit_3_with_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    index = _build(tmp_path / "idx", tiny_model_path, [f"第{i}段：熊猫吃竹子。panda {i}" for i in range(60)])
    db = index / "chroma.sqlite3"
    for first, last in ((2, 2), (9, 11), (17, 18)):  # page 2: the table Chroma reads first (it panicked)
        _garbage_pages(db, first, last, seed=first)
    before = db.read_bytes()
    doc = tmp_path / "new.txt"
    doc.write_text("新的一段。", encoding="utf-8")
    with pytest.raises(IndexDamagedError, match="doctor --index"):
        index_stats(index)
    with pytest.raises(IndexDamagedError, match="doctor --index"):
        RAGPipeline(index, model_name=str(tiny_model_path)).search("熊猫", mode="hybrid")
    for argv in (("info", "--index", str(index)), ("search", "熊猫", "--index", str(index)),
                 ("ingest", str(doc), "--index", str(index))):
        rc, lines = _cli(*argv, model=None if argv[0] == "info" else tiny_model_path)
        assert rc == 3, (argv, lines)
        assert not any("Traceback" in line or "panicked" in line for line in lines), lines
        _one_doctor_line(lines)
    assert db.read_bytes() == before, "a damaged database is never written to"


@pytest.mark.slow
def test_zeroed_last_pages_doctor_info_and_search_agree(tmp_path: Path, tiny_model_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: doctor rc 3 (sqlite's quick_check fails) while info and search read around the zeroed pages, rc 0."""
    rng = np.random.default_rng(1)
    words = ["熊猫", "竹子", "长城", "故宫", "panda", "bamboo", "wall", "river", "山", "水", "茶", "西湖"]
    index = _build(tmp_path / "idx", tiny_model_path, [" ".join(rng.choice(words, 80)) for _ in range(500)])
    db = index / "chroma.sqlite3"
    with db.open("r+b") as handle:
        handle.seek(db.stat().st_size - 3 * 4096)
        handle.write(b"\0" * 3 * 4096)
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    outcomes = {}
    for argv in (("doctor", "--index", str(index)), ("info", "--index", str(index)), ("search", "熊猫", "--index",
                 str(index)), ("search", "熊猫", "--index", str(index), "--mode", "dense")):
        rc = main(list(argv))
        err = capsys.readouterr().err
        outcomes[" ".join(argv[:1] + argv[-1:])] = rc
        if argv[0] != "doctor":
            assert "fails sqlite's integrity check" in _one_doctor_line(err.strip().splitlines())
    assert set(outcomes.values()) == {3}, outcomes


def test_the_integrity_check_runs_once_per_change(tmp_path: Path, tiny_model_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads the whole file: it runs when the file changed since the last open, not on every open."""
    import m3e_rag.index.integrity as integrity

    index = _build(tmp_path / "idx", tiny_model_path, TEXTS)
    calls: list[Path] = []
    real = integrity.sqlite_verdict
    monkeypatch.setattr(integrity, "sqlite_verdict", lambda db: calls.append(db) or real(db))
    ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    assert len(calls) == 1  # the build's writes moved the file; the second open finds it as the first left it
    store = ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    with store.write_lock():
        store.upsert([StoreRecord("new", "新的一段。", _vectors(1)[0], {"n": 9})])
    _clear_clients()
    ChromaStore(index, model_id=str(tiny_model_path), dim=64)
    assert len(calls) == 2


# --------------------------------------------------------------------------- row 2: read-only mount
def _mount_read_only(source: Path, target: Path) -> None:
    target.mkdir()
    for cmd in (["mount", "--bind", str(source), str(target)], ["mount", "-o", "remount,ro,bind", str(target)]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True)
            pytest.fail(f"this test needs a read-only bind mount (root, mount allowed); {' '.join(cmd)}: "
                        f"{done.stderr.strip()}")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture()
def read_only_index(tmp_path: Path, tiny_model_path: Path) -> Iterator[Path]:
    """An index whose BM25 folder was written by the previous tokenizer version, behind a read-only bind mount."""
    source = _build(tmp_path / "idx", tiny_model_path, TEXTS + ["Micro\u200dsoft Windows"])
    for meta in (source / "sparse_bm25").glob("snap-*/meta.json"):  # as an index written before this release
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "tokenizer_version": "nfkc-jieba_search-words-stop/2"}))
    mount = tmp_path / "ro"
    _mount_read_only(source, mount)
    try:
        yield mount
    finally:
        _clear_clients()
        subprocess.run(["umount", str(mount)], check=True)


def test_read_only_index_is_searched_and_never_written(read_only_index: Path, tiny_model_path: Path) -> None:
    assert not os.access(read_only_index, os.W_OK)
    before = _snapshot(read_only_index)
    rag = RAGPipeline(read_only_index, model_name=str(tiny_model_path))
    for mode in ("dense", "sparse", "hybrid"):
        assert rag.search("熊猫 竹子", k=2, mode=mode), mode
    assert rag.search("Microsoft", k=1, mode="sparse")[0].id == "id4"  # BM25 rebuilt in memory, new tokenizer
    assert [r.id for r in rag.get(["id1", "id2"])] == ["id1", "id2"]
    assert index_stats(read_only_index)["chunks"] == 5
    with pytest.raises(StoreError, match="read-only .* can be searched"):
        rag.add_texts(["新的一段。"], embeddings=_vectors(1))
    with pytest.raises(StoreError, match="read-only"):
        rag.ingest(texts=["新的一段。"])
    with pytest.raises(StoreError, match="read-only"):
        rag.delete(ids=["id1"])
    assert rag.store.count() == 5 and _snapshot(read_only_index) == before


@pytest.mark.slow
def test_read_only_index_through_the_cli(read_only_index: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    rc, lines = _cli("search", "熊猫", "--index", str(read_only_index), "--mode", "hybrid", "--json",
                     model=tiny_model_path)
    assert rc == 0 and lines == [], lines
    rc, lines = _cli("info", "--index", str(read_only_index))
    assert rc == 0 and lines == [], lines
    doc = tmp_path / "new.txt"
    doc.write_text("新的一段。", encoding="utf-8")
    rc, lines = _cli("ingest", str(doc), "--index", str(read_only_index), model=tiny_model_path)
    assert rc == 2 and len(lines) == 1 and "read-only" in lines[0] and "doctor" not in lines[0], lines


# ---------------------------------------------------------------- row 3: more ids than sqlite variables
@pytest.fixture(scope="module")
def forty_thousand(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    n = 40_000
    rag = RAGPipeline(tmp_path_factory.mktemp("many") / "idx", model_name=str(tiny_model_path))
    rag.add_texts([f"熊猫 第{i}段" for i in range(n)], ids=[f"id{i}" for i in range(n)], embeddings=_vectors(n),
                  metadatas=[{"n": i} for i in range(n)])
    return rag


@pytest.mark.slow
def test_forty_thousand_ids_and_deep_k_are_batched(forty_thousand: RAGPipeline) -> None:
    rag = forty_thousand
    ids = [f"id{i}" for i in range(40_000)]
    got = rag.get(ids)
    assert [r.id for r in got] == ids and got[-1].text == "熊猫 第39999段"
    page = rag.get_page(ids, where={"n": {"$gte": 10}}, limit=5, offset=39_985)
    assert [r.metadata["n"] for r in page] == [39_995, 39_996, 39_997, 39_998, 39_999]
    probe = rag.store.get(ids=["id7"], include_embeddings=True)[0].metadata["_embedding"]
    hits = rag.store.query(probe, 40_000)
    assert len(hits) == 40_000 and hits[0].id == "id7" and hits[0].text == "熊猫 第7段"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    for mode in ("dense", "sparse", "hybrid"):
        assert len(rag.search("熊猫", k=33_000, mode=mode)) == 33_000, mode
    assert rag.delete(ids=ids[:35_000] + [f"missing{i}" for i in range(5_000)]) == 35_000
    assert rag.store.count() == 5_000 and len(rag.sparse_index) == 5_000


def test_too_many_filter_values_is_an_input_error_not_doctor(rag: RAGPipeline) -> None:
    with pytest.raises(InputError, match="more than 10,000") as caught:
        rag.get_page(where={"n": {"$in": list(range(20_000))}})
    assert "doctor" not in str(caught.value)
    from chromadb.errors import InternalError

    error = translate_store_error(InternalError("error returned from database: (code: 1) too many SQL variables"),
                                  "read records", str(rag.index_path))
    assert isinstance(error, InputError) and "doctor" not in str(error)


# ------------------------------------------------------------------------- row 4: doctor where it helps
@pytest.mark.server
def test_server_errors_do_not_name_doctor(chroma_server: str, tiny_model_path: Path) -> None:
    import chromadb

    rag = RAGPipeline(chroma_url=chroma_server, collection="hostile_gone", model_name=str(tiny_model_path))
    rag.add_texts(TEXTS, embeddings=_vectors(len(TEXTS)))
    host, port = chroma_server.rsplit(":", 1)
    chromadb.HttpClient(host=host.split("//")[1], port=int(port)).delete_collection("hostile_gone")
    with pytest.raises(StoreError) as caught:  # the collection went away behind the pipeline's back
        rag.search("熊猫", mode="dense")
    assert "doctor" not in str(caught.value) and chroma_server in str(caught.value)
    from chromadb.errors import InternalError

    damaged = translate_store_error(InternalError("database disk image is malformed"), "search", chroma_server)
    assert type(damaged) is StoreError and "doctor" not in str(damaged)


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> RAGPipeline:
    pipeline = RAGPipeline(tmp_path_factory.mktemp("hostile") / "idx", model_name=str(tiny_model_path))
    pipeline.add_texts(TEXTS, ids=["panda", "wall", "tower", "tea"], metadatas=[{"n": i} for i in range(4)])
    return pipeline


# ---------------------------------------------------------------------- row 5: invisible characters
def test_invisible_characters_do_not_break_bm25_terms(tmp_path: Path, tiny_model_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from m3e_rag.encode.encoder import M3EEncoder
    from m3e_rag.index.chroma import chunk_id

    raw = ["大熊猫爱吃竹\u200b子", "Micro\u200dsoft Windows", "inter\u00adnational trade",
           "\ufeffword\u2060joiner\u200cx"]
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    seen: list[str] = []
    real = M3EEncoder._encode

    def spy(self: M3EEncoder, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        seen.extend(texts)
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(M3EEncoder, "_encode", spy)
    rag.ingest(texts=raw, sources=["a", "b", "c", "d"])
    assert seen == ["大熊猫爱吃竹子", "Microsoft Windows", "international trade", "wordjoinerx"]
    for query, source in (("竹子", "a"), ("Microsoft", "b"), ("international", "c"), ("竹\u200b子", "a"),
                          ("inter\u00adnational", "c"), ("wordjoinerx", "d")):
        assert rag.search(query, k=1, mode="sparse")[0].source == source, query
    seen.clear()
    rag.search("Micro\u200dsoft", k=1, mode="hybrid")
    assert seen == ["Microsoft"]  # the model reads the same cleaned query as BM25
    stored = {r.source: r for r in rag.get(rag.store.all_ids())}
    assert stored["a"].text == raw[0]  # the stored text is untouched, and so is its id
    assert stored["a"].id == chunk_id("a", raw[0])


# --------------------------------------------------------------------------- row 6: deep filters
def _nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"n": {"$gte": 0}}
    for _ in range(depth):
        where = {"$and": [where, {"n": {"$lte": 3}}]}
    return where


def test_filter_depth_is_the_same_answer_in_every_mode(rag: RAGPipeline) -> None:
    for mode in ("dense", "sparse", "hybrid"):
        ok = rag.search("熊猫", k=4, mode=mode, where=_nested(MAX_FILTER_DEPTH - 1))
        assert len(ok) >= 1, mode
        for depth in (MAX_FILTER_DEPTH + 1, 300, 100_000):
            with pytest.raises(InputError, match=f"more than {MAX_FILTER_DEPTH} levels"):
                rag.search("熊猫", k=4, mode=mode, where=_nested(depth))
        with pytest.raises(InputError, match=f"where_document filter nests .* more than {MAX_FILTER_DEPTH} levels"):
            rag.search("熊猫", mode=mode, where_document=_doc_nested(300))
    looped: dict[str, Any] = {"$and": []}
    looped["$and"].append(looped)  # a filter that contains itself ends in an InputError too
    with pytest.raises(InputError):
        rag.get_page(where=looped)
    with pytest.raises(InputError, match="levels"):
        rag.delete(where=_nested(300))
    assert rag.store.count() == 4


def _doc_nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"$contains": "熊"}
    for _ in range(depth):
        where = {"$or": [where, {"$contains": "竹"}]}
    return where


# -------------------------------------------------------------------------- row 7: metadata keys
@pytest.mark.parametrize("meta", [{"$and": 1}, {"": 1}, {"#x": 1}, {"chroma:document": "x"}, {"x": float("nan")},
                                  {"x": float("inf")}, {"x": [1.0, float("-inf")]}])
def test_bad_metadata_is_refused_by_name_before_anything_is_written(rag: RAGPipeline, tmp_path: Path,
                                                                    meta: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    key = next(iter(meta))
    before = sorted(rag.store.all_ids())
    doc = tmp_path / "file.txt"
    doc.write_text("一个文件。", encoding="utf-8")
    with pytest.raises(InputError, match=f"metadatas\\[1\\].*{key!r}".replace("$", "\\$")):
        rag.add_texts(["甲", "乙"], metadatas=[{"ok": 1}, meta], embeddings=_vectors(2))
    with pytest.raises(InputError) as caught:  # the file comes first in the run: it is not written either
        rag.ingest([doc], texts=["甲", "乙"], metadatas=[{"ok": 1}, meta])
    assert repr(key) in str(caught.value)
    store = rag.store
    monkeypatch.setattr(ChromaStore, "max_batch_size", property(lambda self: 2))
    records = [StoreRecord(f"r{i}", "丙", _vectors(1)[0], {"ok": i}) for i in range(5)]
    records.append(StoreRecord("r5", "丁", _vectors(1)[0], meta))
    with store.write_lock(), pytest.raises(InputError, match="record 'r5'"):
        store.upsert(records)  # the bad record is in the last batch: the first ones are not written either
    assert sorted(store.all_ids()) == before
