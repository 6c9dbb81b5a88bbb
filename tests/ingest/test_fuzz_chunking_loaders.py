"""Property tests (hypothesis) for the chunker and the loaders: issue 12's fuzzing and issue 13's chunk rules.

Chunker, for arbitrary Unicode (Extension B included) and mixed zh/en text with quotes: spans are
exact, budgets hold, the recorded count is the tokenizer's own, no text is lost, the result does
not depend on how a stream is segmented, no chunk starts with closing punctuation and none is
punctuation only. Lone surrogates are refused with InputError (a decision: they cannot be
tokenized, stored or encoded as UTF-8, and replacing them would break exact spans).
Loaders: arbitrary bytes never raise past the boundary (a Document or a SkippedFile, or InputError
from ``decode_bytes``). Example counts are kept small: the suite has a time budget.
"""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from m3e_rag.errors import InputError
from m3e_rag.ingest import chunking
from m3e_rag.ingest.chunking import Chunker
from m3e_rag.ingest.loaders import StreamedDocument, decode_bytes, load_paths
from m3e_rag.ingest.sentences import _NO_START

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok(tiny_model_path: Path):
    return AutoTokenizer.from_pretrained(str(tiny_model_path))


@pytest.fixture(scope="module")
def unigram_tok(bilingual_model_path: Path):
    """XLM-R Unigram (SentencePiece-style): not BERT, so every chunk is recounted on its own."""
    return AutoTokenizer.from_pretrained(str(bilingual_model_path))


def n_alone(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_invariants(tokenizer, chunker: Chunker, text: str, chunks) -> None:
    covered = [False] * len(text)
    for i, c in enumerate(chunks):
        assert c.index == i
        assert text[c.start : c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert 0 < c.n_tokens <= chunker.max_tokens
        assert c.n_tokens == n_alone(tokenizer, c.text)
        for k in range(c.start, c.end):
            covered[k] = True
    for k, ch in enumerate(text):
        if not covered[k] and not ch.isspace():
            assert n_alone(tokenizer, ch) == 0, f"lost {ch!r} at {k}"  # only unreadable characters may go


ext_b = st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF)
any_text = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)), ext_b), max_size=600)
budgets = st.sampled_from([(8, 0), (16, 4), (48, 8), (128, 32)])


@FUZZ
@given(text=any_text, budget=budgets)
def test_chunker_on_arbitrary_unicode(tok, text, budget):
    chunker = Chunker(tok, *budget)
    chunks = chunker.split_text(text)
    check_invariants(tok, chunker, text, chunks)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, budget=budgets)
def test_chunker_on_arbitrary_unicode_with_a_unigram_tokenizer(unigram_tok, text, budget):
    chunker = Chunker(unigram_tok, *budget)
    check_invariants(unigram_tok, chunker, text, chunker.split_text(text))


tricky = st.lists(
    st.sampled_from(
        list("中文字语言𠀀𪚥㐀，。、「」『』“”‘’…—·（）《》aébc\u0301\u0300 Z19\t\n\r\x0b\x1c\xa0\x00\u200b")
        + list("\u3000İßﬁ！？．～Ａ１한が,.;(")
        + ["##", "hello", "unbelievable", "hello,", "(1990)", "U.S.", "e.g."]
    ),
    max_size=300,
).map("".join)


@pytest.fixture(scope="module")
def warm_bert_chunker(tok) -> Chunker:
    """One chunker for every example, so its cache of tokenized runs is reused across texts."""
    return Chunker(tok, 16, 4)


@FUZZ
@given(text=tricky)
def test_bert_shortcut_gives_the_tokenizers_own_offsets(tok, warm_bert_chunker, text):
    """The BERT path does not tokenize CJK ideographs (one token each) and caches whitespace-delimited
    runs: same offsets, and the same ids wherever it keeps them, as tokenizing the whole text."""
    for fast in (Chunker(tok, 16, 4), warm_bert_chunker):
        fast._backend()
        assert fast._exact_bert
        full = Chunker(tok, 16, 4)
        full._backend()
        full._exact_bert = False
        a, b = fast._index(text), full._index(text)
        assert (a.starts, a.ends) == (b.starts, b.ends)
        assert [i for i in a.ids if i != -1] == [j for i, j in zip(a.ids, b.ids, strict=True) if i != -1]
        check_invariants(tok, fast, text, fast.split_text(text))


@FUZZ
@given(text=any_text, cuts=st.lists(st.integers(0, 600), max_size=6))
def test_segmenting_a_stream_changes_nothing(tok, text, cuts):
    chunker = Chunker(tok, 16, 4)
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    segments = [text[a:b] for a, b in zip(points, points[1:], strict=False)]
    streamed = [(c.start, c.end, c.n_tokens) for c in chunker.iter_chunks(segments)]
    assert streamed == [(c.start, c.end, c.n_tokens) for c in chunker.split_text(text)]


@settings(max_examples=25, deadline=None)
@given(text=any_text, at=st.integers(0, 600), surrogate=st.integers(0xD800, 0xDFFF))
def test_lone_surrogates_are_refused_with_input_error(tok, text, at, surrogate):
    at = min(at, len(text))
    bad = text[:at] + chr(surrogate) + text[at:]
    with pytest.raises(InputError, match="lone surrogate"):
        Chunker(tok, 16, 4).split_text(bad)


zh_word = st.sampled_from(
    ["自然语言", "处理", "人工智能", "計算機", "理解", "語言", "我们", "今天", "天气", "很好", "𠀀𠀁"]
)
en_word = st.sampled_from(["hello", "world", "NLP", "3.14", "U.S.", "e.g.", "model", "Chroma", "tokens"])
closing = st.sampled_from(["」", "』", "”", "。", "！", "？", "．", "，", "：", "」。", "』！", "”？", "…", "｡"])
opening = st.sampled_from(["「", "『", "“", ""])
sentence = st.builds(
    lambda o, ws, c, sp: o + sp.join(ws) + c,
    opening,
    st.lists(st.one_of(zh_word, en_word), min_size=1, max_size=12),
    st.lists(closing, min_size=1, max_size=3).map("".join),
    st.sampled_from(["", " "]),
)
mixed_text = st.lists(
    st.tuples(sentence, st.sampled_from(["", "", " ", "\n", "\n\n"])), min_size=1, max_size=40
).map(lambda parts: "".join(s + sep for s, sep in parts))


def punctuation_only(chunk: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in chunk)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text, budget=st.sampled_from([(16, 0), (16, 4), (24, 6), (48, 8), (48, 0), (96, 16)]))
def test_no_chunk_starts_with_closing_punctuation_nor_is_punctuation_only(tok, text, budget):
    check_punctuation_rules(tok, text, budget)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mixed_text, budget=st.sampled_from([(16, 0), (24, 6), (48, 8)]))
def test_punctuation_rules_with_a_unigram_tokenizer(unigram_tok, text, budget):
    check_punctuation_rules(unigram_tok, text, budget)


def check_punctuation_rules(tok, text: str, budget: tuple[int, int]) -> None:
    chunker = Chunker(tok, *budget)
    chunks = chunker.split_text(text)
    check_invariants(tok, chunker, text, chunks)
    first_visible = len(text) - len(text.lstrip())
    for c in chunks:
        if c.start > first_visible:
            assert c.text[0] not in _NO_START, (c.text[:10], budget)
        if not punctuation_only(text):
            assert not punctuation_only(c.text), (c.text, budget)


@FUZZ
@given(text=st.one_of(any_text, mixed_text), window=st.integers(40, 400), budget=budgets)
def test_small_windows_keep_every_invariant(tok, text, window, budget):
    """Windows only bound memory: with tiny windows (many restarts) every invariant still holds."""
    chunker = Chunker(tok, *budget)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chunking, "WINDOW_CHARS", window)
        chunks = chunker.split_text(text)
        streamed = [(c.start, c.end) for c in chunker.iter_chunks([text[i : i + 37] for i in range(0, len(text), 37)])]
    check_invariants(tok, chunker, text, chunks)
    assert streamed == [(c.start, c.end) for c in chunks]



# ---------------------------------------------------------------------- loaders


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000))
def test_decode_bytes_never_raises_anything_but_input_error(data):
    try:
        text, codec = decode_bytes(data)
    except InputError:
        return
    assert isinstance(text, str) and isinstance(codec, str)
    text.encode("utf-8")  # no lone surrogates escape the loader


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=1500),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.text(max_size=300).map(lambda t: t.encode("gb18030", "replace")),
    ),
    suffix=st.sampled_from(["txt", "md", "csv", "tsv", "json", "jsonl", "html", "pdf", "docx", "log"]),
)
def test_loading_a_file_of_arbitrary_bytes_gives_documents_or_skips(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f.{suffix}"
        path.write_bytes(data)
        result = load_paths([folder])
    assert result.files_seen == 1
    assert result.documents or result.skipped
    for doc in result.documents:
        assert not isinstance(doc, StreamedDocument)
        doc.text.encode("utf-8")
        assert doc.source.endswith(f"/f.{suffix}")
        assert all(isinstance(v, (str, int, float, bool)) for v in doc.metadata.values())
    for skip in result.skipped:
        assert skip.reason
