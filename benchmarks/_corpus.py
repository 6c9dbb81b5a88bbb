"""Texts for the benchmarks: real mixed Chinese/English passages and short queries, or a generated stand-in.

With ``--data DIR`` (the shared evaluation data, see its README): Chinese paragraphs of CMRC 2018 dev and
English paragraphs of XQuAD, cut at sentence ends into passages of at most 256 model tokens (the
pipeline's default chunk budget), shuffled with a fixed seed and interleaved zh, en, zh, en... Queries
are CMRC/XQuAD questions cut to 5-20 characters (Chinese) or words (English).

Without data: a generated corpus of the same shape (random common Chinese characters and English words
grouped into sentences), only good for speed figures, never for quality.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Passage budget in model tokens (without [CLS]/[SEP]): the pipeline's default chunk size.
PASSAGE_TOKENS = 256

_SENTENCE_END = re.compile(r"(?<=[。！？!?；])|(?<=[.])\s+")

_EN_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will what can more about out up them some "
    "could other into its time than only new two may then first any these like now over such our even most made after "
    "also many before must through years where much way well down should because each just those people how little "
    "state good very make world still own see men work long get here between both life being under never day same "
    "another know while last might great old year off come since against go came right used take three states few "
    "house use during without again place around however home small found thought went say part once general high "
    "upon school every does got united left number course war until always away something fact though water less "
    "public put think almost hand enough far took head yet government system better set told nothing night end why "
    "called find going look asked later knew point next program city business give group toward young let room "
    "president side social given present several order national possible rather second face per among form often "
    "important things looked early white become case big help data model text query search document retrieval"
).split()


@dataclass(frozen=True)
class RetrievalSet:
    """Paragraphs and questions; ``answers[i]`` is the index of the paragraph question ``i`` was asked about."""

    name: str
    paragraphs: list[str]
    questions: list[str]
    answers: list[int]


def _squad(path: Path) -> tuple[list[str], list[str], list[int]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    paragraphs: list[str] = []
    questions: list[str] = []
    answers: list[int] = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                questions.append(qa["question"])
                answers.append(len(paragraphs))
            paragraphs.append(para["context"])
    return paragraphs, questions, answers


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s and s.strip()]


def _pack(paragraph: str, count: Callable[[str], int], joiner: str) -> list[str]:
    """Greedily group a paragraph's sentences into passages of at most PASSAGE_TOKENS tokens."""
    out: list[str] = []
    current = ""
    for sentence in _sentences(paragraph):
        candidate = current + joiner + sentence if current else sentence
        if current and count(candidate) > PASSAGE_TOKENS:
            out.append(current)
            current = sentence
        else:
            current = candidate
    if current:
        out.append(current)
    return out


def _interleave(zh: list[str], en: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    zh, en = list(zh), list(en)
    rng.shuffle(zh)
    rng.shuffle(en)
    out: list[str] = []
    for i in range(n):
        pool = zh if i % 2 == 0 else en
        out.append(pool[(i // 2) % len(pool)])
    return out


def _generated_sentences(lang: str, n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        if lang == "zh":
            length = rng.randint(8, 40)
            out.append("".join(chr(rng.randint(0x4E00, 0x62FF)) for _ in range(length)) + "。")
        else:
            words = rng.choices(_EN_WORDS, k=rng.randint(5, 25))
            out.append(" ".join(words).capitalize() + ".")
    return out


def passages(tokenizer: object, data: Path | None, n: int, seed: int = 0) -> list[str]:
    """``n`` mixed passages (zh, en, zh, en...), each at most PASSAGE_TOKENS model tokens when cut at sentences."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    if data is not None:
        zh_paras, _, _ = _squad(data / "cmrc2018" / "cmrc2018_dev.json")
        en_paras, _, _ = _squad(data / "xquad" / "xquad.en.json")
    else:
        rng = random.Random(seed)
        zh_paras = ["".join(_generated_sentences("zh", rng.randint(4, 16), rng)) for _ in range(max(8, n // 3))]
        en_paras = [" ".join(_generated_sentences("en", rng.randint(4, 16), rng)) for _ in range(max(8, n // 3))]
    # Only as many paragraphs as needed (cutting every paragraph costs tokenizer time).
    rng = random.Random(seed + 1)
    zh: list[str] = []
    en: list[str] = []
    for paras, bucket, joiner in ((zh_paras, zh, ""), (en_paras, en, " ")):
        order = list(range(len(paras)))
        rng.shuffle(order)
        for i in order:
            bucket.extend(_pack(paras[i], count, joiner))
            if len(bucket) >= n:
                break
    return _interleave(zh, en, n, seed)


def short_queries(data: Path | None, n: int, seed: int = 0) -> list[str]:
    """``n`` short queries, alternating Chinese (5-20 characters) and English (5-20 words)."""
    rng = random.Random(seed)
    if data is not None:
        _, zh_q, _ = _squad(data / "cmrc2018" / "cmrc2018_dev.json")
        _, en_q, _ = _squad(data / "xquad" / "xquad.en.json")
    else:
        zh_q = _generated_sentences("zh", n, rng)
        en_q = _generated_sentences("en", n, rng)
    out = []
    for i in range(n):
        if i % 2 == 0:
            q = rng.choice(zh_q).strip()
            out.append(q[: rng.randint(5, 20)])
        else:
            words = rng.choice(en_q).split()
            out.append(" ".join(words[: rng.randint(5, 20)]))
    return [q for q in out if q.strip()]


def retrieval_set(
    data: Path | None, lang: str = "en", max_paragraphs: int | None = None, max_questions: int | None = None
) -> RetrievalSet:
    """XQuAD (``lang`` en or zh) as a retrieval task; without data a generated one (overlap only, no quality).

    ``max_questions`` keeps that many questions, evenly spread over the set (every k-th).
    """
    if data is not None:
        paragraphs, questions, answers = _squad(data / "xquad" / f"xquad.{lang}.json")
        name = f"xquad.{lang}"
    else:
        rng = random.Random(7)
        paragraphs = [" ".join(_generated_sentences(lang, rng.randint(3, 8), rng)) for _ in range(60)]
        questions, answers = [], []
        for i, para in enumerate(paragraphs):
            words = para.split() if lang == "en" else list(para)
            start = rng.randint(0, max(0, len(words) - 8))
            questions.append((" " if lang == "en" else "").join(words[start : start + 8]))
            answers.append(i)
        name = f"generated.{lang}"
    if max_paragraphs is not None and len(paragraphs) > max_paragraphs:
        keep = [(q, a) for q, a in zip(questions, answers, strict=True) if a < max_paragraphs]
        paragraphs = paragraphs[:max_paragraphs]
        questions = [q for q, _ in keep]
        answers = [a for _, a in keep]
    if max_questions is not None and len(questions) > max_questions:
        picks = np.linspace(0, len(questions) - 1, max_questions).round().astype(int)
        questions = [questions[i] for i in picks]
        answers = [answers[i] for i in picks]
    return RetrievalSet(name, paragraphs, questions, answers)


def ingest_paragraphs(data: Path | None, n: int, seed: int = 3) -> list[str]:
    """``n`` whole paragraphs for the ingest section, alternating CMRC (zh) and XQuAD (en)."""
    if data is not None:
        zh, _, _ = _squad(data / "cmrc2018" / "cmrc2018_dev.json")
        en, _, _ = _squad(data / "xquad" / "xquad.en.json")
    else:
        rng = random.Random(seed)
        zh = ["".join(_generated_sentences("zh", rng.randint(6, 16), rng)) for _ in range(n)]
        en = [" ".join(_generated_sentences("en", rng.randint(6, 16), rng)) for _ in range(n)]
    return _interleave(zh, en, n, seed)
