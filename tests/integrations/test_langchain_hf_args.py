"""M3EEmbeddings takes HuggingFaceEmbeddings' arguments with the same meaning (tiny stand-in model).

What reaches the model is checked by spying on ``SentenceTransformer.preprocess``, the one call
through which every batch of text goes to the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_m3e import M3EEmbeddings
from m3e_rag.encode.encoder import M3EEncoder
from m3e_rag.encode.options import normalize_dtype
from m3e_rag.errors import InputError

BGE_ZH = "为这个句子生成表示以用于检索相关文章："


@pytest.fixture()
def seen(tiny_model_path: Path) -> Iterator[list[tuple[list[str], str | None]]]:
    """Every (batch, prompt) the loaded tiny model is asked to tokenize during the test."""
    st = M3EEncoder(str(tiny_model_path), device="cpu")._loaded().st
    calls: list[tuple[list[str], str | None]] = []
    original = st.preprocess

    def spy(batch: Any, prompt: str | None = None, **kwargs: Any) -> Any:
        calls.append((list(batch), prompt))
        return original(batch, prompt=prompt, **kwargs)

    st.preprocess = spy  # type: ignore[method-assign]
    yield calls
    st.preprocess = original  # type: ignore[method-assign]


def _hf(tiny: Path, **kwargs: Any) -> M3EEmbeddings:
    kwargs.setdefault("model_kwargs", {"device": "cpu"})
    return M3EEmbeddings(model_name=str(tiny), **kwargs)


def test_tutorial_arguments_are_accepted_and_reach_the_encoder(tiny_model_path: Path) -> None:
    emb = M3EEmbeddings(
        model_name=str(tiny_model_path),
        cache_folder=str(tiny_model_path.parent),
        model_kwargs={"device": "cpu", "trust_remote_code": False, "revision": None},
        encode_kwargs={"normalize_embeddings": True, "batch_size": 4, "show_progress_bar": False},
        query_encode_kwargs={"normalize_embeddings": True, "batch_size": 2},
        show_progress=False,
    )
    opts = emb.encoder.options()
    assert (opts["device"], opts["batch_size"], opts["query_batch_size"], opts["normalize"]) == ("cpu", 4, 2, True)
    assert opts["cache_folder"] == str(tiny_model_path.parent) and opts["multi_process"] is False
    vec = np.asarray(emb.embed_documents(["大熊猫吃竹子。"])[0])
    assert vec.shape == (emb.encoder.dim,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"query_prompt": BGE_ZH}, {"query_encode_kwargs": {"prompt": BGE_ZH}}],
    ids=["query_prompt", "query_encode_kwargs-prompt"],
)
def test_bge_instruction_reaches_the_model_for_queries_only(
    tiny_model_path: Path, seen: list[tuple[list[str], str | None]], kwargs: dict[str, Any]
) -> None:
    emb = _hf(tiny_model_path, **kwargs)
    query = emb.embed_query("大熊猫吃什么？")
    emb.embed_documents(["大熊猫主要吃竹子。"])
    assert seen == [(["大熊猫吃什么？"], BGE_ZH), (["大熊猫主要吃竹子。"], None)]
    # The vector is the model's vector of instruction + text, not of the bare text.
    with_instruction = _hf(tiny_model_path).embed_documents([BGE_ZH + "大熊猫吃什么？"])[0]
    bare = _hf(tiny_model_path).embed_documents(["大熊猫吃什么？"])[0]
    assert np.allclose(query, with_instruction, atol=1e-5) and not np.allclose(query, bare, atol=1e-3)


def test_hf_prompt_semantics(tiny_model_path: Path, seen: list[tuple[list[str], str | None]]) -> None:
    # As in HuggingFaceEmbeddings: encode_kwargs apply to queries too when query_encode_kwargs is empty...
    _hf(tiny_model_path, encode_kwargs={"prompt": "P:"}).embed_query("一")
    # ...and a non-empty query_encode_kwargs replaces them for queries.
    both = _hf(tiny_model_path, encode_kwargs={"prompt": "P:"}, query_encode_kwargs={"prompt": "Q:"})
    both.embed_query("二")
    both.embed_documents(["三"])
    # prompt_name looks up model_kwargs["prompts"]; default_prompt_name applies to both sides.
    named = _hf(tiny_model_path, model_kwargs={"device": "cpu", "prompts": {"q": "问：", "d": "文："}},
                encode_kwargs={"prompt_name": "d"}, query_encode_kwargs={"prompt_name": "q"})
    named.embed_query("四")
    named.embed_documents(["五"])
    default = _hf(tiny_model_path, model_kwargs={"device": "cpu", "prompts": {"x": "X:"}, "default_prompt_name": "x"})
    default.embed_query("六")
    assert [p for _, p in seen] == ["P:", "Q:", "P:", "问：", "文：", "X:"]
    with pytest.raises(InputError, match=r"prompt_name='nope'.*known prompt names"):
        _hf(tiny_model_path, query_encode_kwargs={"prompt_name": "nope"}).embed_query("七")


def test_normalization_per_side(tiny_model_path: Path) -> None:
    raw = _hf(tiny_model_path, encode_kwargs={"normalize_embeddings": False},
              query_encode_kwargs={"normalize_embeddings": True})
    assert abs(np.linalg.norm(raw.embed_documents(["熊猫"])[0]) - 1.0) > 1e-3
    assert np.linalg.norm(raw.embed_query("熊猫")) == pytest.approx(1.0, abs=1e-5)


def test_show_progress_draws_a_bar(tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hf(tiny_model_path, show_progress=True, encode_kwargs={"batch_size": 1}).embed_documents(["一", "二"])
    assert "Encoding" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_kwargs": {"token": "hf_x"}}, r"model_kwargs\['token'\].*HF_TOKEN"),
        ({"model_kwargs": {"truncate_dim": 64}}, r"truncate_dim.*full dimension"),
        ({"model_kwargs": {"similarity_fn_name": "dot"}}, r"cosine space"),
        ({"model_kwargs": {"backend": "openvino"}}, r"backend 'openvino' is not available"),
        ({"model_kwargs": {"model_kwargs": {"attn_implementation": "sdpa"}}}, r"only the weights' dtype"),
        ({"model_kwargs": {"device": "cpu", "model_kwargs": {"torch_dtype": "fp16"}}}, r"half precision is for CUDA"),
        ({"model_kwargs": {"device": "cpu", "model_kwargs": {"dtype": "auto"}}}, r"'auto' is refused"),
        ({"encode_kwargs": {"precision": "int8"}}, r"precision 'int8' quantizes"),
        ({"encode_kwargs": {"convert_to_tensor": True}}, r"lists of floats"),
        ({"encode_kwargs": {"device": "cuda"}}, r"model_kwargs=\{'device'"),
        ({"query_encode_kwargs": {"normalise": True}}, r"query_encode_kwargs\['normalise'\].*Accepted"),
        ({"multi_process": True, "device": "cpu"}, r"multi_process=True is refused on CPU"),
        ({"device": "cpu", "model_kwargs": {"device": "cuda"}}, r"device='cpu' conflicts with 'cuda'"),
        ({"modle_name": "x"}, r"unexpected \(extra\) argument.*\['modle_name'\]; accepted: .*model_kwargs"),
    ],
)
def test_meaningless_keys_are_refused_with_the_reason(
    tiny_model_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        M3EEmbeddings(model_name=str(tiny_model_path), **kwargs)


def test_dtype_names_and_multi_process_on_cpu_at_load(tiny_model_path: Path) -> None:
    import torch

    assert normalize_dtype(torch.float16) == "float16" and normalize_dtype("bf16") == "bfloat16"
    assert normalize_dtype(None) is None and normalize_dtype("fp32") == "float32"
    # device=None resolves at load time; on a CPU-only machine the refusal comes then, before any weight loads.
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="multi_process=True is refused on CPU"):
            M3EEmbeddings(model_name=str(tiny_model_path), multi_process=True).embed_query("一")
        with pytest.raises(InputError, match="half precision is for CUDA"):
            M3EEmbeddings(model_name=str(tiny_model_path),
                          model_kwargs={"model_kwargs": {"torch_dtype": torch.float16}}).embed_query("一")


def test_from_encoder_keeps_everything(tiny_model_path: Path, seen: list[tuple[list[str], str | None]]) -> None:
    enc = M3EEncoder(str(tiny_model_path), device="cpu", query_prompt=BGE_ZH, prompts={"d": "文："},
                     document_prompt_name="d", query_batch_size=3, query_normalize=False, batch_size=5)
    emb = M3EEmbeddings.from_encoder(enc)
    assert emb.encoder is enc and emb.query_prompt == BGE_ZH and emb.batch_size == 5
    emb.embed_query("熊猫")
    emb.embed_documents(["竹子"])
    assert seen == [(["熊猫"], BGE_ZH), (["竹子"], "文：")]
    assert M3EEncoder(**enc.options()).options() == enc.options()
