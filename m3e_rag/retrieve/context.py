"""Context for the LLM: ranked hits fitted into a token budget as merged, cited passages.

A RAG answer is only as good as what reaches the model: top-k chunks concatenated repeat the text
their overlaps share, spend whole chunks where the answer sits in one sentence, and are cut blindly at
the budget. :func:`assemble_context` instead

- **merges** the hits of one source whose spans overlap, touch or are separated by whitespace only
  into one piece, rebuilt from the chunks' own texts at their character offsets (no text twice);
- **trims** a piece that does not fit what is left of the budget to the sentences around its focus, or
  leaves it out. The focus (``focus=``): the sentence sharing most terms with the query (BM25's
  tokenizer), or the one whose embedding by the search's own model is closest to the query's (no second
  model; only the trimmed candidates' sentences are embedded), or ``auto``: terms where the candidate
  shares one with the query, else the embedding, because a question in another language than the text
  shares no term with it and trimming by terms then keeps the hit's first sentences wherever the answer is;
- **widens** the pieces, with the tokens left once every hit is placed, into the sentences around
  them (their neighbouring chunks, fetched from the store by :func:`fetch_neighbours`);
- keeps each piece's source, exact character span (``document[start:end] == piece.text``), the ids of
  the chunks it covers and its best score, and orders the pieces best first (or by source).

The budget is never exceeded: each piece is counted whole with the given counter, and the sum of those
counts is at most ``budget_tokens``. The work is in :mod:`m3e_rag.retrieve.context_spans` (the known
text, its sentence units) and :mod:`m3e_rag.retrieve.context_merge` (placing and widening).
:meth:`m3e_rag.RAGPipeline.context` runs a search and this in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from m3e_rag.errors import InputError, refuse_unknown
from m3e_rag.retrieve.context_merge import Assembler, Hit, Piece, TokenCounter, UnitScorer
from m3e_rag.retrieve.context_spans import KnownChunk, Segment, SentenceStarts, build_segments, known_chunk
from m3e_rag.retrieve.fusion import HybridWeights
from m3e_rag.retrieve.modes import SearchMode
from m3e_rag.retrieve.rerank import RerankerLike
from m3e_rag.retrieve.searcher import IndexReader, Searcher
from m3e_rag.types import Context, ContextPiece, RetrievedChunk

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Unpack

    from m3e_rag.encode.protocol import TextEncoder
    from m3e_rag.index.chroma import ChromaStore

__all__ = [
    "ContextFocus",
    "ContextOptions",
    "ContextOrder",
    "DEFAULT_FOCUS",
    "DEFAULT_CONTEXT_K",
    "DEFAULT_CONTEXT_TOKENS",
    "DEFAULT_WIDEN",
    "assemble_context",
    "context_for_query",
    "fetch_neighbours",
    "model_token_counter",
    "focus_scorer",
    "query_overlap",
    "query_similarity",
    "terms_then_similarity",
]

#: Default budget of :meth:`m3e_rag.RAGPipeline.context`, in tokens.
DEFAULT_CONTEXT_TOKENS = 1024
#: Hits searched for a context by default (the issue's baseline concatenates ``search(k=10)``).
DEFAULT_CONTEXT_K = 10
#: Neighbouring chunks fetched on each side of a hit for widening by default.
DEFAULT_WIDEN = 1
#: What a trimmed piece is cut around: the sentence sharing most ``terms`` with the query (no model run), the one
#: whose embedding is closest to the query's (``vector``: the same encoder, on the trimmed candidates' sentences
#: only), or ``auto``: terms where the candidate shares one with the query, else the vector (a question in
#: another language than the text shares no term with it).
ContextFocus = Literal["auto", "terms", "vector"]
_FOCUSES = ("auto", "terms", "vector")
#: The default focus, chosen by measurement (benchmarks/context.py; README, "Context for the LLM").
DEFAULT_FOCUS: ContextFocus = "auto"
#: How pieces are ordered: ``score`` (best first) or ``source`` (sources best first, each in text order).
ContextOrder = Literal["score", "source"]
_ORDERS = ("score", "source")
#: Metadata keys that describe a chunk's place, not the piece's: left out of a piece's metadata.
_SPAN_KEYS = frozenset({"start", "end", "chunk_index", "n_tokens"})


def query_overlap(query: str) -> UnitScorer:
    """``score(texts)``: for each text, the characters of the query's BM25 terms it contains (each term once).

    Cheap and model-free: it tells which sentence of a 256-token chunk the question is about.
    """
    from m3e_rag.index.sparse.tokenize import tokenize_for_bm25

    terms = set(tokenize_for_bm25(query))

    def score(texts: Sequence[str]) -> list[float]:
        return [float(sum(len(t) for t in terms.intersection(tokenize_for_bm25(text)))) for text in texts]

    return score


def query_similarity(encoder: TextEncoder, query_vector: Callable[[], Any]) -> UnitScorer:
    """``score(texts)``: the cosine of each text's embedding (the document side of ``encoder``) and the query's.

    The same model as the search, no second one. ``query_vector()`` gives the query's vector; it is asked for
    on the first call only, so a context that trims nothing embeds nothing.
    """
    import numpy as np

    found: list[Any] = []

    def score(texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        if not found:
            q = np.asarray(query_vector(), dtype=np.float32).reshape(-1)
            found.append(q / (float(np.linalg.norm(q)) or 1.0))
        vectors = np.asarray(encoder.encode_documents(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        return [float(v) for v in (vectors @ found[0]) / norms]

    return score


def terms_then_similarity(terms: UnitScorer, similarity: UnitScorer) -> UnitScorer:
    """``terms`` where some text shares a term with the query, else ``similarity`` (a question in another language).

    Per call, that is per trimmed candidate: the model runs only for candidates sharing no term with the query.
    """

    def score(texts: Sequence[str]) -> list[float]:
        by_terms = list(terms(texts))
        return by_terms if any(v > 0 for v in by_terms) else list(similarity(texts))

    return score


def focus_scorer(focus: str, query: str, encoder: TextEncoder, query_vector: Callable[[], Any]) -> UnitScorer | None:
    """The trimming scorer for a :data:`ContextFocus` (None without a query: the hit's first sentences)."""
    if not query:
        return None
    if focus == "terms":
        return query_overlap(query)
    similarity = query_similarity(encoder, query_vector)
    return similarity if focus == "vector" else terms_then_similarity(query_overlap(query), similarity)


def model_token_counter(encoder: TextEncoder) -> TokenCounter:
    """The model's own token count of a text, special tokens ([CLS], [SEP]) not included."""
    specials = encoder.count_tokens([""])[0]

    def count(text: str) -> int:
        return encoder.count_tokens([text])[0] - specials

    return count


def fetch_neighbours(store: ChromaStore, hits: Sequence[RetrievedChunk], widen: int) -> list[RetrievedChunk]:
    """The stored chunks within ``widen`` positions (``chunk_index``) of each hit, from the hits' sources.

    One read, filtered by source and position; hits without a ``chunk_index`` (records stored whole)
    have no neighbours.
    """
    ranges: dict[str, list[tuple[int, int]]] = {}
    for hit in hits:
        source, index = hit.metadata.get("source"), hit.metadata.get("chunk_index")
        if isinstance(source, str) and isinstance(index, int) and not isinstance(index, bool):
            ranges.setdefault(source, []).append((index - widen, index + widen))
    clauses: list[dict[str, Any]] = []
    for source, spans in ranges.items():
        merged: list[list[int]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        clauses.extend(
            {"$and": [{"source": source}, {"chunk_index": {"$gte": lo}}, {"chunk_index": {"$lte": hi}}]}
            for lo, hi in merged
        )
    if not clauses:
        return []
    return store.get(where=clauses[0] if len(clauses) == 1 else {"$or": clauses})


def _check_options(budget_tokens: object, order: object, max_piece_tokens: object, count_tokens: object) -> None:
    """InputError naming the bad option and a good value."""
    if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
        raise InputError(f"budget_tokens must be a positive integer (tokens for the LLM), got {budget_tokens!r}.")
    if order not in _ORDERS:
        raise InputError(f"order must be one of {', '.join(_ORDERS)}; got {order!r}.")
    if max_piece_tokens is not None and (
        isinstance(max_piece_tokens, bool) or not isinstance(max_piece_tokens, int) or max_piece_tokens < 1
    ):
        raise InputError(f"max_piece_tokens must be a positive integer or None, got {max_piece_tokens!r}.")
    if not callable(count_tokens):
        raise InputError(f"count_tokens must be a function str -> int, got {type(count_tokens).__name__}.")


def _segments(
    hits: Sequence[RetrievedChunk], neighbours: Sequence[RetrievedChunk], sentence_starts: SentenceStarts | None
) -> tuple[list[tuple[int, RetrievedChunk, Segment, KnownChunk]], set[int]]:
    """Each hit (rank, record) with its segment and span, and the ids (``id()``) of spanless segments."""
    known = {h.id: known_chunk(h) for h in hits}
    extra = [c for c in (known_chunk(n) for n in neighbours) if c is not None and c.id not in known]
    by_source, conflicts = build_segments([c for c in known.values() if c is not None] + extra)
    set_aside = {c.id for c in conflicts}
    placed: list[tuple[int, RetrievedChunk, Segment, KnownChunk]] = []
    spanless: set[int] = set()
    for segments in by_source.values():
        for segment in segments:
            segment.cut(sentence_starts)
    for rank, hit in enumerate(hits):
        chunk = known[hit.id]
        if chunk is not None and hit.id not in set_aside:
            segment = next(s for s in by_source[chunk.source] if s.start <= chunk.start and chunk.end <= s.end)
        else:  # no usable span: a piece of its own, never merged
            source = hit.metadata.get("source")
            chunk = KnownChunk(hit.id, source if isinstance(source, str) and source else hit.id, 0, len(hit.text),
                               hit.text)
            segment = Segment(chunk.source, 0, hit.text, [chunk])
            segment.cut(sentence_starts)
            spanless.add(id(segment))
        placed.append((rank, hit, segment, chunk))
    return placed, spanless


def _candidates(hits: list[Hit]) -> list[tuple[Segment, int, int, Hit]]:
    """Hits of one segment whose unit ranges overlap or touch, unioned: (segment, i, j, best hit), best first."""
    groups: dict[int, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(id(hit.segment), []).append(hit)
    out: list[tuple[Segment, int, int, Hit]] = []
    for group in groups.values():
        group.sort(key=lambda h: (h.i, h.rank))
        i, j, best = group[0].i, group[0].j, group[0]
        for hit in group[1:]:
            if hit.i <= j + 1:
                j, best = max(j, hit.j), min(best, hit, key=lambda h: h.rank)
            else:
                out.append((best.segment, i, j, best))
                i, j, best = hit.i, hit.j, hit
        out.append((best.segment, i, j, best))
    return sorted(out, key=lambda c: c[3].rank)


def _piece(piece: Piece, hits: list[tuple[Hit, RetrievedChunk]], spanless: bool) -> ContextPiece:
    """The typed piece: span, covered chunk ids, best score and the best hit's metadata."""
    inside = [(h, r) for h, r in hits if h.segment is piece.segment and h.i <= piece.j and h.j >= piece.i]
    best_hit, best = min(inside, key=lambda hr: hr[0].rank)
    start, end = piece.start, piece.end
    ids = tuple(c.id for c in piece.segment.chunks if c.start < end and c.end > start)
    return ContextPiece(
        text=piece.text,
        source=piece.segment.source,
        start=None if spanless else start,
        end=None if spanless else end,
        chunk_ids=ids,
        score=max(h.score for h, _ in inside),
        tokens=piece.tokens,
        metadata={k: v for k, v in best.metadata.items() if k not in _SPAN_KEYS and not k.startswith("_")},
    )


def _ordered(pieces: list[tuple[int, ContextPiece]], order: str) -> list[ContextPiece]:
    """Best first; or ``source``: sources best first, each source's pieces in text order."""
    by_score = sorted(pieces, key=lambda rp: (-rp[1].score, rp[0]))
    if order == "score":
        return [p for _, p in by_score]
    first: dict[str, int] = {}
    for n, (_, p) in enumerate(by_score):
        first.setdefault(p.source, n)
    return [p for _, p in sorted(by_score, key=lambda rp: (first[rp[1].source], rp[1].start or 0))]


def assemble_context(
    hits: Sequence[RetrievedChunk],
    count_tokens: TokenCounter,
    budget_tokens: int,
    *,
    neighbours: Sequence[RetrievedChunk] = (),
    widen: bool = True,
    query: str | None = None,
    sentence_starts: SentenceStarts | None = None,
    order: ContextOrder = "score",
    max_piece_tokens: int | None = None,
    scorer: UnitScorer | None = None,
) -> Context:
    """Fit ranked hits into ``budget_tokens`` as merged, cited, non-overlapping pieces (see the module doc).

    Args:
        hits: search results, best first, with ``source``, ``start`` and ``end`` in their metadata (as
            stored by ``ingest``); a hit without a usable span becomes a piece of its own.
        count_tokens: ``count_tokens(text) -> int``, the budget's unit (the LLM's tokenizer, or the model's:
            :func:`model_token_counter`).
        budget_tokens: the most tokens the pieces may hold together (citation lines not counted).
        neighbours: other stored chunks of the hits' sources (:func:`fetch_neighbours`) that widening may use.
        widen: spend the tokens left after placing every hit on the text around the pieces.
        query: the question: the focus of a trimmed piece is the sentence closest to it (see ``scorer``).
        sentence_starts: ``fn(text) -> offsets`` of sentence starts, where pieces may be cut (the
            pipeline passes the chunker's rules); None cuts at chunk edges only.
        order: ``score`` (best piece first) or ``source`` (sources best first, each in text order).
        max_piece_tokens: the most tokens one hit's piece takes before every hit is placed (None: no cap).
        scorer: how close each sentence is to the query, for trimming (:func:`focus_scorer`; None: the query's
            terms, :func:`query_overlap`); widening always follows the query's terms (cheap, unit by unit).

    Returns:
        A :class:`~m3e_rag.types.Context`; ``context.text`` renders it with ``[n] source (start-end)`` citations.
    """
    _check_options(budget_tokens, order, max_piece_tokens, count_tokens)
    bad = [type(h).__name__ for h in [*hits, *neighbours] if not isinstance(h, RetrievedChunk)]
    if bad:
        raise InputError(f"hits and neighbours must be RetrievedChunk results (of search), got a {bad[0]}.")
    first: dict[str, RetrievedChunk] = {}
    for hit in hits:
        first.setdefault(hit.id, hit)  # a repeated id keeps its first (best) rank
    unique = list(first.values())
    placed, spanless = _segments(unique, neighbours, sentence_starts)
    ranked: list[tuple[Hit, RetrievedChunk]] = []
    for rank, record, segment, chunk in placed:
        units = segment.unit_range(chunk.start, chunk.end)
        if units is not None:
            ranked.append((Hit(rank, record.score, segment, units[0], units[1]), record))
    terms = query_overlap(query) if query else None
    assembler = Assembler(count_tokens, budget_tokens, scorer or terms, max_piece_tokens, widen_scorer=terms)
    for segment, i, j, best in _candidates([h for h, _ in ranked]):
        assembler.place(segment, i, j, best.rank, (best.i, best.j))
    if widen:
        assembler.widen()
    pieces = [(p.rank, _piece(p, ranked, id(p.segment) in spanless)) for p in assembler.pieces]
    covered = {cid for _, p in pieces for cid in p.chunk_ids}
    left_out = tuple(h.id for h in unique if h.id not in covered)
    return Context(_ordered(pieces, order), assembler.used, budget_tokens, left_out)


class ContextOptions(TypedDict, total=False):
    """The options of :meth:`m3e_rag.RAGPipeline.context`, all optional.

    Attributes:
        k: hits searched (default :data:`DEFAULT_CONTEXT_K`).
        widen: neighbouring chunks per side, fetched from the store, that the tokens left after placing every
            hit may spread into (default :data:`DEFAULT_WIDEN`; 0: only the hits' own text).
        hits: results already found (by ``search`` or a framework retriever), assembled instead of searching
            (then leave ``k`` and the search options unset); the query still picks each piece's focus.
        count_tokens: ``fn(text) -> int`` counting the budget (default: the index model's tokenizer without
            its special tokens); pass your LLM's tokenizer to budget in its tokens.
        order: ``score`` (best piece first, the default) or ``source`` (sources best first, each in text order).
        max_piece_tokens: the most tokens one hit takes before every hit is placed (None, the default: no cap).
        focus: what a piece too big for the budget is trimmed around (:data:`ContextFocus`, default
            :data:`DEFAULT_FOCUS`).
        query_vector: the query's embedding by this index's model, if already computed: the search and the
            ``vector``/``auto`` focus use it instead of embedding the query again.
        mode: search option, as in :meth:`m3e_rag.RAGPipeline.search`.
        where: search option, as in ``search``.
        where_document: search option, as in ``search``.
        reranker: search option, as in ``search``.
        mmr: search option, as in ``search``.
        fetch_k: search option, as in ``search``.
        lambda_mult: search option, as in ``search``.
        score_threshold: search option, as in ``search``.
        hybrid_weights: search option, as in ``search``.
    """

    k: int | None
    widen: int
    hits: Sequence[RetrievedChunk] | None
    count_tokens: TokenCounter | None
    order: ContextOrder
    max_piece_tokens: int | None
    focus: ContextFocus
    query_vector: Sequence[float] | np.ndarray | None
    mode: SearchMode | None
    where: Mapping[str, Any] | None
    where_document: Mapping[str, Any] | None
    reranker: RerankerLike | None
    mmr: bool
    fetch_k: int
    lambda_mult: float
    score_threshold: float | None
    hybrid_weights: HybridWeights | None


#: The options of :class:`ContextOptions` that go to the search.
_SEARCH_KEYS = ("mode", "where", "where_document", "reranker", "mmr", "fetch_k", "lambda_mult", "score_threshold",
                "hybrid_weights")


def context_for_query(
    searcher: Searcher,
    index: IndexReader,
    encoder: TextEncoder,
    query: str,
    budget_tokens: int,
    sentence_starts: SentenceStarts | None,
    **options: Unpack[ContextOptions],
) -> Context:
    """Search ``query`` for ``k`` hits (or take ``hits``), fetch ``widen`` neighbouring chunks around each, assemble.

    See :class:`ContextOptions` for the options; they are checked before the query is embedded.
    """
    refuse_unknown("RAGPipeline.context()", options, ContextOptions.__optional_keys__)
    given: dict[str, Any] = dict(options)
    k, widen, hits = given.get("k"), given.get("widen", DEFAULT_WIDEN), given.get("hits")
    count_tokens, order, cap = given.get("count_tokens"), given.get("order", "score"), given.get("max_piece_tokens")
    _check_options(budget_tokens, order, cap, count_tokens or len)
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise InputError(f"widen must be a non-negative integer (neighbouring chunks per side), got {widen!r}.")
    focus = given.get("focus", DEFAULT_FOCUS)
    if focus not in _FOCUSES:
        raise InputError(f"focus must be one of {', '.join(_FOCUSES)}; got {focus!r}.")
    vector = given.get("query_vector")
    if vector is not None:
        vector = searcher.check_vector(vector)
    search = {key: given[key] for key in _SEARCH_KEYS if given.get(key) is not None}
    if hits is None:
        found = searcher.search(query, DEFAULT_CONTEXT_K if k is None else k, query_vector=vector, **search)
    elif k is not None or search:
        named = sorted([*search, *(["k"] if k is not None else [])])
        raise InputError(f"hits= replaces the search; {', '.join(named)} would be ignored: leave them unset.")
    else:
        if not isinstance(query, str):
            raise InputError(f"query must be a string (\"\" for none), got {type(query).__name__}.")
        found = list(hits)
    store_hits = [h for h in found if isinstance(h, RetrievedChunk)]
    neighbours = fetch_neighbours(index.store, store_hits, widen) if widen and store_hits else []
    scorer = focus_scorer(focus, query, encoder, lambda: encoder.encode_query(query) if vector is None else vector)
    return assemble_context(
        found, count_tokens or model_token_counter(encoder), budget_tokens, neighbours=neighbours, widen=True,
        query=query or None, sentence_starts=sentence_starts, order=order, max_piece_tokens=cap, scorer=scorer,
    )
