"""ExternalEncoder: any embedding function behind the pipeline, its checks, and the approximate tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3e_rag.encode.approx_tokens import ApproxTokenizer
from m3e_rag.encode.external import ExternalEncoder, external_identity
from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError


def _encoder(doc_fn=None, query_fn=None, **kwargs) -> ExternalEncoder:  # noqa: ANN001, ANN003
    def docs(texts: list[str]) -> list[list[float]]:
        return [[1.0, float(len(t)), 0.5] for t in texts]

    def query(text: str) -> list[float]:
        return [1.0, float(len(text)), 0.5]

    return ExternalEncoder(doc_fn or docs, query_fn or query, name="external:test", **kwargs)


def test_satisfies_the_protocol_and_learns_its_dimension_from_the_first_vectors() -> None:
    enc = _encoder()
    assert isinstance(enc, TextEncoder)
    out = enc.encode_documents(["ab", "熊猫"])
    assert out.shape == (2, 3) and out.dtype == np.float32
    assert enc.dim == 3
    assert enc.encode_query("abc").tolist() == [1.0, 3.0, 0.5]
    assert enc.encode_queries(["a", "bb"]).shape == (2, 3)
    assert enc.normalize is False and enc.query_prompt == "" and enc.document_prompt == ""


def test_dimension_probe_when_nothing_was_embedded_yet_accepts_a_zero_vector() -> None:
    calls: list[list[str]] = []

    def docs(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[0.0, 0.0] for _ in texts]

    enc = _encoder(docs)
    assert enc.dim == 2 and len(calls) == 1
    with pytest.raises(InputError, match="all-zero vector"):
        enc.encode_documents(["x"])  # stored or searched, a zero vector has no direction


@pytest.mark.parametrize(
    ("docs", "match"),
    [
        (lambda texts: [[1.0, 2.0]], "shape"),  # one vector for two texts
        (lambda texts: [[1.0, math.nan]] * len(texts), "NaN"),
        (lambda texts: [[1.0, math.inf]] * len(texts), "NaN or infinite"),
        (lambda texts: [[1.0], [1.0, 2.0]], "not a list of equal-length vectors"),
        (lambda texts: "oops", "not a list of equal-length vectors"),
        (lambda texts: [1.0, 2.0], "shape"),  # one flat vector, not a list of vectors
    ],
)
def test_bad_output_of_the_embedding_function_is_refused_naming_it(docs, match: str) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=match) as info:
        _encoder(docs).encode_documents(["a", "b"])
    assert "external:test embed_documents" in str(info.value)


def test_a_dimension_change_between_calls_is_refused() -> None:
    enc = _encoder(query_fn=lambda text: [1.0, 2.0])
    enc.encode_documents(["a"])
    with pytest.raises(InputError, match="2-d vectors; this encoder's vectors are 3-d"):
        enc.encode_query("q")


def test_bad_texts_and_arguments_are_refused_before_the_function_runs() -> None:
    def boom(texts: list[str]) -> list[list[float]]:
        raise AssertionError("must not be called")

    with pytest.raises(InputError, match=r"texts\[1\]"):
        _encoder(boom).encode_documents(["ok", ""])
    with pytest.raises(InputError, match="non-empty string"):
        _encoder().encode_query("  ")
    with pytest.raises(InputError, match="two callables"):
        ExternalEncoder(None, len, name="x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-empty name"):
        ExternalEncoder(len, len, name=" ")


def test_identity_names_the_framework_class_and_model() -> None:
    class Emb:
        model = "text-embedding-3-small"

    class Bare:
        pass

    assert external_identity(Emb(), "langchain").endswith("Emb:text-embedding-3-small")
    assert external_identity(Emb(), "langchain").startswith("langchain:tests.encode.test_external_encoder.")
    assert external_identity(Bare(), "llamaindex").endswith("test_external_encoder.test_identity_names_the_"
                                                           "framework_class_and_model.<locals>.Bare")


def test_a_sentence_transformers_client_lends_its_tokenizer_and_window(bilingual_model_path) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    class Client:
        tokenizer = AutoTokenizer.from_pretrained(str(bilingual_model_path))
        max_seq_length = 128

    class HFLike:
        model_name = "x"
        _client = Client()

    enc = ExternalEncoder.wrap(HFLike(), lambda t: [[1.0]] * len(t), lambda t: [1.0], "langchain")
    assert enc.tokenizer is Client.tokenizer and enc.max_seq_length == 128
    plain = ExternalEncoder.wrap(object(), lambda t: [[1.0]] * len(t), lambda t: [1.0], "langchain")
    assert isinstance(plain.tokenizer, ApproxTokenizer) and plain.max_seq_length == 512


def test_approx_tokenizer_counts_cjk_characters_word_pieces_and_punctuation() -> None:
    tok = ApproxTokenizer()
    enc = tok("大熊猫 eats bamboo, 2024!", add_special_tokens=False, return_offsets_mapping=True)
    text = "大熊猫 eats bamboo, 2024!"
    pieces = [text[a:b] for a, b in enc["offset_mapping"]]
    assert pieces == ["大", "熊", "猫", "eats", "bamb", "oo", ",", "2024", "!"]
    assert len(tok("a b", add_special_tokens=True)["input_ids"]) == 4  # two words + a [CLS]/[SEP] pair
    assert _encoder().count_tokens(["熊猫", ""]) == [4, 2]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_approx_tokenizer_offsets_cover_every_visible_character_once_in_order(text: str) -> None:
    spans = ApproxTokenizer()([text], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][0]
    covered = "".join(text[a:b] for a, b in spans)
    assert covered == "".join(ch for ch in text if not ch.isspace())
    assert all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
