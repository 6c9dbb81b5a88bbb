"""Answer-in-context recall at a token budget: whether the answer is inside what the LLM receives.

Passage metrics (:mod:`m3e_rag.evaluate.retrieval`) score a ranking. A RAG user hands the LLM the
retrieved pieces, cut to a context budget, so this module scores that context instead. For a SQuAD-style
set (answers with character offsets, :class:`~m3e_rag.evaluate.tasks.AnswerSpan`) and a budget of ``B``
tokens:

- the pieces a system returns (each a :class:`Piece`: source, character span, text) are concatenated
  in the order given until ``B`` tokens; the piece that crosses the budget is cut after its last token
  that fits (its tail never reaches the model) and nothing after it is seen;
- tokens are counted with ONE fixed tokenizer (:class:`TokenCounter`) for every system compared, each
  piece on its own (no special tokens, no separators), so systems that chunk differently pay in the
  same currency;
- a query is a hit when one of its gold answer spans lies inside the visible part of one piece, by
  offsets: same source, ``piece.start <= answer.start`` and ``answer.end <= visible end``. An answer
  that straddles two pieces is not a hit (the LLM gets them as separate passages, maybe far apart),
  and neither is the answer's text found elsewhere (string search would credit an unrelated
  occurrence).

Systems that keep no offsets (a framework's chunks) are mapped to them by :func:`locate_piece`: the
chunk's own start (LangChain's ``start_index``, LlamaIndex's ``start_char_idx``) when the source text
there equals the chunk, else a search for the chunk's text in its source document, nearest that hint.
:func:`score_context` runs every system at every budget and keeps each query's hit and tokens, so two
systems compare per query (:meth:`ContextReport.compare`, the paired bootstrap of
:mod:`m3e_rag.evaluate.stats`). Running it on a pipeline is :mod:`m3e_rag.evaluate.context_run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from m3e_rag.errors import InputError
from m3e_rag.evaluate.stats import PairedComparison, paired_comparison
from m3e_rag.evaluate.tasks import AnswerSpan, EvalQuery, RetrievalTask

__all__ = [
    "DEFAULT_BUDGETS",
    "Piece",
    "TokenCounter",
    "ContextRetriever",
    "BudgetScore",
    "ContextReport",
    "fit_to_budget",
    "answer_in_context",
    "locate_piece",
    "score_context",
    "check_budgets",
    "parse_budgets",
    "require_answers",
]

#: The budgets reported by default (tokens of context handed to the LLM).
DEFAULT_BUDGETS: tuple[int, ...] = (256, 512, 1024, 2048)
#: Pieces' token offsets kept per counter (texts repeat across budgets and systems).
_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class Piece:
    """One piece of context: ``text`` is ``document(source)[start:end]``.

    Attributes:
        source: id of the corpus passage it came from.
        start: character offset of the piece in that passage.
        end: one past its last character.
        text: the text handed to the LLM.
    """

    source: str
    start: int
    end: int
    text: str

    @classmethod
    def unlocated(cls, source: str, text: str) -> Piece:
        """A piece whose place in its source is unknown (span ``-1, -1``): its tokens count, it never hits."""
        return cls(source, -1, -1, text)


class TokenCounter:
    """One fixed tokenizer: how many tokens a text is, and where each token ends.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, a ``transformers`` fast tokenizer (its Rust
            ``backend_tokenizer`` is used: character offsets, no length warnings), or any callable
            that answers ``tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)``
            with an ``offset_mapping`` per text (the encoder protocol's ``tokenizer``).
        name: what reports call it (say which tokenizer counted).
    """

    def __init__(self, tokenizer: Any, name: str) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not callable(getattr(backend, "encode_batch", None)) and not callable(tokenizer):
            raise InputError(
                f"TokenCounter needs a tokenizer that reports character offsets (tokenizers.Tokenizer, a "
                f"transformers *Fast tokenizer or an offset_mapping callable), got {type(tokenizer).__name__}."
            )
        self._backend = backend if callable(getattr(backend, "encode_batch", None)) else None
        self._call = tokenizer
        self.name = name
        self._ends: dict[str, list[int]] = {}

    @classmethod
    def from_pretrained(cls, path: str, name: str | None = None) -> TokenCounter:
        """The tokenizer of a model folder or hub id (``transformers.AutoTokenizer``)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path, use_fast=True), name or f"tokenizer of {path}")

    def token_ends(self, text: str) -> list[int]:
        """End character of each token of ``text`` (non-decreasing), special tokens left out."""
        ends = self._ends.get(text)
        if ends is None:
            self.prepare([text])
            ends = self._ends[text]
        return ends

    def prepare(self, texts: Iterable[str]) -> None:
        """Tokenize the texts not seen yet in one batch (the Rust side runs them in parallel)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._ends))
        if not todo:
            return
        if len(self._ends) + len(todo) > _CACHE_LIMIT:
            self._ends.clear()
        if self._backend is not None:
            offsets = [e.offsets for e in self._backend.encode_batch(todo, add_special_tokens=False)]
        else:
            offsets = self._call(todo, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for text, spans in zip(todo, offsets, strict=True):
            ends, high = [], 0
            for _, end in spans:
                high = max(high, int(end))
                ends.append(high)
            self._ends[text] = ends

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        return len(self.token_ends(text))


@dataclass(frozen=True)
class _Visible:
    piece: Piece
    end: int  # one past the last character that reaches the model


def fit_to_budget(pieces: Sequence[Piece], budget: int, counter: TokenCounter) -> tuple[list[_Visible], int]:
    """What reaches the LLM: the pieces in order until ``budget`` tokens, the crossing piece cut.

    Returns:
        ``(visible parts, tokens used)``; each visible part is a piece and the end of its visible text.
    """
    counter.prepare(p.text for p in pieces)
    out: list[_Visible] = []
    used = 0
    for piece in pieces:
        room = budget - used
        if room <= 0:
            break
        ends = counter.token_ends(piece.text)
        if len(ends) <= room:
            out.append(_Visible(piece, piece.end))
            used += len(ends)
            continue
        out.append(_Visible(piece, min(piece.end, piece.start + ends[room - 1])))
        used = budget
    return out, used


def answer_in_context(visible: Sequence[_Visible], answers: Sequence[AnswerSpan]) -> bool:
    """True when one gold span lies inside the visible part of one piece (same source, by offsets)."""
    return any(
        v.piece.source == a.source and 0 <= v.piece.start <= a.start and a.end <= v.end
        for v in visible
        for a in answers
    )


def locate_piece(text: str, source: str, document: str, hint: int | None = None) -> Piece | None:
    """A piece for a chunk that keeps no trusted offsets: where ``text`` lies in its source ``document``.

    ``hint`` (the chunk's own recorded start, if any) is used when the document holds ``text`` exactly
    there; otherwise the occurrence of ``text`` nearest the hint (the first when there is no hint).

    Returns:
        The piece, or None when ``text`` does not occur in ``document`` (the splitter changed it).
    """
    if hint is not None and 0 <= hint and document[hint : hint + len(text)] == text:
        return Piece(source, hint, hint + len(text), text)
    found, i = [], document.find(text)
    while i >= 0 and text:
        found.append(i)
        i = document.find(text, i + 1)
    if not found:
        return None
    start = min(found, key=lambda j: (abs(j - (hint or 0)), j))
    return Piece(source, start, start + len(text), text)


#: ``retrieve(query position, query, budget) -> pieces in the order handed to the LLM``.
ContextRetriever = Callable[[int, EvalQuery, int], Sequence[Piece]]


@dataclass
class BudgetScore:
    """One system at one budget.

    Attributes:
        budget: tokens allowed.
        hits: per scored query, 1 when an answer span is inside the context, else 0 (task order).
        tokens: per scored query, the tokens the context used (at most ``budget``).
    """

    budget: int
    hits: list[int] = field(default_factory=list, repr=False)
    tokens: list[int] = field(default_factory=list, repr=False)

    @property
    def recall(self) -> float:
        """Share of queries whose context holds an answer."""
        return sum(self.hits) / len(self.hits) if self.hits else 0.0

    @property
    def mean_tokens(self) -> float:
        """Mean tokens of context per query."""
        return sum(self.tokens) / len(self.tokens) if self.tokens else 0.0


def check_budgets(budgets: Iterable[int]) -> tuple[int, ...]:
    """Budgets sorted and deduplicated, each a positive integer, or an InputError naming the bad one."""
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise InputError(f"a context budget must be a positive number of tokens, got {b!r}; e.g. 256,512,1024.")
        out.append(b)
    if not out:
        raise InputError("no context budget given; pass e.g. 256,512,1024,2048.")
    return tuple(sorted(set(out)))


def parse_budgets(text: str) -> tuple[int, ...]:
    """``"256,512,1024"`` as checked budgets, or an InputError naming the bad item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    budgets = []
    for item in items:
        try:
            budgets.append(int(item.replace("_", "")))
        except ValueError:
            raise InputError(f"context budgets are token counts like 256,512,1024,2048; {item!r} is not one.") from None
    return check_budgets(budgets)


def require_answers(task: RetrievalTask) -> None:
    """Refuse a task none of whose queries carries an answer span (the metric would have nothing to score)."""
    if not any(q.answers for q in task.queries):
        raise InputError(
            f"no query of {task.name or 'the task'} carries an answer span: answer-in-context recall needs a "
            "SQuAD-style set with answers[].{text, answer_start} (JSONL queries have none)."
        )


@dataclass
class ContextReport:
    """What :func:`score_context` measured: systems x budgets, per query.

    Attributes:
        task: the task's name.
        tokenizer: the tokenizer that counted every system's tokens.
        budgets: the budgets, ascending.
        queries: queries scored (those with at least one answer span).
        unscored: queries left out because they carry no answer span.
        baseline: the system the others are compared against.
        systems: ``{system: {budget: BudgetScore}}``, in the order run.
    """

    task: str
    tokenizer: str
    budgets: tuple[int, ...]
    queries: int
    unscored: int
    baseline: str
    systems: dict[str, dict[int, BudgetScore]] = field(default_factory=dict)

    def _score(self, system: str, budget: int) -> BudgetScore:
        if system not in self.systems:
            raise InputError(f"system {system!r} was not scored; scored: {', '.join(self.systems)}.")
        if budget not in self.systems[system]:
            raise InputError(f"budget {budget} was not scored; scored: {', '.join(map(str, self.budgets))}.")
        return self.systems[system][budget]

    def compare(self, other: str, budget: int, baseline: str | None = None, *, seed: int = 0) -> PairedComparison:
        """Per query, ``other`` against ``baseline`` (default: the report's) at ``budget``: the paired bootstrap."""
        base = baseline or self.baseline
        return paired_comparison(
            self._score(base, budget).hits, self._score(other, budget).hits, names=(base, other),
            metric=f"answer-in-context@{budget}", seed=seed,
        )

    def comparisons(self) -> list[PairedComparison]:
        """Every other system against the baseline, at every budget."""
        return [self.compare(s, b) for s in self.systems if s != self.baseline for b in self.budgets]

    def tokens_to_reach(self, fraction: float = 0.95) -> dict[str, dict[str, float] | None]:
        """Per system, the smallest budget reaching ``fraction`` of the best recall, with its mean tokens used.

        The target is one for all: ``fraction`` times the best recall of any system at any budget. A
        system that reaches it at no budget maps to None.
        """
        best = max((s.recall for by in self.systems.values() for s in by.values()), default=0.0)
        out: dict[str, dict[str, float] | None] = {}
        for system, by in self.systems.items():
            hit = next((by[b] for b in self.budgets if by[b].recall >= fraction * best), None)
            out[system] = None if hit is None else {"budget": hit.budget, "mean_tokens": round(hit.mean_tokens, 1),
                                                    "target_recall": round(fraction * best, 4)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: recall and mean tokens per system and budget, comparisons, tokens to 95% of the best."""
        return {
            "task": self.task,
            "tokenizer": self.tokenizer,
            "queries": self.queries,
            "unscored": self.unscored,
            "baseline": self.baseline,
            "systems": {
                name: {str(b): {"recall": round(s.recall, 4), "mean_tokens": round(s.mean_tokens, 1)}
                       for b, s in by.items()}
                for name, by in self.systems.items()
            },
            "paired": [c.to_dict() for c in self.comparisons()],
            "tokens_to_95pct_of_best": self.tokens_to_reach(0.95),
        }

    def format_table(self) -> str:
        """Rows: systems; columns: recall (mean tokens) per budget; then the paired comparisons."""
        header = ["system", *(f"@{b}" for b in self.budgets)]
        rows = [[name, *(f"{by[b].recall:.3f} ({by[b].mean_tokens:.0f})" for b in self.budgets)]
                for name, by in self.systems.items()]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"answer-in-context recall (mean tokens used), {self.task}: {self.queries} queries"
                     + (f" ({self.unscored} without an answer span left out)" if self.unscored else "")
                     + f"; tokens counted with {self.tokenizer}")
        lines.extend("  " + c.format() for c in self.comparisons())
        return "\n".join(lines)


def score_context(
    task: RetrievalTask,
    systems: Mapping[str, ContextRetriever],
    counter: TokenCounter,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    *,
    baseline: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ContextReport:
    """Score every system at every budget on the task's queries that carry answer spans.

    Args:
        task: a SQuAD-style task (queries with answer spans, :class:`~m3e_rag.evaluate.tasks.AnswerSpan`).
        systems: ``{name: retrieve(query position, query, budget) -> pieces}``; a system whose list
            does not depend on the budget may ignore it (fit_to_budget cuts it).
        counter: the one tokenizer counting every system's tokens.
        budgets: token budgets.
        baseline: the system the others are compared against (default: the first).
        progress: called as ``progress(done, total)`` every 50 queries.

    Raises:
        InputError: no system, an unknown baseline, a bad budget, or no query with an answer span.
    """
    budget_list = check_budgets(budgets)
    if not systems:
        raise InputError("score_context needs at least one system to score.")
    base = baseline if baseline is not None else next(iter(systems))
    if base not in systems:
        raise InputError(f"baseline {base!r} is not among the systems scored: {', '.join(systems)}.")
    require_answers(task)
    scored = [(n, q) for n, q in enumerate(task.queries) if q.answers]
    report = ContextReport(task.name, counter.name, budget_list, len(scored), len(task.queries) - len(scored), base)
    report.systems = {name: {b: BudgetScore(b) for b in budget_list} for name in systems}
    for done, (n, query) in enumerate(scored, 1):
        for name, retrieve in systems.items():
            for b in budget_list:
                visible, used = fit_to_budget(retrieve(n, query, b), b, counter)
                score = report.systems[name][b]
                score.hits.append(int(answer_in_context(visible, query.answers)))
                score.tokens.append(used)
        if progress is not None and (done % 50 == 0 or done == len(scored)):
            progress(done, len(scored))
    return report
