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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.evaluate.jsonfiles import read_json, read_jsonl
from m3e_rag.retrieve.modes import check_k
from m3e_rag.types import Document

__all__ = ["EvalQuery", "RetrievalTask", "task_from_squad", "task_from_jsonl", "load_task"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalQuery:
    """One query of a retrieval task.

    Attributes:
        qid: the query's id (the SQuAD question id, or the JSONL ``id``, or ``q<line>``).
        text: the question.
        relevant: ids of the corpus passages that answer it (at least one).
    """

    qid: str
    text: str
    relevant: frozenset[str]


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
    """

    corpus: list[Document]
    queries: list[EvalQuery]
    name: str = ""
    alignment: str = "same file"
    skipped: int = 0

    @property
    def ids(self) -> list[str]:
        """Passage ids, in corpus order."""
        return [doc.source for doc in self.corpus]

    def limit(self, n: int | None) -> RetrievalTask:
        """The same task with only the first ``n`` queries (the whole corpus is kept)."""
        if n is None:
            return self
        check_k(n, "limit")
        return RetrievalTask(self.corpus, self.queries[:n], self.name, self.alignment, self.skipped)


@dataclass(frozen=True)
class _Paragraph:
    context: str
    title: str
    qas: tuple[tuple[str, str], ...]  # (qa id, question)


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
                qas.append((str(qa["id"]), qa["question"]))
            out.append(_Paragraph(context, str(title) if title is not None else "", tuple(qas)))
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


def task_from_squad(queries_file: str | Path, corpus_file: str | Path | None = None) -> RetrievalTask:
    """Build a task from a SQuAD-format file: paragraphs are the corpus, questions the queries.

    Args:
        queries_file: the SQuAD file whose questions are the queries (and whose paragraphs are the
            corpus when ``corpus_file`` is None).
        corpus_file: another SQuAD file whose paragraphs are the corpus. Each question's relevant
            paragraph is the one of ``corpus_file`` holding a question with the same id (XQuAD's
            parallel files share ids); when the ids do not all match, paragraphs are paired by
            position, which needs both files to have the same number of paragraphs.

    Returns:
        The task; passage ids are ``p0``, ``p1``, ... in ``data[].paragraphs[]`` order of the corpus.

    Raises:
        InputError: a file is missing, not JSON, not SQuAD-shaped, or the two files cannot be aligned.
    """
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
    queries: list[EvalQuery] = []
    skipped = 0
    for i, para in enumerate(qparas):
        for qid, question in para.qas:
            if not question.strip():
                skipped += 1
                continue
            queries.append(EvalQuery(qid, question.strip(), frozenset({_paragraph_id(relevant_of(i, qid))})))
    if not queries:
        raise InputError(f"{str(qpath)!r} holds no questions; pass a SQuAD file with data[].paragraphs[].qas[].")
    return RetrievalTask(_squad_corpus(cparas), queries, name, alignment, skipped)


def _qa_positions(paragraphs: Sequence[_Paragraph]) -> dict[str, int]:
    """Map each qa id to the position of the paragraph holding it; -1 for an id held twice."""
    out: dict[str, int] = {}
    for i, para in enumerate(paragraphs):
        for qid, _ in para.qas:
            out[qid] = -1 if qid in out else i
    return out


def _align(
    qparas: Sequence[_Paragraph], cparas: Sequence[_Paragraph], qpath: Path, cpath: Path
) -> tuple[Callable[[int, str], int], str]:
    """How to find a question's corpus paragraph: by shared qa id if all ids match, else by position.

    Returns ``(relevant_of(query paragraph position, qa id) -> corpus paragraph position, alignment)``.
    """
    corpus_pos = _qa_positions(cparas)
    qids = [qid for para in qparas for qid, _ in para.qas]
    if qids and all(corpus_pos.get(qid, -1) >= 0 for qid in qids):
        if len(qparas) == len(cparas) and any(
            corpus_pos[qid] != i for i, para in enumerate(qparas) for qid, _ in para.qas
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


def load_task(queries_file: str | Path, corpus_file: str | Path | None = None) -> RetrievalTask:
    """Build a task from a SQuAD file (optionally against another file's paragraphs) or from JSONL queries.

    A queries file that parses as one JSON object with a ``data`` list is SQuAD
    (:func:`task_from_squad`); anything else is read as JSONL queries (:func:`task_from_jsonl`), which
    need ``corpus_file``.
    """
    qpath = Path(queries_file).expanduser()
    if not qpath.is_file():
        raise InputError(f"queries file {str(qpath)!r} does not exist; pass an existing file.")
    try:
        payload = json.loads(qpath.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if _is_squad(payload):
        return task_from_squad(qpath, corpus_file)
    if corpus_file is None:
        if isinstance(payload, dict) and "query" not in payload:
            raise InputError(f"{str(qpath)!r} is neither a SQuAD file nor JSONL queries; see `m3e-rag eval --help`.")
        raise InputError(
            f"{str(qpath)!r} is not a SQuAD file, so it is read as JSONL queries, which need --corpus FILE "
            "(JSONL {\"id\", \"text\"} lines or a SQuAD file)."
        )
    return task_from_jsonl(qpath, corpus_file)
