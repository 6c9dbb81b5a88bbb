"""Retrieval sets for the fusion replay (benchmarks/fusion.py), built from public QA data.

Every set is a :class:`~m3e_rag.evaluate.retrieval.RetrievalTask` built by the project's own loaders, plus
derived sets that the data does not hold as such:

- ``kw-*``: keyword queries, the questions reduced to their content words (what people type into a
  search box): Chinese by jieba part-of-speech (nouns, verbs, adjectives, numerals, foreign words and
  time words kept; pronouns, particles, prepositions, conjunctions, adverbs and question words
  dropped), English by a function-word list. A question left with no content word keeps its text.
- ``mixed``: XQuAD's Chinese and English paragraphs in ONE index, the questions of both languages
  as queries; both language versions of a question's paragraph count as relevant.

Nothing from the data is copied into the repository: ``--data`` points at a folder holding
``cmrc2018/cmrc2018_dev.json`` and ``xquad/xquad.{zh,en}.json``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from m3e_rag.evaluate.tasks import EvalQuery, RetrievalTask, task_from_squad
from m3e_rag.types import Document

#: name -> (corpus key, description); corpus keys name the index the set runs against.
SETS: dict[str, tuple[str, str]] = {
    "cmrc": ("cmrc", "CMRC 2018 dev, zh questions -> zh paragraphs"),
    "xq-zh-zh": ("xq-zh", "XQuAD zh questions -> zh paragraphs"),
    "xq-en-en": ("xq-en", "XQuAD en questions -> en paragraphs"),
    "xq-zh-en": ("xq-en", "XQuAD zh questions -> en paragraphs"),
    "xq-en-zh": ("xq-zh", "XQuAD en questions -> zh paragraphs"),
    "kw-cmrc": ("cmrc", "CMRC 2018 questions reduced to content words -> zh paragraphs"),
    "kw-zh": ("xq-zh", "XQuAD zh questions reduced to content words -> zh paragraphs"),
    "kw-en": ("xq-en", "XQuAD en questions reduced to content words -> en paragraphs"),
    "mixed": ("mixed", "XQuAD zh and en questions -> zh+en paragraphs in one index (either version relevant)"),
}

_EN_FUNCTION_WORDS = frozenset(
    """a an the of to in on at by for from with as into onto about over under between through during
    before after above below up down out off than then so such and or but nor not no yes if while
    because although though since until unless whether what which who whom whose when where why how
    is are was were be been being am do does did done doing have has had having will would shall should
    can could may might must it its it's this that these those there here they them their theirs he him
    his she her hers we us our ours you your yours i me my mine one ones some any many much more most
    other another each every all both either neither few several also only just very too s 's name
    kind type called call""".split()
)
# jieba POS tags kept: nouns (n*), verbs (v*), adjectives (a*), numerals (m), quantity (mq),
# English/foreign (eng, x for Latin), time (t), idioms (i), abbreviations (j), location words (s, f).
_KEEP_POS = ("n", "v", "a", "m", "eng", "t", "i", "j", "s", "f", "l")
_ZH_QUESTION_WORDS = frozenset(
    "什么 哪 哪个 哪些 哪里 哪儿 哪一 谁 多少 几 怎么 怎样 怎么样 为什么 为何 如何 何时 何地 何处 是否 有没有 "
    "多久 多大 多长 多高 多远 吗 呢 是 有 被 把 叫 称为 称作 什么样".split()
)
_LATIN = re.compile(r"[A-Za-z0-9]")


def keywords_zh(question: str) -> str:
    """Content words of a Chinese question, space-separated (jieba part-of-speech filter)."""
    import jieba.posseg as pseg

    words = []
    for pair in pseg.lcut(question):
        word, flag = pair.word.strip(), pair.flag
        if not word or word in _ZH_QUESTION_WORDS:
            continue
        if flag.startswith(_KEEP_POS) or (flag == "x" and _LATIN.search(word)):
            words.append(word)
    return " ".join(words) or question


def keywords_en(question: str) -> str:
    """Content words of an English question, space-separated (function words dropped)."""
    words = [w for w in re.findall(r"[\w'-]+", question) if w.lower() not in _EN_FUNCTION_WORDS]
    return " ".join(words) or question


def _keyword_task(task: RetrievalTask, lang: str, name: str) -> RetrievalTask:
    reduce = keywords_zh if lang == "zh" else keywords_en
    queries = [replace(q, text=reduce(q.text)) for q in task.queries]
    return RetrievalTask(task.corpus, queries, name, task.alignment, task.skipped)


def _mixed_task(zh: RetrievalTask, en: RetrievalTask) -> RetrievalTask:
    corpus = [Document(d.text, source=f"zh:{d.source}", metadata=dict(d.metadata)) for d in zh.corpus]
    corpus += [Document(d.text, source=f"en:{d.source}", metadata=dict(d.metadata)) for d in en.corpus]
    queries = []
    for lang, task in (("zh", zh), ("en", en)):
        for q in task.queries:
            rel = frozenset(f"{side}:{pid}" for pid in q.relevant for side in ("zh", "en"))
            queries.append(EvalQuery(f"{lang}:{q.qid}", q.text, rel))
    return RetrievalTask(corpus, queries, "XQuAD zh+en mixed", "qa ids", zh.skipped + en.skipped)


def build_set(name: str, data: Path) -> RetrievalTask:
    """Build the named set from the files under ``data``."""
    cmrc = data / "cmrc2018" / "cmrc2018_dev.json"
    xzh, xen = data / "xquad" / "xquad.zh.json", data / "xquad" / "xquad.en.json"
    if name == "cmrc":
        return task_from_squad(cmrc)
    if name.startswith("xq-"):
        q_lang, c_lang = name.split("-")[1:]
        files = {"zh": xzh, "en": xen}
        return task_from_squad(files[q_lang], None if q_lang == c_lang else files[c_lang])
    if name == "kw-cmrc":
        return _keyword_task(task_from_squad(cmrc), "zh", "CMRC 2018 keyword queries")
    if name == "kw-zh":
        return _keyword_task(task_from_squad(xzh), "zh", "XQuAD zh keyword queries")
    if name == "kw-en":
        return _keyword_task(task_from_squad(xen), "en", "XQuAD en keyword queries")
    if name == "mixed":
        return _mixed_task(task_from_squad(xzh), task_from_squad(xen))
    raise ValueError(f"unknown set {name!r}; known: {', '.join(SETS)}")
