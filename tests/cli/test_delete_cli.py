"""``m3e-rag delete --source`` and ``m3e-rag ingest --sync`` (issue 23: "delete a file from the folder,
re-ingest: its chunks stay searchable; the CLI has no way to remove a source or to sync a folder").

In-process (``main([...])``): the stand-in model loads once for the whole file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli.delete import EXIT_NO_MATCH
from m3e_rag.cli.dispatch import main

FILES = {"a.txt": "zebracorn", "b.md": "quokkafish", "c.txt": "narwhalox"}


@pytest.fixture
def docs(tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, word in FILES.items():
        (folder / name).write_text(f"The word {word} is in this file only.", encoding="utf-8")
    return folder


def _ingest(folder: Path | str, index: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["ingest", str(folder), "--index", str(index), *extra])
    return rc, capsys.readouterr().out


def _sparse_names(index: Path, word: str, model: Path) -> set[str]:
    rag = RAGPipeline(index, model_name=str(model))
    return {Path(h.source or "").name for h in rag.search(word, k=10, mode="sparse")}


def test_delete_source_reports_each_source_and_exits_4_when_one_matches_nothing(tmp_path, docs, tiny_model_path,
                                                                                capsys):
    index = tmp_path / "idx"
    assert _ingest(docs, index, capsys=capsys)[0] == 0
    rc = main(["delete", "--index", str(index), "--source", str(docs / "a.txt"), "--source", str(docs / "nope.txt"),
               "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == EXIT_NO_MATCH == 4
    assert report == {
        "deleted": 1,
        "sources": [{"source": str(docs / "a.txt"), "chunks": 1}, {"source": str(docs / "nope.txt"), "chunks": 0}],
        "where": None,
        "unmatched": [str(docs / "nope.txt")],
    }
    assert _sparse_names(index, "zebracorn", tiny_model_path) == set()  # gone from BM25 too
    assert _sparse_names(index, "quokkafish", tiny_model_path) == {"b.md"}

    assert main(["delete", "--index", str(index), "--source", str(docs / "b.md")]) == 0
    assert capsys.readouterr().out == f"deleted 1 chunks of {docs / 'b.md'}\n"
    assert main(["delete", "--index", str(index), "--source", str(docs / "b.md")]) == EXIT_NO_MATCH
    assert "no chunks of" in capsys.readouterr().out


def test_delete_finds_a_file_ingested_through_a_linked_folder_by_its_relative_path(tmp_path, docs, monkeypatch,
                                                                                   capsys):
    (tmp_path / "via").symlink_to(docs, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    index = tmp_path / "idx"
    assert _ingest("via", index, capsys=capsys)[0] == 0  # stored as <tmp>/via/a.txt: the link kept
    assert main(["delete", "--index", str(index), "--source", "via/a.txt"]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 chunks of via/a.txt")


def test_delete_by_where_alone_and_narrowed(tmp_path, docs, capsys):
    index = tmp_path / "idx"
    _ingest(docs, index, capsys=capsys)
    md = json.dumps({"file_type": "md"})
    assert main(["delete", "--index", str(index), "--source", str(docs / "c.txt"), "--where", md]) == EXIT_NO_MATCH
    assert "matching --where" in capsys.readouterr().out
    assert main(["delete", "--index", str(index), "--where", md, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert RAGPipeline(index).stats()["sources"] == 2  # a.txt and c.txt kept


def test_delete_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, docs, capsys):
    index = tmp_path / "idx"
    _ingest(docs, index, capsys=capsys)
    cases = {
        (): "needs --source PATH",
        ("--where", "{}"): "empty filter",
        ("--where", "[1]"): "must be a JSON object",
        ("--where", '{"$bad": 1}'): "$bad",
    }
    for extra, message in cases.items():
        assert main(["delete", "--index", str(index), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    missing = tmp_path / "typo"
    assert main(["delete", "--index", str(missing), "--source", "a.txt"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["delete", "--index", str(empty), "--source", "a.txt"]) == 2
    assert "No m3e-rag index" in capsys.readouterr().err and list(empty.iterdir()) == []
    assert RAGPipeline(index).stats()["chunks"] == 3
    with pytest.raises(SystemExit):
        main(["delete", "--help"])
    assert "4: at least one matched nothing" in " ".join(capsys.readouterr().out.split())


def test_ingest_sync_through_the_cli_in_json_and_plain_text(tmp_path, docs, capsys):
    index = tmp_path / "idx"
    _ingest(docs, index, capsys=capsys)
    (docs / "a.txt").unlink()
    rc, out = _ingest(docs, index, "--json", capsys=capsys)  # no --sync: nothing removed
    assert rc == 0 and json.loads(out)["synced"] is False and json.loads(out)["chunks_removed"] == 0

    rc, out = _ingest(docs, index, "--sync", "--json", capsys=capsys)
    report = json.loads(out)
    assert rc == 0 and report["synced"] is True and report["chunks_removed"] == 1
    assert report["sources_removed"] == [{"source": (docs / "a.txt").as_posix(), "chunks": 1}]
    assert report["sources_kept"] == []

    (docs / "b.md").unlink()
    rc, out = _ingest(docs, index, "--sync", capsys=capsys)
    assert rc == 0
    assert "sync: 1 files no longer present, their chunks removed" in out
    assert f"  removed {(docs / 'b.md').as_posix()}: 1 chunks (the file is gone)" in out
    assert RAGPipeline(index).stats()["sources"] == 1
