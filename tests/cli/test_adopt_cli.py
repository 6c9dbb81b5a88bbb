"""``m3e-rag adopt`` as scripts use it: JSON output, one-line errors with exit 2, the progress bar on a terminal.

Run in-process through the CLI's ``main`` (the models stay loaded between commands); the foreign folders
are written by langchain_chroma.Chroma itself (tests/support/foreign_chroma.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from m3e_rag.cli.dispatch import main
from m3e_rag.encode.encoder import M3EEncoder
from tests.support.foreign_chroma import LC_COLLECTION, langchain_folder, same_records, snapshot


@pytest.fixture(scope="module")
def e5(bilingual_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(bilingual_model_path)).load()


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M3E_MODEL", raising=False)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.slow
def test_adopt_json_then_search_with_the_recorded_model(tmp_path: Path, e5: M3EEncoder, bilingual_model_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    code = main(["adopt", "--index", str(folder), "--collection", LC_COLLECTION, "--model", str(bilingual_model_path),
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["records"] == 6 and report["space"] == "cosine" and report["copied_to"] is None
    assert report["collection"] == LC_COLLECTION and report["bm25_built"] and report["sample_cosine"] > 0.999
    # No --model: search opens the index with the model adopt recorded in it.
    assert main(["search", "大熊猫吃竹子吗？", "--index", str(folder), "--collection", LC_COLLECTION, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["metadata"]["source"] == "panda.md"
    # Adopting again: nothing to do, said in one line.
    assert main(["adopt", "--index", str(folder), "--collection", LC_COLLECTION, "--model",
                 str(bilingual_model_path)]) == 2
    assert "already an m3e-rag collection" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_l2_refused_with_exit_2_then_copied(tmp_path: Path, e5: M3EEncoder, bilingual_model_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=False)
    before = snapshot(folder, LC_COLLECTION)
    args = ["adopt", "--index", str(folder), "--collection", LC_COLLECTION, "--model", str(bilingual_model_path)]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'l2' distance" in line and "--copy-to NEW_NAME" in line
    assert main([*args, "--copy-to", "lc_cosine", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["copied_to"], report["collection"], report["space"]) == ("lc_cosine", "lc_cosine", "l2")
    assert same_records(before, snapshot(folder, LC_COLLECTION))
    assert main(["search", "When was the Eiffel Tower finished?", "--index", str(folder), "--collection", "lc_cosine",
                 "--json", "--mode", "sparse"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["metadata"]["source"] == "tower.txt"


def test_bad_locations_exit_2_with_one_line(tmp_path: Path, e5: M3EEncoder, bilingual_model_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(bilingual_model_path)]
    assert main(["adopt", "--index", str(tmp_path / "missing"), "--collection", LC_COLLECTION, *model]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "missing").exists()
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    assert main(["adopt", "--index", str(folder), "--collection", "nope", *model]) == 2
    assert "no collection 'nope'" in one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as caught:  # argparse: --collection is required, --index / --chroma-url exclusive
        main(["adopt", "--index", str(folder), "--chroma-url", "http://127.0.0.1:9", "--collection", "x"])
    assert caught.value.code == 2


@pytest.mark.slow
def test_progress_bar_on_a_terminal_and_a_one_line_notice(tmp_path: Path, e5: M3EEncoder, bilingual_model_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = langchain_folder(tmp_path / "lc", e5, cosine=True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["adopt", "--index", str(folder), "--collection", LC_COLLECTION, "--model",
                 str(bilingual_model_path)]) == 0
    captured = capsys.readouterr()
    assert "bm25" in captured.err and "6/6" in captured.err  # tqdm's bar, on stderr
    lines = captured.out.splitlines()
    assert len(lines) == 1 and "6 records adopted in place (cosine space" in lines[0]
