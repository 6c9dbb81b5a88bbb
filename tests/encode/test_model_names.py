"""One model folder, one name: a relative and an absolute spelling of it open the same index."""

from __future__ import annotations

import os
from pathlib import Path

from m3e_rag import RAGPipeline
from m3e_rag.encode.loading import resolve_model_name


def test_folder_names_resolve_to_one_absolute_path(tiny_model_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tiny_model_path.parent)
    relative = os.path.join(".", tiny_model_path.name)
    assert resolve_model_name(relative) == str(tiny_model_path.resolve())
    assert resolve_model_name("m3e-base") == "moka-ai/m3e-base"  # an alias is still a hub id


def test_index_built_with_absolute_path_opens_with_relative_path(tmp_path: Path, tiny_model_path: Path,
                                                                 monkeypatch) -> None:
    index = tmp_path / "idx"
    RAGPipeline(index, model_name=str(tiny_model_path.resolve())).add_texts(["长城全长两万多公里。"], ids=["a"])
    monkeypatch.chdir(tiny_model_path.parent)
    rag = RAGPipeline(index, model_name=os.path.join(".", tiny_model_path.name))
    assert [r.id for r in rag.search("长城", k=1, mode="dense")] == ["a"]
