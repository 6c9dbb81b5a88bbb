"""Retrieval tasks: labelled sets read from files, a corpus of passages with ids and queries with their relevant ids.

A retrieval task is a corpus of passages with ids and a list of queries, each with the ids of its
relevant passages. Two ways to build one:

- :func:`task_from_squad` turns a SQuAD-format file (``data[].paragraphs[].{context, qas[]}``) into a
  task: every paragraph is a document, every question a query, its own paragraph the relevant one.
  With a second SQuAD file as the corpus, the queries of one file run against the paragraphs of the
  other (XQuAD's parallel files give cross-lingual tasks).
- :func:`task_from_jsonl` reads queries ``{"query": ..., "relevant_ids": [...]}`` (one JSON object a
  line, an ``"id"`` optional) against a corpus of ``{"id": ..., "text": ...}`` lines or a SQuAD file.

:func:`load_task` tells the two apart. Paragraph ids of a SQuAD file are their 0-based positions in
``data[].paragraphs[]`` order, written ``p0``, ``p1``, ...; a JSONL query file that points into a
SQuAD corpus uses those ids. Scoring a task is :func:`m3e_rag.evaluate.retrieval.evaluate`'s job.

SQuAD answers (``qas[].answers[].{text, answer_start}``) are kept on each query as
:class:`AnswerSpan` objects into the corpus (the corpus file's answers to the same qa id, for a
cross-lingual task), for the answer-in-context metric of :mod:`m3e_rag.evaluate.context_recall`. With
``granularity="document"`` each article's paragraphs are joined (a blank line between them) into one
document ``d0``, ``d1``, ... and the answer offsets are shifted with them: retrieval over long
documents, where a context budget bites.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from m3e_rag.errors import InputError
from m3e_rag.evaluate.jsonfiles import read_json, read_jsonl
from m3e_rag.retrieve.modes import check_k
from m3e_rag.types import Document

__all__ = [
    "AnswerSpan",
    "EvalQuery",
    "Granularity",
    "GRANULARITIES",
    "RetrievalTask",
    "task_from_squad",
    "task_from_jsonl",
    "load_task",
]

logger = logging.getLogger(__name__)

#: What a corpus passage is: one SQuAD paragraph, or one article's paragraphs joined.
Granularity = Literal["paragraph", "document"]
GRANULARITIES: tuple[Granularity, ...] = ("paragraph", "document")
#: Joins an article's paragraphs into one document (a paragraph break, which chunkers respect).
_PARAGRAPH_JOINER = "\n\n"


@dataclass(frozen=True)
class AnswerSpan:
    """A gold answer: ``corpus[source].text[start:end] == text``.

    Attributes:
        source: id of the corpus passage holding it.
        start: character offset of the answer in that passage.
        end: one past its last character.
        text: the answer text.
    """

    source: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class EvalQuery:
    """One query of a retrieval task.

    Attributes:
        qid: the query's id (the SQuAD question id, or the JSONL ``id``, or ``q<line>``).
        text: the question.
        relevant: ids of the corpus passages that answer it (at least one).
        answers: gold answer spans in the corpus (SQuAD sets; empty for JSONL queries, and for a
            question whose answers could not be located in its passage).
    """

    qid: str
    text: str
    relevant: frozenset[str]
    answers: tuple[AnswerSpan, ...] = ()


@dataclass
class RetrievalTask:
    """A corpus with ids and queries with their relevant ids.

    Attributes:
        corpus: the passages; each :class:`~m3e_rag.types.Document`'s ``source`` is its id.
        queries: the queries, in file order.
        name: a short description (file names), for reports.
        alignment: how queries were matched to passages of another file: ``"same file"``,
            ``"qa ids"``, ``"position"`` or ``"qrels"`` (JSONL relevant_ids).
        skipped: questions left out because their text was blank.
        granularity: ``"paragraph"`` or ``"document"`` (see the module docstring).
        answers_repaired: SQuAD answers whose ``answer_start`` did not point at their text, moved to
            the nearest occurrence of the text in the passage.
        answers_dropped: SQuAD answers left out: their text does not occur in the passage (CMRC 2018
            has abstractive ones, ``answer_start`` -1), or the entry is malformed.
    """

    corpus: list[Document]
    queries: list[EvalQuery]
    name: str = ""
    alignment: str = "same file"
    skipped: int = 0
    granularity: str = "paragraph"
    answers_repaired: int = 0
    answers_dropped: int = 0

    @property
    def ids(self) -> list[str]:
        """Passage ids, in corpus order."""
        return [doc.source for doc in self.corpus]

    def limit(self, n: int | None) -> RetrievalTask:
        """The same task with only the first ``n`` queries (the whole corpus is kept)."""
        if n is None:
            return self
        check_k(n, "limit")
        return replace(self, queries=self.queries[:n])


@dataclass(frozen=True)
class _QA:
    qid: str
    question: str
    answers: tuple[tuple[int, str], ...]  # (answer_start, text), checked against the context
    dropped: int = 0  # answers that could not be located
    repaired: int = 0  # answers moved to the nearest occurrence of their text


@dataclass(frozen=True)
class _Paragraph:
    context: str
    title: str
    qas: tuple[_QA, ...]
    article: int = 0


def _located_answers(context: str, raw: Any) -> tuple[tuple[tuple[int, str], ...], int, int]:
    """A qa's answers checked against its context: ``(answers, dropped, repaired)``.

    An answer whose ``answer_start`` does not point at its text is moved to the nearest occurrence
    of the text (counted as repaired); one whose text does not occur, or a malformed entry, is
    dropped (counted): the metric then never credits text the set does not locate.
    """
    if not isinstance(raw, list):
        return (), 0, 0
    out: list[tuple[int, str]] = []
    dropped = repaired = 0
    for answer in raw:
        text = answer.get("text") if isinstance(answer, dict) else None
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
            dropped += 1
            continue
        given: int = start
        if context[given : given + len(text)] != text:
            found = _occurrences(context, text)
            if not found:
                dropped += 1
                continue
            given = min(found, key=lambda i: (abs(i - given), i))
            repaired += 1
        out.append((given, text))
    return tuple(out), dropped, repaired


def _occurrences(text: str, needle: str) -> list[int]:
    out, i = [], text.find(needle)
    while i >= 0:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def _is_squad(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("data"), list)


def _squad_paragraphs(payload: Any, path: Path) -> list[_Paragraph]:
    where = str(path)
    if not _is_squad(payload):
        raise InputError(f"{where!r} is not in SQuAD format (no top-level \"data\" list); see the SQuAD layout.")
    out: list[_Paragraph] = []
    for a, article in enumerate(payload["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise InputError(f"{where!r}: data[{a}] has no \"paragraphs\" list; fix or remove that entry.")
        title = article.get("title")
        for p, para in enumerate(article["paragraphs"]):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str):
                raise InputError(f"{where!r}: data[{a}].paragraphs[{p}] has no \"context\" string; fix that entry.")
            qas_raw = para.get("qas", [])
            if not isinstance(qas_raw, list):
                raise InputError(f"{where!r}: data[{a}].paragraphs[{p}].qas is not a list; fix that entry.")
            qas = []
            for q, qa in enumerate(qas_raw):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise InputError(
                        f"{where!r}: data[{a}].paragraphs[{p}].qas[{q}] needs an \"id\" and a \"question\" string."
                    )
                answers, dropped, repaired = _located_answers(context, qa.get("answers"))
                qas.append(_QA(str(qa["id"]), qa["question"], answers, dropped, repaired))
            out.append(_Paragraph(context, str(title) if title is not None else "", tuple(qas), a))
    if not out:
        raise InputError(f"{where!r} holds no paragraphs; pass a SQuAD file with data[].paragraphs[].")
    return out


def _paragraph_id(i: int) -> str:
    return f"p{i}"


def _squad_corpus(paragraphs: Sequence[_Paragraph]) -> list[Document]:
    return [
        Document(p.context, source=_paragraph_id(i), metadata={"title": p.title} if p.title else {})
        for i, p in enumerate(paragraphs)
    ]


def _document_corpus(paragraphs: Sequence[_Paragraph]) -> tuple[list[Document], list[tuple[str, int]]]:
    """Each article's paragraphs joined into one document ``d<article>``; per paragraph its ``(id, shift)``.

    ``shift`` is where the paragraph starts in its document, so an answer at ``start`` in the paragraph
    is at ``start + shift`` in the document (the joiner adds characters only between paragraphs).
    """
    docs: list[Document] = []
    placement: list[tuple[str, int]] = []
    by_article: dict[int, list[_Paragraph]] = {}
    for para in paragraphs:
        by_article.setdefault(para.article, []).append(para)
    shift_of: dict[int, tuple[str, int]] = {}
    for article, paras in by_article.items():
        doc_id, parts, offset = f"d{article}", [], 0
        for para in paras:
            shift_of[id(para)] = (doc_id, offset)
            parts.append(para.context)
            offset += len(para.context) + len(_PARAGRAPH_JOINER)
        title = paras[0].title
        docs.append(Document(_PARAGRAPH_JOINER.join(parts), source=doc_id, metadata={"title": title} if title else {}))
    placement = [shift_of[id(para)] for para in paragraphs]
    return docs, placement


def _corpus(
    paragraphs: Sequence[_Paragraph], granularity: str
) -> tuple[list[Document], list[tuple[str, int]]]:
    """The corpus at ``granularity`` and, per paragraph position, ``(passage id, shift of its offsets)``."""
    if granularity == "paragraph":
        return _squad_corpus(paragraphs), [(_paragraph_id(i), 0) for i in range(len(paragraphs))]
    if granularity == "document":
        return _document_corpus(paragraphs)
    raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")


def task_from_squad(
    queries_file: str | Path, corpus_file: str | Path | None = None, *, granularity: Granularity = "paragraph"
) -> RetrievalTask:
    r"""Build a task from a SQuAD-format file: paragraphs are the corpus, questions the queries.

    Args:
        queries_file: the SQuAD file whose questions are the queries (and whose paragraphs are the
            corpus when ``corpus_file`` is None).
        corpus_file: another SQuAD file whose paragraphs are the corpus. Each question's relevant
            paragraph is the one of ``corpus_file`` holding a question with the same id (XQuAD's
            parallel files share ids); when the ids do not all match, paragraphs are paired by
            position, which needs both files to have the same number of paragraphs (the questions
            then carry no answer spans: the other file's answers belong to other questions).
        granularity: ``"paragraph"`` (each paragraph a passage) or ``"document"`` (each article's
            paragraphs joined into one passage ``d<article>``, answer offsets shifted with them).

    Returns:
        The task; passage ids are ``p0``, ``p1``, ... in ``data[].paragraphs[]`` order of the corpus
        (``d0``, ``d1``, ... by article for documents). Each query carries the corpus file's answers
        to its qa id as :class:`AnswerSpan`\ s.

    Raises:
        InputError: a file is missing, not JSON, not SQuAD-shaped, the two files cannot be aligned,
            or ``granularity`` is unknown.
    """
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")
    qpath = Path(queries_file).expanduser()
    qparas = _squad_paragraphs(read_json(qpath, "queries"), qpath)
    name = qpath.name
    relevant_of: Callable[[int, str], int]
    if corpus_file is None:
        cparas, alignment = qparas, "same file"
        relevant_of = lambda i, qid: i  # noqa: E731 - each question's own paragraph
    else:
        cpath = Path(corpus_file).expanduser()
        cparas = _squad_paragraphs(read_json(cpath, "corpus"), cpath)
        name = f"{qpath.name} -> {cpath.name}"
        relevant_of, alignment = _align(qparas, cparas, qpath, cpath)
    corpus, placement = _corpus(cparas, granularity)
    if granularity == "document":
        name += " (documents)"
    queries: list[EvalQuery] = []
    skipped = repaired = dropped = 0
    for i, para in enumerate(qparas):
        for qa in para.qas:
            if not qa.question.strip():
                skipped += 1
                continue
            j = relevant_of(i, qa.qid)
            passage, shift = placement[j]
            gold = next((c for c in cparas[j].qas if c.qid == qa.qid), None) if alignment != "position" else None
            answers: tuple[AnswerSpan, ...] = ()
            if gold is not None:
                answers = tuple(AnswerSpan(passage, s + shift, s + shift + len(t), t) for s, t in gold.answers)
                repaired, dropped = repaired + gold.repaired, dropped + gold.dropped
            queries.append(EvalQuery(qa.qid, qa.question.strip(), frozenset({passage}), answers))
    if not queries:
        raise InputError(f"{str(qpath)!r} holds no questions; pass a SQuAD file with data[].paragraphs[].qas[].")
    return RetrievalTask(corpus, queries, name, alignment, skipped, granularity, repaired, dropped)


def _qa_positions(paragraphs: Sequence[_Paragraph]) -> dict[str, int]:
    """Map each qa id to the position of the paragraph holding it; -1 for an id held twice."""
    out: dict[str, int] = {}
    for i, para in enumerate(paragraphs):
        for qa in para.qas:
            out[qa.qid] = -1 if qa.qid in out else i
    return out


def _align(
    qparas: Sequence[_Paragraph], cparas: Sequence[_Paragraph], qpath: Path, cpath: Path
) -> tuple[Callable[[int, str], int], str]:
    """How to find a question's corpus paragraph: by shared qa id if all ids match, else by position.

    Returns ``(relevant_of(query paragraph position, qa id) -> corpus paragraph position, alignment)``.
    """
    corpus_pos = _qa_positions(cparas)
    qids = [qa.qid for para in qparas for qa in para.qas]
    if qids and all(corpus_pos.get(qid, -1) >= 0 for qid in qids):
        if len(qparas) == len(cparas) and any(
            corpus_pos[qa.qid] != i for i, para in enumerate(qparas) for qa in para.qas
        ):
            logger.warning("%s and %s share qa ids but not paragraph order; pairing by qa id", qpath, cpath)
        return (lambda i, qid: corpus_pos[qid]), "qa ids"
    if len(qparas) != len(cparas):
        raise InputError(
            f"Cannot pair {str(qpath)!r} ({len(qparas)} paragraphs) with {str(cpath)!r} ({len(cparas)} "
            "paragraphs): their qa ids differ and so do their paragraph counts; pass parallel files."
        )
    logger.warning("qa ids of %s and %s differ; pairing paragraphs by position", qpath, cpath)
    return (lambda i, qid: i), "position"


def _id_string(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if text else None


def _jsonl_corpus(path: Path) -> list[Document]:
    """A corpus file: SQuAD (paragraphs, ids ``p0``...) or JSONL ``{"id": ..., "text": ...}`` lines."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if _is_squad(payload):
        return _squad_corpus(_squad_paragraphs(payload, path))
    docs: list[Document] = []
    seen: set[str] = set()
    for n, row in read_jsonl(path, "corpus"):
        doc_id, text = _id_string(row.get("id")), row.get("text")
        if doc_id is None or not isinstance(text, str):
            raise InputError(
                f"corpus file {str(path)!r}, line {n}, needs an \"id\" (string or number) and a \"text\" string."
            )
        if doc_id in seen:
            raise InputError(f"corpus file {str(path)!r}, line {n}: id {doc_id!r} appears twice; ids must be unique.")
        seen.add(doc_id)
        docs.append(Document(text, source=doc_id))
    return docs


def task_from_jsonl(queries_jsonl: str | Path, corpus_file: str | Path) -> RetrievalTask:
    """Build a task from JSONL queries with relevance judgements and a corpus file.

    Args:
        queries_jsonl: one JSON object a line: ``{"query": str, "relevant_ids": [id, ...]}``, with an
            optional ``"id"`` (default ``q<line number>``).
        corpus_file: JSONL ``{"id": ..., "text": ...}`` lines, or a SQuAD file (passage ids ``p0``, ``p1``,
            ... in paragraph order).

    Raises:
        InputError: a file is missing or malformed, a query has no relevant id, or names an id
            that is not in the corpus.
    """
    qpath, cpath = Path(queries_jsonl).expanduser(), Path(corpus_file).expanduser()
    corpus = _jsonl_corpus(cpath)
    known = {doc.source for doc in corpus}
    queries: list[EvalQuery] = []
    skipped = 0
    for n, row in read_jsonl(qpath, "queries"):
        text, rel_raw = row.get("query"), row.get("relevant_ids")
        if not isinstance(text, str) or not isinstance(rel_raw, list) or not rel_raw:
            raise InputError(
                f"queries file {str(qpath)!r}, line {n}, needs a \"query\" string and a non-empty "
                "\"relevant_ids\" list."
            )
        relevant = [_id_string(r) for r in rel_raw]
        if any(r is None for r in relevant):
            raise InputError(f"queries file {str(qpath)!r}, line {n}: relevant_ids must be strings or numbers.")
        missing = sorted({r for r in relevant if r is not None and r not in known})
        if missing:
            raise InputError(
                f"queries file {str(qpath)!r}, line {n}: relevant id(s) {missing[:3]} are not in the corpus "
                f"{str(cpath)!r}; check that both files use the same ids."
            )
        if not text.strip():
            skipped += 1
            continue
        qid = _id_string(row.get("id")) or f"q{n}"
        queries.append(EvalQuery(qid, text.strip(), frozenset(r for r in relevant if r is not None)))
    if not queries:
        raise InputError(f"queries file {str(qpath)!r} holds no non-blank queries.")
    return RetrievalTask(corpus, queries, f"{qpath.name} -> {cpath.name}", "qrels", skipped)


def load_task(
    queries_file: str | Path, corpus_file: str | Path | None = None, *, granularity: Granularity = "paragraph"
) -> RetrievalTask:
    """Build a task from a SQuAD file (optionally against another file's paragraphs) or from JSONL queries.

    A queries file that parses as one JSON object with a ``data`` list is SQuAD
    (:func:`task_from_squad`, which takes ``granularity``); anything else is read as JSONL queries
    (:func:`task_from_jsonl`), which need ``corpus_file`` and have paragraph granularity only.
    """
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")
    qpath = Path(queries_file).expanduser()
    if not qpath.is_file():
        raise InputError(f"queries file {str(qpath)!r} does not exist; pass an existing file.")
    try:
        payload = json.loads(qpath.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if _is_squad(payload):
        return task_from_squad(qpath, corpus_file, granularity=granularity)
    if granularity != "paragraph":
        raise InputError(
            f"{str(qpath)!r} is JSONL queries, whose relevant ids name passages: granularity {granularity!r} "
            "needs a SQuAD file (articles to join); leave it at 'paragraph'."
        )
    if corpus_file is None:
        if isinstance(payload, dict) and "query" not in payload:
            raise InputError(f"{str(qpath)!r} is neither a SQuAD file nor JSONL queries; see `m3e-rag eval --help`.")
        raise InputError(
            f"{str(qpath)!r} is not a SQuAD file, so it is read as JSONL queries, which need --corpus FILE "
            "(JSONL {\"id\", \"text\"} lines or a SQuAD file)."
        )
    return task_from_jsonl(qpath, corpus_file)
