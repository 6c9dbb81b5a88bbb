"""What a trimmed piece is cut around (m3e_rag.retrieve.context focus): query terms, the query vector, or auto.

A question in one language over text in another shares no term with it: trimming by terms then keeps the
hit's first sentences, wherever the answer is. The ``vector`` focus ranks the candidate's sentences by the
search model's own embeddings; ``auto`` uses terms where one is shared and the vector only where none is.
The encoder here is a deterministic stand-in (a vector per keyword), so every choice is known in advance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3e_rag.errors import InputError
from m3e_rag.ingest.sentences import sentence_starts
from m3e_rag.retrieve.context import (
    assemble_context,
    focus_scorer,
    query_overlap,
    query_similarity,
    terms_then_similarity,
)
from m3e_rag.types import RetrievedChunk
from tests.retrieve.test_context import check_invariants, chunk, scenarios, words

EN = ("Pandas live in the mountains of Sichuan. They eat about twelve kilograms of bamboo a day. "
      "Visitors come in great numbers.")
ZH = "大熊猫主要吃竹子。它们生活在四川的山区。每天要吃十几公斤竹子。"
QUERY = "大熊猫每天吃多少？"  # shares no term with EN
BAMBOO = np.array([1.0, 0.0, 0.0], dtype=np.float32)


class KeywordEncoder:
    """Document vectors by keyword (bamboo -> the query's direction), every call recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.queries: list[str] = []

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[1.0, 0.2, 0.0] if "bamboo" in t or "公斤" in t else [0.0, 1.0, 0.5] for t in texts],
                        dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return BAMBOO


def en_hit(score: float = 0.9, source: str = "en") -> RetrievedChunk:
    return chunk(EN, source, 0, len(EN), 0, score)


def test_query_similarity_is_the_cosine_with_the_query_vector_asked_for_once() -> None:
    enc = KeywordEncoder()
    asked: list[int] = []
    score = query_similarity(enc, lambda: asked.append(1) or [2.0, 0.0, 0.0])  # type: ignore[arg-type]
    assert asked == []  # nothing embedded until a score is needed
    first = score(["bamboo", "river"])
    assert first == pytest.approx([1.0 / np.hypot(1.0, 0.2), 0.0])
    assert score(["kilograms of bamboo"]) == pytest.approx([first[0]])
    assert asked == [1] and enc.calls == [["bamboo", "river"], ["kilograms of bamboo"]]
    assert score([]) == [] and len(enc.calls) == 2


def test_the_vector_focus_trims_to_the_sentence_closest_to_the_query_when_no_term_is_shared() -> None:
    enc = KeywordEncoder()
    by_terms = assemble_context([en_hit()], words, 14, query=QUERY, sentence_starts=sentence_starts, widen=False)
    assert [p.text for p in by_terms.pieces] == ["Pandas live in the mountains of Sichuan."]  # the first sentence
    by_vector = assemble_context([en_hit()], words, 14, query=QUERY, sentence_starts=sentence_starts, widen=False,
                                 scorer=query_similarity(enc, lambda: BAMBOO))
    assert [p.text for p in by_vector.pieces] == ["They eat about twelve kilograms of bamboo a day."]
    assert by_vector.pieces[0].text == EN[by_vector.pieces[0].start : by_vector.pieces[0].end]


def test_auto_uses_the_terms_where_one_is_shared_and_runs_no_model() -> None:
    enc = KeywordEncoder()
    zh = chunk(ZH, "zh", 0, len(ZH), 0, 0.9)
    auto = terms_then_similarity(query_overlap("四川的山区"), query_similarity(enc, lambda: BAMBOO))
    ctx = assemble_context([zh], len, 11, query="四川的山区", sentence_starts=sentence_starts, widen=False,
                           scorer=auto)
    assert [p.text for p in ctx.pieces] == ["它们生活在四川的山区。"]  # the terms' choice; the vector's would be 公斤
    assert enc.calls == []


def test_auto_falls_back_to_the_vector_when_no_term_is_shared() -> None:
    enc = KeywordEncoder()
    auto = focus_scorer("auto", QUERY, enc, lambda: enc.encode_query(QUERY))  # type: ignore[arg-type]
    ctx = assemble_context([en_hit()], words, 14, query=QUERY, sentence_starts=sentence_starts, widen=False,
                           scorer=auto)
    assert [p.text for p in ctx.pieces] == ["They eat about twelve kilograms of bamboo a day."]
    assert enc.queries == [QUERY] and len(enc.calls) == 1


def test_the_model_sees_only_the_trimmed_candidates_sentences_in_one_call_each() -> None:
    enc = KeywordEncoder()
    scorer = query_similarity(enc, lambda: BAMBOO)
    whole = chunk("Short text.", "s", 0, 11, 0, 0.95)  # fits whole: never scored
    hits = [whole, en_hit(0.9), en_hit(0.8, source="en2")]  # the last has no sentence that fits what is left
    ctx = assemble_context(hits, words, 17, query=QUERY, sentence_starts=sentence_starts, widen=False, scorer=scorer)
    assert [p.text for p in ctx.pieces] == ["Short text.", "They eat about twelve kilograms of bamboo a day."]
    assert ctx.left_out == ("en2#0",)
    assert enc.calls == [["Pandas live in the mountains of Sichuan.",
                          "They eat about twelve kilograms of bamboo a day.", "Visitors come in great numbers."]]


def test_a_scorer_must_give_one_score_per_sentence() -> None:
    with pytest.raises(InputError, match="one score per text"):
        assemble_context([en_hit()], words, 14, query=QUERY, sentence_starts=sentence_starts,
                         scorer=lambda texts: [0.0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 80), st.booleans(), st.integers(0, 2**16))
def test_invariants_hold_whatever_the_scorer_says(scenario, budget, widen, salt) -> None:
    docs, stored, hits, neighbours = scenario
    seen: list[int] = []

    def scorer(texts: Sequence[str]) -> list[float]:
        seen.append(len(texts))
        return [float(hash((salt, t)) % 97) for t in texts]

    ctx = assemble_context(hits, words, budget, neighbours=neighbours, widen=widen, query="熊猫",
                           sentence_starts=sentence_starts, scorer=scorer)
    check_invariants(ctx, docs, stored, hits, budget, [*hits, *neighbours])
    assert len(seen) <= len(hits)  # at most one call per candidate


# The pipeline door: focus= and query_vector= of RAGPipeline.context.

@pytest.fixture(scope="module")
def en_rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path):
    """EN stored whole (one chunk) under a tiny random-weight model; its encoder is swapped per test."""
    from m3e_rag import RAGPipeline

    rag = RAGPipeline(tmp_path_factory.mktemp("focus") / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=[EN], sources=["en.txt"])
    return rag


def stand_in(rag, monkeypatch: pytest.MonkeyPatch) -> KeywordEncoder:
    """The pipeline's encoder answers encode_documents / encode_query with KeywordEncoder's vectors (padded)."""
    enc = KeywordEncoder()
    dim = rag.encoder.dim

    def pad(v: np.ndarray) -> np.ndarray:
        out = np.zeros((*v.shape[:-1], dim), dtype=np.float32)
        out[..., :3] = v
        return out

    monkeypatch.setattr(rag.encoder, "encode_documents", lambda texts: pad(enc.encode_documents(texts)))
    monkeypatch.setattr(rag.encoder, "encode_query", lambda text: pad(enc.encode_query(text)))
    return enc


def test_pipeline_context_focus_choices(en_rag, monkeypatch) -> None:
    hits = en_rag.search("pandas", k=1, mode="sparse")
    count = {"count_tokens": words, "hits": hits, "widen": 0}
    enc = stand_in(en_rag, monkeypatch)
    terms = en_rag.context(QUERY, 14, focus="terms", **count)
    assert [p.text for p in terms.pieces] == ["Pandas live in the mountains of Sichuan."] and enc.calls == []
    auto = en_rag.context(QUERY, 14, **count)  # the default, auto: no shared term, so the vector decides
    assert [p.text for p in auto.pieces] == ["They eat about twelve kilograms of bamboo a day."]
    assert enc.queries == [QUERY]  # embedded once, only because a trim needed it
    given_vector = en_rag.context(QUERY, 14, focus="vector", query_vector=np.resize(BAMBOO, en_rag.encoder.dim),
                                  **count)
    assert [p.text for p in given_vector.pieces] == ["They eat about twelve kilograms of bamboo a day."]
    assert enc.queries == [QUERY]  # the vector given was used, the query not embedded again
    roomy = en_rag.context(QUERY, 100, focus="vector", **count)
    assert [p.text for p in roomy.pieces] == [EN] and enc.queries == [QUERY]  # nothing trimmed, nothing embedded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"focus": "words"}, "focus must be one of auto, terms, vector"),
        ({"query_vector": [1.0, 2.0]}, "query_vector has shape"),
        ({"query_vector": "pandas"}, "query_vector must be a sequence of floats"),
    ],
)
def test_pipeline_context_refuses_a_bad_focus_or_vector_before_searching(en_rag, monkeypatch, kwargs,
                                                                          message) -> None:
    searched = []
    monkeypatch.setattr(en_rag._searcher, "search", lambda *a, **k: searched.append(a) or [])
    with pytest.raises(InputError, match=message):
        en_rag.context(QUERY, **kwargs)
    assert searched == []


def test_pipeline_context_searches_with_the_query_vector_given(en_rag, monkeypatch) -> None:
    hits = en_rag.search("pandas", k=1, mode="sparse")
    asked: list[dict] = []
    monkeypatch.setattr(en_rag._searcher, "search", lambda query, k, **kw: asked.append(kw) or hits)
    vector = np.resize(BAMBOO, en_rag.encoder.dim)
    ctx = en_rag.context(QUERY, 100, query_vector=vector, widen=0)
    assert [p.text for p in ctx.pieces] == [EN]
    assert len(asked) == 1 and np.array_equal(asked[0]["query_vector"], vector)
