"""The model registry: facts known without loading, prompts reaching the encoder, `m3e-rag models`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import cli
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.encode.loading import is_m3e, resolve_model_name
from m3e_rag.encode.registry import (
    BGE_ZH_QUERY_INSTRUCTION,
    MODELS,
    ModelSpec,
    register_model,
    resolve_spec,
    spec_for,
)
from m3e_rag.errors import InputError


def test_registry_holds_m3e_and_bge_facts() -> None:
    facts = {a: (s.dim, s.max_tokens, s.query_prompt, s.document_prompt) for a, s in MODELS.items()}
    assert facts["m3e-small"] == (512, 512, "", "")
    assert facts["m3e-base"] == (768, 512, "", "")
    assert facts["m3e-large"] == (1024, 512, "", "")
    for alias, dim in (("bge-small-zh-v1.5", 512), ("bge-base-zh-v1.5", 768), ("bge-large-zh-v1.5", 1024)):
        assert facts[alias] == (dim, 512, "为这个句子生成表示以用于检索相关文章：", "")
        assert MODELS[alias].hub_id == f"BAAI/{alias}" and MODELS[alias].licence == "MIT"
    assert facts["bge-m3"] == (1024, 8192, "", "")
    assert MODELS["bge-m3"].chunk_budget() == 510 and MODELS["m3e-base"].chunk_budget() == 510
    assert MODELS["bge-m3"].chunk_budget(cap=4000) == 4000
    data = MODELS["bge-base-zh-v1.5"].to_dict()
    assert data["model_card"] == "https://huggingface.co/BAAI/bge-base-zh-v1.5" == data["licence_url"]
    assert data["vector_bytes"] == 768 * 4 and data["languages"] == ["zh"]


def test_names_resolve_and_dimensions_are_known_unloaded() -> None:
    assert resolve_spec("baai/BGE-M3") is MODELS["bge-m3"]
    assert resolve_model_name("bge-small-zh-v1.5") == "BAAI/bge-small-zh-v1.5"
    enc = M3EEncoder("bge-large-zh-v1.5")
    assert (enc.dim, enc.max_seq_length, enc.is_loaded) == (1024, 512, False)
    assert is_m3e("moka-ai/m3e-small") and not is_m3e("BAAI/bge-base-zh-v1.5")


def test_local_folders_are_recognised_by_name_only(tmp_path: Path) -> None:
    assert spec_for(tmp_path / "bge-base-zh-v1.5") is MODELS["bge-base-zh-v1.5"]
    cache = tmp_path / "hub" / "models--BAAI--bge-small-zh-v1.5" / "snapshots" / "0123abcd"
    assert spec_for(cache) is MODELS["bge-small-zh-v1.5"]
    assert spec_for(tmp_path / "my-finetune") is None
    assert spec_for(tmp_path / "bge-base-zh-v1.5" / "checkpoint-100") is None


def test_register_model_refuses_clashes_and_bad_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("m3e_rag.encode.registry.MODELS", dict(MODELS))
    from m3e_rag.encode import registry as models

    spec = ModelSpec("my-model", "org/my-model", 256, 128, ("en",), 5)
    assert register_model(spec) is models.MODELS["my-model"]
    with pytest.raises(InputError, match="already registered"):
        register_model(spec)
    register_model(spec, replace=True)
    with pytest.raises(InputError, match="no '/'"):
        register_model(ModelSpec("org/x", "org/x", 8, 8, ("en",), 1))
    with pytest.raises(InputError, match="dim"):
        ModelSpec("bad", "org/bad", 0, 512, ("en",), 1)


@pytest.fixture()
def bge_like(monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path) -> str:
    """The tiny stand-in registered as a bge-zh-style model (query instruction, no document prompt)."""
    spec = ModelSpec("tiny-bge-zh", str(tiny_model_path), 64, 512, ("zh",), 1, family="bge",
                     query_prompt=BGE_ZH_QUERY_INSTRUCTION)
    monkeypatch.setitem(MODELS, spec.alias, spec)
    return spec.alias


def test_registry_prompt_reaches_queries_only(bge_like: str, tiny_model_path: Path) -> None:
    enc = M3EEncoder(bge_like)
    assert enc.model_name == str(tiny_model_path)
    assert enc.query_prompt == BGE_ZH_QUERY_INSTRUCTION and enc.document_prompt == ""
    query = "熊猫吃什么？"
    with_instruction = M3EEncoder(str(tiny_model_path), query_prompt=BGE_ZH_QUERY_INSTRUCTION).encode_query(query)
    bare = M3EEncoder(str(tiny_model_path), query_prompt="").encode_query(query)
    # The folder itself is now a registered model, so it gets the instruction too.
    assert np.allclose(M3EEncoder(str(tiny_model_path)).encode_query(query), with_instruction, atol=1e-6)
    assert np.allclose(enc.encode_query(query), with_instruction, atol=1e-6)
    assert not np.allclose(with_instruction, bare, atol=1e-3)
    assert np.allclose(enc.encode_documents([query])[0], bare, atol=1e-6)  # passages: no instruction
    # An explicit prompt (even an empty one) wins over the registry.
    assert M3EEncoder(bge_like, query_prompt="").query_prompt == ""
    # Sentence similarity never uses the retrieval instruction.
    sim = enc.similarity([query], ["大熊猫主要吃竹子。"])[0]
    assert sim == pytest.approx(M3EEncoder(str(tiny_model_path)).similarity(query, "大熊猫主要吃竹子。"), abs=1e-5)


def test_models_command_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--json"]) == 0
    listed = {m["alias"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(listed) >= {"m3e-small", "m3e-base", "m3e-large", "bge-small-zh-v1.5", "bge-base-zh-v1.5",
                           "bge-large-zh-v1.5", "bge-m3"}
    assert listed["bge-m3"]["max_tokens"] == 8192 and listed["bge-base-zh-v1.5"]["query_prompt"]
    assert cli.main(["models"]) == 0
    table = capsys.readouterr().out
    assert "bge-m3" in table and "8192" in table and "为这个句子生成表示以用于检索相关文章：" in table
