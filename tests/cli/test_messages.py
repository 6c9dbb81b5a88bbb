"""What the command says (issue 23, "a newcomer's day"): help on every option, errors that name flags, a missing
index that is "not found", a search that finds nothing and says why, and ``info`` in readable lines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import build_parser, main
from m3e_rag.cli.options import name_the_flags

TEXTS = ["大熊猫的食物几乎全部是竹子。", "The Eiffel Tower in Paris was finished in 1889.", "绿茶是不发酵茶。"]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    """Three short texts in an index built with the tiny model (sources: panda, tower, tea)."""
    folder = tmp_path_factory.mktemp("messages") / "idx"
    RAGPipeline(folder, model_name=str(tiny_model_path)).ingest(texts=TEXTS, sources=["panda", "tower", "tea"])
    return folder


def _subparsers(parser: argparse.ArgumentParser, name: str = "m3e-rag") -> Iterator[tuple[str, Any]]:
    """Every parser of the command: the top one, each subcommand's (and any nested one's)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _subparsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_subcommand_has_help_naming_its_default() -> None:
    """Before: info --device, search's query, --backend (everywhere) had no help text."""
    missing, no_default = [], []
    commands = list(_subparsers(build_parser()))
    assert {"m3e-rag ingest", "m3e-rag search", "m3e-rag eval", "m3e-rag info", "m3e-rag doctor",
            "m3e-rag serve"} <= {name for name, _ in commands}
    for name, parser in commands:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip() or (action.help or "").lstrip().startswith("(default"):
                missing.append(label)
                continue
            shown = formatter._get_help_string(action) or ""
            if action.default not in (None, False, argparse.SUPPRESS) and "default" not in shown.lower():
                no_default.append(label)
    assert missing == [] and no_default == []


def test_model_help_says_the_index_model_is_used_otherwise() -> None:
    search = dict(_subparsers(build_parser()))["m3e-rag search"]
    [model] = [a for a in search._actions if "--model" in a.option_strings]
    assert "recorded in an existing index" in (model.help or "")


def test_cli_errors_name_the_flag_not_the_python_argument(tmp_path: Path, index: Path, tiny_model_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "max_tokens must be from 8 to 510", "overlap_tokens must be...", "k must be a positive integer"."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("熊猫吃竹子。", encoding="utf-8")
    model = ["--model", str(tiny_model_path)]
    cases = [
        (["ingest", str(docs), "--index", str(tmp_path / "i"), "--chunk-tokens", "0", *model], "--chunk-tokens must",
         "max_tokens"),
        (["ingest", str(docs), "--index", str(tmp_path / "i"), "--overlap-tokens", "300", *model],
         "--overlap-tokens must", "overlap_tokens"),
        (["search", "熊猫", "--index", str(index), "-k", "0"], "-k must be a positive integer", " k must"),
        (["search", "熊猫", "--index", str(index), "--where-document", '{"$bad": 1}'], "Invalid --where-document",
         "where_document"),
    ]
    for argv, said, not_said in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and not_said not in err, err


def test_name_the_flags_translates_arguments_and_leaves_words_and_paths() -> None:
    assert name_the_flags("pass model_name='/p/m3e-base' (a folder)") == "pass --model '/p/m3e-base' (a folder)"
    assert name_the_flags("no 'text' column; pass text_column= to pick one") == (
        "no 'text' column; pass --text-column to pick one")
    assert name_the_flags("(0 to 127 for max_tokens=256)") == "(0 to 127 for --chunk-tokens 256)"
    assert name_the_flags("check where / where_document") == "check --where / --where-document"
    # A plain word in a sentence and a path holding an argument's name are left as they are.
    words = "where the file is: /data/chunk_tokens/a.txt"
    assert name_the_flags(words) == words


@pytest.mark.parametrize("command", [["doctor"], ["info"], ["search", "熊猫"]])
def test_a_missing_index_folder_is_not_found_exit_2(command: list[str], tmp_path: Path, tiny_model_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `m3e-rag doctor --index ./nonexistent` said DAMAGED and exited 3."""
    missing = tmp_path / "nonexistent"
    model = ["--model", str(tiny_model_path)] if command[0] == "search" else []
    assert main([*command, "--index", str(missing), *model]) == 2
    out, err = capsys.readouterr()
    assert f"not found: {missing}" in err and err.count("\n") == 1
    assert "DAMAGED" not in out + err and not missing.exists()


def test_search_without_results_says_no_results_and_why(tmp_path: Path, index: Path, tiny_model_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `m3e-rag search "xyzzy" --mode sparse` printed nothing and exited 0."""
    assert main(["search", "xyzzy", "--index", str(index), "--mode", "sparse"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no results: BM25 found none of the query's words") and "--mode dense" in out

    assert main(["search", "熊猫", "--index", str(index), "--where", '{"source": "nowhere"}']) == 0
    assert capsys.readouterr().out.startswith("no results: no chunk matches --where")

    # --json: stdout stays the list scripts parse; the reason goes to stderr.
    assert main(["search", "xyzzy", "--index", str(index), "--mode", "sparse", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and err.startswith("no results: BM25 found none")

    empty = tmp_path / "empty"
    rag = RAGPipeline(empty, model_name=str(tiny_model_path))
    rag.ingest(texts=["熊猫"], sources=["only"])
    rag.delete(source="only")
    assert main(["search", "熊猫", "--index", str(empty), "--mode", "sparse"]) == 0
    assert capsys.readouterr().out.startswith("no results: the index is empty; add files with `m3e-rag ingest")


def test_info_prints_aligned_readable_settings(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `chunker: {'chunker_version': '2', 'max_tokens': 256, 'overlap_tokens': 32}`."""
    assert main(["info", "--index", str(index)]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = {line.split(":", 1)[0]: line for line in lines}
    assert fields["chunker"].endswith("256 tokens per chunk, 32 tokens of overlap (chunker version 2)")
    assert "{" not in "".join(lines) and "'" not in "".join(lines)
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(columns) == 1  # every value starts in the same column
    assert main(["info", "--index", str(index), "--json"]) == 0  # --json unchanged: the machine names and the dict
    data = json.loads(capsys.readouterr().out)
    assert data["chunker"]["max_tokens"] == 256 and data["chunks"] == 3
