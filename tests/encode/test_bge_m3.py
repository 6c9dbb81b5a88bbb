"""BGE-M3's outputs in the encoder: heads found by files, the outputs' shapes and order, errors, scores.

Fidelity against FlagEmbedding itself is in ``test_bge_m3_fidelity.py``; here the behaviour of the API.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from m3e_rag import M3EEncoder
from m3e_rag.encode import bge_m3
from m3e_rag.encode.bge_m3 import ModelOutputs, colbert_score, combined_score, head_files, lexical_score
from m3e_rag.errors import InputError, InputTooLongError, ModelLoadError
from tests.support import standins

TEXTS = [
    "北京是中国的首都，也是一座历史悠久的城市。",
    "Paris is the capital of France.",
    "M3E 模型 supports 中英文 mixed text, 也支持检索。",
    "我爱🍜和☕ 🎉",
    "人工智能",
]


@pytest.fixture(scope="module")
def bge_path() -> Path:
    """The BGE-M3-shaped stand-in (XLM-R, CLS pooling, random heads in BGE-M3's files)."""
    return standins.bge_m3_standin()


def _linked_copy(source: Path, target: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A folder of symlinks to ``source``'s entries (all but ``leave_out``): a new model folder, weights shared."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.name not in leave_out and not entry.name.startswith("."):
            (target / entry.name).symlink_to(entry)
    return target


# ------------------------------------------------------------------------------------------------ heads by files
def test_heads_are_found_by_files_not_by_name(tmp_path: Path, bge_path: Path, tiny_model_path: Path) -> None:
    named = tmp_path / "bge-m3"  # the name of the real model, but no head files: dense only
    shutil.copytree(tiny_model_path, named)
    assert head_files(named) == {} and bge_m3.outputs_of(named) == ("dense",)
    assert M3EEncoder(str(named)).outputs == ("dense",)
    other = _linked_copy(bge_path, tmp_path / "some-model")  # any name, both files: all three outputs
    assert head_files(other) == {"sparse": other / "sparse_linear.pt", "colbert": other / "colbert_linear.pt"}
    encoder = M3EEncoder(str(other))
    assert encoder.outputs == ("dense", "sparse", "colbert")
    assert not encoder.is_loaded  # known from the files alone


@pytest.mark.slow
def test_a_folder_with_one_head_gives_that_output_only(tmp_path: Path, bge_path: Path) -> None:
    folder = _linked_copy(bge_path, tmp_path / "sparse-only", leave_out=("colbert_linear.pt",))
    encoder = M3EEncoder(str(folder))
    assert encoder.outputs == ("dense", "sparse")
    out = encoder.encode_outputs(TEXTS[:2], sparse=True)
    assert out.lexical is not None and all(out.lexical) and out.colbert is None
    with pytest.raises(InputError) as err:
        encoder.encode_outputs(TEXTS[:2], colbert=True)
    message = str(err.value)
    assert str(folder) in message and "colbert_linear.pt" in message and "colbert=False" in message


def test_a_model_without_heads_refuses_them_and_still_gives_dense(tiny_model_path: Path) -> None:
    encoder = M3EEncoder(str(tiny_model_path))
    with pytest.raises(InputError, match=r"no sparse output.*sparse_linear\.pt.*sparse=False"):
        encoder.encode_outputs(TEXTS)
    dense = encoder.encode_outputs(TEXTS, sparse=False)
    assert dense.lexical is None and dense.colbert is None
    np.testing.assert_allclose(dense.dense, encoder.encode_documents(TEXTS), atol=1e-6)


# ------------------------------------------------------------------------------------------------ the outputs
@pytest.mark.slow
def test_outputs_are_in_text_order_and_agree_with_the_dense_path(bge_path: Path) -> None:
    encoder = M3EEncoder(str(bge_path), batch_size=2)  # several batches, sorted by length inside
    out = encoder.encode_outputs(TEXTS, sparse=True, colbert=True)
    assert isinstance(out, ModelOutputs) and out.dense.shape == (len(TEXTS), 384) and out.dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out.dense, encoder.encode_documents(TEXTS), atol=1e-5)
    assert out.lexical is not None and out.colbert is not None
    tokenizer = encoder.tokenizer
    special = {tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    for i, text in enumerate(TEXTS):
        alone = encoder.encode_outputs([text], sparse=True, colbert=True)  # one text: no batch neighbours
        assert alone.lexical is not None and alone.colbert is not None
        assert alone.lexical[0].keys() == out.lexical[i].keys()
        assert all(math.isclose(v, out.lexical[i][k], abs_tol=1e-5) for k, v in alone.lexical[0].items())
        ids = tokenizer(text)["input_ids"]
        assert {int(k) for k in out.lexical[i]} <= set(ids) - special and all(v > 0 for v in out.lexical[i].values())
        assert out.colbert[i].shape == (len(ids) - 1, 384) and out.colbert[i].dtype == np.float32  # all but CLS
        np.testing.assert_allclose(np.linalg.norm(out.colbert[i], axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(alone.colbert[0], out.colbert[i], atol=1e-5)


def test_only_the_heads_asked_for_run(bge_path: Path) -> None:
    encoder = M3EEncoder(str(bge_path))
    encoder.encode_outputs(TEXTS[:2], sparse=True, colbert=True)  # both heads now loaded for this model
    loaded = bge_m3._heads(encoder._loaded(), ["sparse", "colbert"])
    calls = {"sparse": 0, "colbert": 0}
    hooks = [getattr(loaded, kind).register_forward_hook(lambda *_, kind=kind: calls.__setitem__(kind, calls[kind] + 1))
             for kind in calls]
    try:
        out = encoder.encode_outputs(TEXTS[:2], sparse=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.colbert is None and calls == {"sparse": 1, "colbert": 0}


def test_query_side_uses_the_query_prompt(bge_path: Path) -> None:
    encoder = M3EEncoder(str(bge_path), query_prompt="查询：")
    query = encoder.encode_outputs(["大熊猫吃什么"], "query", sparse=True, colbert=True)
    written = encoder.encode_outputs(["查询：大熊猫吃什么"], "document", sparse=True, colbert=True)
    assert query.lexical == written.lexical
    assert query.colbert is not None and written.colbert is not None
    np.testing.assert_allclose(query.colbert[0], written.colbert[0], atol=1e-6)
    plain = encoder.encode_outputs(["大熊猫吃什么"], "document", sparse=False, colbert=True)
    assert plain.colbert is not None and plain.colbert[0].shape[0] < query.colbert[0].shape[0]


def test_window_truncation_follows_on_overflow(bge_path: Path) -> None:
    long_text = "北京的历史 " * 400  # far past the stand-in's 512-token window
    with pytest.raises(InputTooLongError, match="window of 512"):
        M3EEncoder(str(bge_path), on_overflow="error").encode_outputs([long_text], colbert=True)
    encoder = M3EEncoder(str(bge_path), on_overflow="truncate")
    before = encoder.stats.truncated
    out = encoder.encode_outputs([long_text, TEXTS[1]], colbert=True)
    assert out.colbert is not None and out.colbert[0].shape == (511, 384)  # the window less the CLS token
    assert encoder.stats.truncated == before + 1


def test_bad_arguments_are_refused_with_the_fix(bge_path: Path) -> None:
    encoder = M3EEncoder(str(bge_path))
    with pytest.raises(InputError, match="kind must be 'document' or 'query'"):
        encoder.encode_outputs(TEXTS, "passage")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="colbert must be True or False"):
        encoder.encode_outputs(TEXTS, colbert="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"texts\[1\] is an empty string"):
        encoder.encode_outputs(["ok", ""])
    with pytest.raises(InputError, match="a list of strings"):
        encoder.encode_outputs("one text")
    empty = encoder.encode_outputs([], sparse=True, colbert=True)
    assert empty.dense.shape == (0, 384) and empty.lexical == [] and empty.colbert == []


def test_heads_need_the_torch_backend(bge_path: Path) -> None:
    encoder = M3EEncoder(str(bge_path), backend="onnx")
    with pytest.raises(InputError, match="need backend='torch'"):
        encoder.encode_outputs(TEXTS, sparse=True)
    assert not encoder.is_loaded  # refused before any weights were loaded


@pytest.mark.slow  # each case loads the model from a new folder
@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"not a torch file", "cannot be read"), (None, "no fitting 'weight' (found shape (2, 384))")],
)
def test_a_broken_head_file_is_named(tmp_path: Path, bge_path: Path, content: bytes | None, problem: str) -> None:
    import torch

    folder = _linked_copy(bge_path, tmp_path / "broken", leave_out=("sparse_linear.pt",))
    if content is None:
        torch.save({"weight": torch.zeros(2, 384), "bias": torch.zeros(2)}, folder / "sparse_linear.pt")
    else:
        (folder / "sparse_linear.pt").write_bytes(content)
    with pytest.raises(ModelLoadError) as err:
        M3EEncoder(str(folder)).encode_outputs(TEXTS[:1])
    assert str(folder / "sparse_linear.pt") in str(err.value) and problem in str(err.value)


@pytest.mark.slow
def test_sentence_transformers_loaded_models_give_the_same_outputs(
    tmp_path: Path, bge_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sentence_transformers import SentenceTransformer

    import m3e_rag.encode.native as native

    reference = M3EEncoder(str(bge_path)).encode_outputs(TEXTS, sparse=True, colbert=True)
    monkeypatch.setattr(native, "plan_for", lambda path: None)  # the loader then falls back to sentence-transformers
    encoder = M3EEncoder(str(_linked_copy(bge_path, tmp_path / "st-loaded")))
    out = encoder.encode_outputs(TEXTS, sparse=True, colbert=True)
    assert isinstance(encoder._loaded().st, SentenceTransformer)
    np.testing.assert_allclose(out.dense, reference.dense, atol=1e-5)
    assert out.lexical is not None and reference.lexical is not None and out.colbert is not None
    for mine, theirs in zip(out.lexical, reference.lexical, strict=True):
        assert mine.keys() == theirs.keys() and all(math.isclose(v, theirs[k], abs_tol=1e-5) for k, v in mine.items())
    for mine_c, theirs_c in zip(out.colbert, reference.colbert or [], strict=True):
        np.testing.assert_allclose(mine_c, theirs_c, atol=1e-5)


# ------------------------------------------------------------------------------------------------ scores
def test_lexical_score_sums_shared_tokens() -> None:
    assert lexical_score({"5": 0.5, "7": 2.0, "9": 1.0}, {"7": 0.25, "9": 3.0, "11": 4.0}) == pytest.approx(3.5)
    assert lexical_score({"5": 1.0}, {"6": 1.0}) == 0.0


def test_colbert_score_is_the_mean_best_match() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    d = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    assert colbert_score(q, d) == pytest.approx((1.0 + 0.8) / 2)
    with pytest.raises(InputError, match="same width"):
        colbert_score(q, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(InputError, match="at least one token vector"):
        colbert_score(q, np.zeros((0, 2), dtype=np.float32))


def test_combined_score_is_flagembeddings_weighted_mean() -> None:
    assert bge_m3.DEFAULT_WEIGHTS == (1.0, 1.0, 1.0)  # FlagEmbedding 1.4.2's compute_score default
    assert combined_score(0.9, 0.3, 0.6) == pytest.approx(0.6)
    assert combined_score(0.9, 0.3, 0.6, weights=(0.4, 0.2, 0.4)) == pytest.approx(0.36 + 0.06 + 0.24)
    assert combined_score(0.9, 0.3, None, weights=(0.4, 0.2, 0.4)) == pytest.approx((0.36 + 0.06) / 0.6)
    for weights, message in (((1.0, 1.0), "three numbers"), ((1.0, -1.0, 1.0), ">= 0"),
                             ((0.0, 0.0, 1.0), "no weight to the scores passed")):
        with pytest.raises(InputError, match=message):
            combined_score(0.9, 0.3, None, weights=weights)



# ------------------------------------------------------------------------------------------------ m3e-rag models
def test_models_command_says_which_outputs_each_model_has(
    bge_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3e_rag import cli

    assert cli.main(["models", "--json", str(bge_path), str(tiny_model_path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_alias = {m["alias"]: m["outputs"] for m in listed if "alias" in m}
    assert by_alias["bge-m3"] == ["dense", "sparse", "colbert"] and by_alias["m3e-base"] == ["dense"]
    by_path = {m["path"]: m for m in listed if "path" in m}
    assert by_path[str(bge_path)]["outputs"] == ["dense", "sparse", "colbert"] and by_path[str(bge_path)]["dim"] == 384
    assert by_path[str(tiny_model_path)]["outputs"] == ["dense"]
    assert cli.main(["models", str(bge_path)]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert "dense+sparse+colbert" in rows["bge-m3"] and "dense" in rows["m3e-base"]
    assert rows[str(bge_path)][-1] == "dense+sparse+colbert"
    assert cli.main(["models", str(bge_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "is not a model folder" in captured.err


def test_a_registered_model_states_valid_outputs() -> None:
    from m3e_rag.encode.registry import ModelSpec

    assert ModelSpec("x", "org/x", 8, 16, ("en",), 1, outputs=("dense", "sparse")).to_dict()["outputs"] == [
        "dense", "sparse"]
    for outputs in (("sparse",), ("dense", "splade")):
        with pytest.raises(InputError, match="outputs must hold 'dense'"):
            ModelSpec("x", "org/x", 8, 16, ("en",), 1, outputs=outputs)
