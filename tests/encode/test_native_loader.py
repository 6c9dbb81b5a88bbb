"""The torch backend runs plain sentence-transformers folders through transformers alone: same tokens, same vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from m3e_rag.encode.native import NativeSentenceModel, Plan, plan_for  # noqa: E402

TEXTS = [
    "大熊猫主要吃竹子，每天要花十几个小时进食。",
    "What does the giant panda eat?",
    "  混合 text 与 123 数字，还有全角ＡＢＣ和 emoji 🐼  ",
    "熊",
    "长江是中国第一长河，全长约6300公里。The Yangtze is the longest river in Asia. " * 30,  # truncated
    "\t前后有空白\n",
]


def _compare(path: Path, prompt: str | None = None) -> None:
    from sentence_transformers import SentenceTransformer

    plan = plan_for(path)
    assert plan is not None
    native = NativeSentenceModel(path, plan, "cpu")
    reference = SentenceTransformer(str(path), device="cpu").eval()
    assert native.max_seq_length == reference.max_seq_length
    assert native.tokenizer.model_max_length == reference.tokenizer.model_max_length
    assert native.get_embedding_dimension() == reference.get_embedding_dimension()
    assert native.prompts == {k: v for k, v in reference.prompts.items() if v}  # it adds empty query/document ones
    got, want = native.preprocess(TEXTS, prompt=prompt), reference.preprocess(TEXTS, prompt=prompt)
    for key, value in got.items():
        assert torch.equal(value, want[key]), key
    assert got["input_ids"].shape[1] == reference.max_seq_length  # the long text was cut to the window
    with torch.inference_mode():
        ours = native(got)["sentence_embedding"].numpy()
        theirs = reference(want)["sentence_embedding"].numpy()
    assert ours.shape == (len(TEXTS), plan.dim)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


def test_m3e_folder_matches_sentence_transformers(tiny_model_path: Path) -> None:
    _compare(tiny_model_path)


def test_normalized_folder_with_prompts_matches(bilingual_model_path: Path) -> None:
    """multilingual-e5-small: mean pooling, a Normalize module and query/passage prompts."""
    _compare(bilingual_model_path, prompt="query: ")
    assert plan_for(bilingual_model_path) == Plan("mean", 384, True, 512, {"query": "query: ", "passage": "passage: "})


def test_real_english_model_matches(minilm_model_path: Path) -> None:
    _compare(minilm_model_path)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))
    return dst


def test_cls_pooling_in_the_newer_config_format_matches(tiny_model_path: Path, tmp_path: Path) -> None:
    """BGE-style CLS pooling, written the way sentence-transformers 6 writes a Pooling config."""
    folder = _copy(tiny_model_path, tmp_path / "cls")
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 64, "pooling_mode": "cls", "include_prompt": True}))
    assert plan_for(folder) == Plan("cls", 64, False, 512, {})
    _compare(folder)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("1_Pooling/config.json", {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}),
        ("1_Pooling/config.json", {"pooling_mode_cls_token": True}),  # mean and CLS together
        ("1_Pooling/config.json", {"include_prompt": False}),
        ("1_Pooling/config.json", {"pooling_mode": [{"mean": True}]}),  # not a mode name: no crash, no plan
        ("1_Pooling/config.json", {"pooling_mode_weightedmean_tokens": True, "pooling_mode_mean_tokens": False}),
        ("sentence_bert_config.json", {"do_lower_case": True}),
        ("sentence_bert_config.json", {"model_args": {"attn_implementation": "eager"}}),
        ("config_sentence_transformers.json", {"default_prompt_name": "query"}),
    ],
)
def test_anything_else_is_left_to_sentence_transformers(
    tiny_model_path: Path, tmp_path: Path, where: str, change: dict[str, object]
) -> None:
    folder = _copy(tiny_model_path, tmp_path / "m")
    config = json.loads((folder / where).read_text())
    (folder / where).write_text(json.dumps({**config, **change}))
    assert plan_for(folder) is None


def test_other_module_lists_are_left_to_sentence_transformers(tiny_model_path: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_path, tmp_path / "m")
    modules = json.loads((folder / "modules.json").read_text())
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, dense]))
    assert plan_for(folder) is None
    with_kwargs = [modules[0], {**modules[1], "kwargs": ["task"]}]  # sentence-transformers 6: call options
    (folder / "modules.json").write_text(json.dumps(with_kwargs))
    assert plan_for(folder) is None
    (folder / "modules.json").write_text(json.dumps(modules))
    assert plan_for(folder) is not None
    (folder / "modules.json").unlink()
    assert plan_for(folder) is None  # a bare Hugging Face folder: sentence-transformers adds its own pooling


def test_an_encode_never_imports_sentence_transformers(tiny_model_path: Path) -> None:
    """The point of the native path: the ~49 MiB and ~0.9 s of ``import sentence_transformers`` are not paid."""
    code = (
        "import sys\nfrom m3e_rag import M3EEncoder\n"
        f"enc = M3EEncoder({str(tiny_model_path)!r}, device='cpu')\n"
        "v = enc.encode_documents(['长城很长。' * 80, 'short'])\n"
        "print(v.shape, enc.info()['loader'], 'sentence_transformers' in sys.modules)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(2,", "64)", "transformers", "False"]


def test_encoder_vectors_equal_sentence_transformers_encode(tiny_model_path: Path) -> None:
    """Through M3EEncoder (padding to multiples of 8, oneDNN packing) against ``SentenceTransformer.encode``."""
    from sentence_transformers import SentenceTransformer

    from m3e_rag import M3EEncoder

    enc = M3EEncoder(str(tiny_model_path), device="cpu", on_overflow="truncate")
    assert enc.info()["loader"] == "transformers"
    docs = TEXTS * 20  # enough tokens to pack the Linears for oneDNN
    want = SentenceTransformer(str(tiny_model_path), device="cpu").encode(docs, normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode_documents(docs), want, atol=2e-5, rtol=0)
