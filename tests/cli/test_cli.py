"""The m3e-rag command as scripts use it: JSON output, exit codes, skipped files, re-ingest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def run_cli(*args: str, model: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if model is not None:
        env["M3E_MODEL"] = model
    else:
        env.pop("M3E_MODEL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "m3e_rag", *args], capture_output=True, text=True, env=env, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"m3e-rag {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "panda_gbk.txt").write_bytes(
        "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹笋和竹叶。".encode("gbk")
    )
    (folder / "wall_utf8.md").write_text("长城是中国古代的军事防御工程，全长两万多公里。", encoding="utf-8")
    (folder / "tower_en.txt").write_text("The Eiffel Tower in Paris was finished in 1889.", encoding="utf-8")
    (folder / "tea_utf8.txt").write_text("绿茶是不发酵茶，西湖龙井是著名的绿茶。", encoding="utf-8")
    (folder / "image.bin").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.mark.slow
def test_ingest_search_reingest_through_the_cli(tmp_path: Path, mixed_folder: Path,
                                                 bilingual_model_path: Path) -> None:
    index = str(tmp_path / "index")
    model = str(bilingual_model_path)
    report = json.loads(run_cli("ingest", str(mixed_folder), "--index", index, "--json", model=model).stdout)
    assert set(report) >= {"files_seen", "files_skipped", "chunks_added", "chunks_unchanged", "chunks_removed",
                           "texts_embedded", "seconds"}
    assert report["files_seen"] == 6
    skipped = {Path(s["path"]).name: s["reason"] for s in report["files_skipped"]}
    assert "binary" in skipped["image.bin"] and "empty" in skipped["empty.txt"]
    assert report["chunks_added"] == 4 and report["texts_embedded"] == 4

    hits = json.loads(run_cli("search", "大熊猫吃什么？", "--index", index, "--json", "-k", "2", model=model).stdout)
    assert [set(h) for h in hits] == [{"id", "text", "score", "metadata"}] * 2
    assert hits[0]["metadata"]["source"].endswith("panda_gbk.txt")
    assert "大熊猫的食物几乎全部是竹子" in hits[0]["text"]

    again = json.loads(run_cli("ingest", str(mixed_folder), "--index", index, "--json", model=model).stdout)
    assert again["texts_embedded"] == 0 and again["chunks_added"] == 0 and again["chunks_unchanged"] == 4

    # With no --model and no $M3E_MODEL, the model recorded in the index is used.
    info = json.loads(run_cli("info", "--index", index, "--json").stdout)
    assert info["model"] == model and info["dim"] == 384 and info["chunks"] == 4 and info["sources"] == 4

    where = json.dumps({"file_type": "md"})
    only_md = json.loads(run_cli("search", "熊猫", "--index", index, "--json", "--where", where).stdout)
    assert [Path(h["metadata"]["source"]).name for h in only_md] == ["wall_utf8.md"]
    hybrid = json.loads(run_cli("search", "龙井", "--index", index, "--json", "--mode", "hybrid", "-k", "1").stdout)
    assert hybrid[0]["metadata"]["source"].endswith("tea_utf8.txt")


def test_bad_input_exits_non_zero_with_one_line(tmp_path: Path, tiny_model_path: Path) -> None:
    model = str(tiny_model_path)
    index = str(tmp_path / "index")
    missing = run_cli("ingest", str(tmp_path / "nope"), "--index", index, model=model, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    run_cli("ingest", str(EXAMPLES / "eiffel_tower.md"), "--index", index, model=model)
    bad_json = run_cli("search", "x", "--index", index, "--where", "{oops", model=model, check=False)
    assert bad_json.returncode == 2 and "--where is not valid JSON" in bad_json.stderr
    no_index = run_cli("search", "x", "--index", str(tmp_path / "none"), model=model, check=False)
    assert no_index.returncode == 2 and "m3e-rag ingest" in no_index.stderr
    wrong = run_cli("search", "x", "--index", index, model=str(standins_minilm()), check=False)
    assert wrong.returncode == 2 and "was built with model" in wrong.stderr
    # Nothing was lost by the refused calls.
    info = json.loads(run_cli("info", "--index", index, "--json", model=model).stdout)
    assert info["chunks"] >= 1


def standins_minilm() -> Path:
    from tests.support.standins import minilm_path

    return minilm_path()


def test_info_without_index_describes_the_model(tiny_model_path: Path) -> None:
    info = json.loads(run_cli("info", "--json", model=str(tiny_model_path)).stdout)
    assert info["dim"] == 64 and info["backend"] == "torch" and info["device"] == "cpu"
    assert "torch" in info["versions"]
    offline = run_cli("info", "--json", model="moka-ai/m3e-base", check=False)
    assert offline.returncode == 2 and "HF_ENDPOINT" in offline.stderr
