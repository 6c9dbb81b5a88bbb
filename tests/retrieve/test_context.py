"""Context assembly (m3e_rag.retrieve.context): merged, exact, within budget; properties with hypothesis."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3e_rag.errors import InputError
from m3e_rag.ingest.sentences import sentence_starts
from m3e_rag.retrieve.context import assemble_context
from m3e_rag.types import Context, RetrievedChunk

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> int:
    """A counter that is NOT additive across a cut ("ab" + "cd" is 2 tokens, "abcd" is 1): exactness matters."""
    return len(_WORD.findall(text))


def chunk(doc: str, source: str, start: int, end: int, index: int, score: float = 0.0) -> RetrievedChunk:
    """A stored chunk as ingest writes it: the exact slice, with its span in the metadata."""
    return RetrievedChunk(f"{source}#{index}", doc[start:end], score,
                          {"source": source, "start": start, "end": end, "chunk_index": index, "page": 1})


def chunk_document(doc: str, source: str, cuts: Sequence[int], overlaps: Sequence[int]) -> list[RetrievedChunk]:
    """Chunks like the chunker's: consecutive spans, each reaching back ``overlap`` characters, whitespace-trimmed."""
    edges = sorted({0, len(doc), *(c for c in cuts if 0 < c < len(doc))})
    out: list[RetrievedChunk] = []
    for n, (a, b) in enumerate(zip(edges, edges[1:], strict=False)):
        a = max(0, a - overlaps[n % len(overlaps)])
        while a < b and doc[a].isspace():
            a += 1
        while b > a and doc[b - 1].isspace():
            b -= 1
        if a < b:
            out.append(chunk(doc, source, a, b, len(out)))
    return out


_ALPHABET = "熊猫竹子长城ab c。！？\n ."
documents = st.text(alphabet=_ALPHABET, min_size=1, max_size=160).filter(lambda t: t.strip() != "")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, str], list[RetrievedChunk], list[RetrievedChunk],
                                       list[RetrievedChunk]]:
    """Up to 3 documents chunked with overlaps, ranked hits among their chunks, and stored neighbours."""
    docs: dict[str, str] = {}
    stored: list[RetrievedChunk] = []
    for n in range(draw(st.integers(1, 3))):
        doc = draw(documents)
        source = f"doc{n}"
        docs[source] = doc
        cuts = draw(st.lists(st.integers(1, max(1, len(doc) - 1)), max_size=8))
        overlaps = draw(st.lists(st.integers(0, 12), min_size=1, max_size=4))
        stored.extend(chunk_document(doc, source, cuts, overlaps))
    picked = draw(st.lists(st.sampled_from(stored), min_size=1, max_size=8))
    scores = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=len(picked), max_size=len(picked)))
    hits = sorted((RetrievedChunk(c.id, c.text, s, c.metadata) for c, s in zip(picked, scores, strict=True)),
                  key=lambda h: -h.score)
    neighbours = draw(st.lists(st.sampled_from(stored), max_size=12))
    return docs, stored, hits, neighbours


def check_invariants(ctx: Context, docs: dict[str, str], known: Sequence[RetrievedChunk],
                     hits: Sequence[RetrievedChunk], budget: int, visible: Sequence[RetrievedChunk],
                     count: Callable[[str], int] = words) -> None:
    """Exact spans, budget kept, no text twice, no two pieces of a source touching unmerged, ids honest.

    ``known``: every stored chunk; ``visible``: those the assembler was given (hits and neighbours).
    """
    assert ctx.budget == budget
    assert sum(count(p.text) for p in ctx.pieces) == ctx.tokens <= budget
    by_source: dict[str, list[tuple[int, int]]] = {}
    spans = {c.id: (c.metadata["source"], c.metadata["start"], c.metadata["end"]) for c in known}
    for piece in ctx.pieces:
        assert piece.tokens == count(piece.text)
        assert piece.start is not None and piece.end is not None
        assert piece.text == docs[piece.source][piece.start : piece.end]  # exact, hence no inner duplication
        assert piece.text == piece.text.strip() and piece.text
        by_source.setdefault(piece.source, []).append((piece.start, piece.end))
        for cid in piece.chunk_ids:  # every id named is a chunk the piece really covers part of
            source, start, end = spans[cid]
            assert source == piece.source and start < piece.end and end > piece.start
        assert "start" not in piece.metadata and "chunk_index" not in piece.metadata
    covered = {source: set() for source in docs}  # type: dict[str, set[int]]
    for source, intervals in by_source.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start > end, "pieces of one source overlap or touch"
            gap_known = any(c.metadata["source"] == source and c.metadata["start"] <= end
                            and c.metadata["end"] >= start for c in visible)
            if gap_known:  # a gap the assembler could see is not whitespace only (else it must have merged)
                assert docs[source][end:start].strip()
        for start, end in intervals:
            assert not covered[source] & set(range(start, end)), "a character appears twice"
            covered[source].update(range(start, end))
    in_pieces = {cid for p in ctx.pieces for cid in p.chunk_ids}
    assert set(ctx.left_out) == {h.id for h in hits} - in_pieces
    scores = [p.score for p in ctx.pieces]
    assert scores == sorted(scores, reverse=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 80), st.booleans(), st.sampled_from([None, "熊猫", "长城 b"]),
       st.sampled_from([None, 6]), st.booleans())
def test_context_invariants(scenario, budget, widen, query, cap, sentences) -> None:
    docs, stored, hits, neighbours = scenario
    ctx = assemble_context(hits, words, budget, neighbours=neighbours, widen=widen, query=query,
                           sentence_starts=sentence_starts if sentences else None, max_piece_tokens=cap)
    check_invariants(ctx, docs, stored, hits, budget, [*hits, *neighbours])


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_a_budget_for_everything_keeps_every_hit_whole(scenario) -> None:
    docs, stored, hits, _ = scenario
    budget = sum(words(h.text) for h in hits) + 1  # the union costs at most the sum of its parts (plus a cut)
    ctx = assemble_context(hits, words, budget * 2, widen=False)
    check_invariants(ctx, docs, stored, hits, budget * 2, hits)
    assert ctx.left_out == ()
    for hit in hits:
        start, end = hit.metadata["start"], hit.metadata["end"]
        assert any(p.source == hit.metadata["source"] and p.start <= start and end <= p.end for p in ctx.pieces)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_widening_with_room_fills_the_known_text(scenario) -> None:
    docs, stored, hits, _ = scenario
    ctx = assemble_context(hits, words, 10_000, neighbours=stored, widen=True, sentence_starts=sentence_starts)
    check_invariants(ctx, docs, stored, hits, 10_000, stored)
    for piece in ctx.pieces:  # grown to the edges of the stretch its chunks cover without a gap
        before = [c for c in stored if c.metadata["source"] == piece.source and c.metadata["end"] >= piece.start
                  and c.metadata["start"] < piece.start]
        after = [c for c in stored if c.metadata["source"] == piece.source and c.metadata["start"] <= piece.end
                 and c.metadata["end"] > piece.end]
        assert not before and not after


DOC = "大熊猫主要吃竹子。它们生活在四川的山区。每天要吃十几公斤竹子。\n\n长城很长。长城建于明朝。游客很多。"


def doc_chunks() -> list[RetrievedChunk]:
    """Four chunks of DOC: two overlapping by one sentence, a paragraph gap, two more overlapping."""
    first, second = DOC.index("它们"), DOC.index("长城很长")
    return [
        chunk(DOC, "d", 0, DOC.index("每天"), 0),
        chunk(DOC, "d", first, DOC.index("\n"), 1),
        chunk(DOC, "d", second, DOC.index("游客"), 2),
        chunk(DOC, "d", DOC.index("长城建于"), len(DOC), 3),
    ]


def rank(chunks: Sequence[RetrievedChunk], *scores: float) -> list[RetrievedChunk]:
    return sorted((RetrievedChunk(c.id, c.text, s, c.metadata) for c, s in zip(chunks, scores, strict=False)),
                  key=lambda h: -h.score)


def test_overlapping_hits_merge_into_one_piece_without_repeating_the_overlap() -> None:
    c = doc_chunks()
    hits = rank(c[:2], 0.8, 0.9)
    ctx = assemble_context(hits, len, 1000, widen=False)
    assert [(p.start, p.end, p.chunk_ids) for p in ctx.pieces] == [(0, DOC.index("\n"), ("d#0", "d#1"))]
    assert ctx.pieces[0].text.count("它们生活在四川的山区。") == 1  # the overlap once, unlike concatenation
    assert ctx.pieces[0].score == 0.9 and ctx.tokens == len(ctx.pieces[0].text) < len(c[0].text + c[1].text)
    assert ctx.pieces[0].metadata == {"source": "d", "page": 1}


def test_a_whitespace_gap_is_merged_only_when_its_text_is_known() -> None:
    c = doc_chunks()
    apart = assemble_context(rank([c[1], c[2]], 0.9, 0.8), len, 1000, widen=False)
    assert len(apart.pieces) == 2  # the "\n\n" between them was stored in no chunk: never invented
    bridge = chunk(DOC, "d", DOC.index("每天"), DOC.index("长城建于"), 9)
    merged = assemble_context(rank([c[1], c[2]], 0.9, 0.8), len, 1000, neighbours=[bridge], widen=False)
    assert [(p.start, p.end) for p in merged.pieces] == [(DOC.index("它们"), DOC.index("游客"))]
    assert merged.pieces[0].text == DOC[DOC.index("它们") : DOC.index("游客")]


def test_a_piece_too_big_is_trimmed_to_the_sentences_about_the_query() -> None:
    c = doc_chunks()
    ctx = assemble_context(rank([c[1]], 0.9), len, 12, query="每天吃多少竹子", sentence_starts=sentence_starts,
                           widen=False)
    assert [p.text for p in ctx.pieces] == ["每天要吃十几公斤竹子。"]
    assert ctx.pieces[0].start == DOC.index("每天") and ctx.left_out == ()
    plain = assemble_context(rank([c[1]], 0.9), len, 12, sentence_starts=sentence_starts, widen=False)
    assert [p.text for p in plain.pieces] == ["它们生活在四川的山区。"]  # no query: the hit's first sentence


def test_when_the_best_sentence_does_not_fit_the_best_one_that_fits_is_taken() -> None:
    c = doc_chunks()
    roomy = assemble_context(rank([c[2]], 0.9), len, 7, query="明朝", sentence_starts=sentence_starts, widen=False)
    assert [p.text for p in roomy.pieces] == ["长城建于明朝。"]
    tight = assemble_context(rank([c[2]], 0.9), len, 6, query="明朝", sentence_starts=sentence_starts, widen=False)
    assert [p.text for p in tight.pieces] == ["长城很长。"] and tight.left_out == ()


def test_a_merged_piece_is_trimmed_around_its_best_ranked_hit() -> None:
    c = doc_chunks()  # c0 holds the sentence sharing most with the query, but c1 ranks first
    ctx = assemble_context(rank(c[:2], 0.2, 0.9), len, 11, query="大熊猫吃竹子", sentence_starts=sentence_starts,
                           widen=False)
    assert [p.text for p in ctx.pieces] == ["每天要吃十几公斤竹子。"] and ctx.pieces[0].score == 0.9


def test_without_sentence_rules_a_piece_is_cut_at_chunk_edges_only() -> None:
    c = doc_chunks()
    ctx = assemble_context(rank(c[:2], 0.9, 0.8), len, 30, query="每天吃多少竹子", widen=False)
    assert [(p.start, p.end) for p in ctx.pieces] == [(0, c[0].metadata["end"])]
    assert ctx.pieces[0].text == c[0].text  # the edges 0, 9, 20, 31 of the two chunks are the only cuts
    alone = assemble_context(rank(c[1:2], 0.9), len, 12, query="每天吃多少竹子", widen=False)
    assert alone.pieces == [] and alone.left_out == ("d#1",)  # one chunk, no cut inside: it does not fit


def test_a_hit_whose_smallest_sentence_does_not_fit_is_left_out_and_a_later_one_still_fits(long_rag) -> None:
    tight = long_rag.context("黄河的事情", 3, mode="sparse", k=6)  # every sentence of LONG is over 3 tokens
    assert tight.pieces == [] and tight.tokens == 0 and len(tight.left_out) == 6
    c = doc_chunks()
    big = chunk("仅一句很长很长很长很长很长的话没有句号", "e", 0, 19, 0, 0.99)
    ctx = assemble_context([big, *rank([c[2]], 0.5)], len, 6, sentence_starts=sentence_starts, widen=False)
    assert ctx.left_out == ("e#0",)
    assert [p.text for p in ctx.pieces] == ["长城很长。"]


def test_widening_spends_the_rest_on_neighbouring_sentences_and_merges_what_meets() -> None:
    c = doc_chunks()
    ctx = assemble_context(rank([c[0]], 0.9), len, 22, neighbours=c, sentence_starts=sentence_starts)
    assert [p.text for p in ctx.pieces] == ["大熊猫主要吃竹子。它们生活在四川的山区。"]
    wide = assemble_context(rank([c[0]], 0.9), len, 40, neighbours=c, sentence_starts=sentence_starts)
    assert [p.text for p in wide.pieces] == [DOC[: DOC.index("\n")]] and wide.pieces[0].chunk_ids == ("d#0", "d#1")
    two = assemble_context(rank([c[2], c[3]], 0.9, 0.1), len, 4, neighbours=c, sentence_starts=sentence_starts)
    assert two.tokens <= 4
    meet = assemble_context(rank([c[2], c[3]], 0.9, 0.1), len, 1000, neighbours=c, sentence_starts=sentence_starts)
    assert len(meet.pieces) == 1 and meet.pieces[0].text == DOC[DOC.index("长城很长") :]


def test_max_piece_tokens_gives_every_hit_a_share_before_any_grows() -> None:
    c = doc_chunks()
    hits = rank([c[1], c[3]], 0.9, 0.5)
    greedy = assemble_context(hits, len, 24, sentence_starts=sentence_starts, widen=False)
    assert [p.source for p in greedy.pieces] == ["d"] and greedy.left_out == ("d#3",)
    shared = assemble_context(hits, len, 24, sentence_starts=sentence_starts, widen=False, max_piece_tokens=12)
    assert len(shared.pieces) == 2 and shared.left_out == () and all(p.tokens <= 12 for p in shared.pieces)


def test_order_by_source_groups_a_source_in_text_order() -> None:
    c = doc_chunks()
    other = chunk("别的文档。", "z", 0, 5, 0)
    hits = [RetrievedChunk(c[3].id, c[3].text, 0.9, c[3].metadata), RetrievedChunk(other.id, other.text, 0.8,
            other.metadata), RetrievedChunk(c[0].id, c[0].text, 0.7, c[0].metadata)]
    assert [p.source for p in assemble_context(hits, len, 1000, widen=False).pieces] == ["d", "z", "d"]
    by_source = assemble_context(hits, len, 1000, widen=False, order="source").pieces
    assert [(p.source, p.start) for p in by_source] == [("d", 0), ("d", c[3].metadata["start"]), ("z", 0)]


def test_records_without_a_usable_span_are_pieces_of_their_own() -> None:
    c = doc_chunks()
    bare = RetrievedChunk("r1", "没有位置的记录。", 0.95, {"source": "note"})
    liar = RetrievedChunk("r2", c[0].text, 0.9, {"source": "d", "start": 0, "end": 3})  # end - start != len(text)
    ctx = assemble_context([bare, liar, *rank(c[:1], 0.5)], len, 1000, widen=False)
    assert [(p.source, p.start, p.end, p.chunk_ids) for p in ctx.pieces] == [
        ("note", None, None, ("r1",)), ("d", None, None, ("r2",)), ("d", 0, len(c[0].text), ("d#0",))]
    assert ctx.text.startswith("[1] note\n没有位置的记录。\n\n[2] d\n")
    assert f"[3] d (0-{len(c[0].text)})\n{c[0].text}" in ctx.text


def test_chunks_that_disagree_on_their_overlap_are_not_blended() -> None:
    c = doc_chunks()
    stale = RetrievedChunk("old", "它们住在四川的山区里。", 0.5, {"source": "d", "start": DOC.index("它们"),
                                                               "end": DOC.index("它们") + 11})
    ctx = assemble_context([*rank(c[:1], 0.9), stale], len, 1000, widen=False)
    assert [(p.text, p.start) for p in ctx.pieces] == [(c[0].text, 0), (stale.text, None)]


def test_repeated_hits_count_once_at_their_first_rank() -> None:
    c = doc_chunks()
    ctx = assemble_context([*rank(c[:1], 0.9), *rank(c[:1], 0.2)], len, 1000, widen=False)
    assert len(ctx.pieces) == 1 and ctx.tokens == len(c[0].text) and ctx.pieces[0].score == 0.9
    tie = [*rank([c[0]], 0.5), *rank([c[3]], 0.5), *rank([c[0]], 0.5)]  # equal scores: the rank decides the order
    assert [p.chunk_ids for p in assemble_context(tie, len, 1000, widen=False).pieces] == [("d#0",), ("d#3",)]


def test_no_hits_give_an_empty_context() -> None:
    ctx = assemble_context([], len, 10)
    assert (ctx.pieces, ctx.tokens, ctx.text, ctx.left_out) == ([], 0, "", ())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_tokens": 0}, "budget_tokens must be a positive integer"),
        ({"budget_tokens": True}, "budget_tokens must be a positive integer"),
        ({"budget_tokens": "512"}, "budget_tokens must be a positive integer"),
        ({"order": "rank"}, "order must be one of score, source"),
        ({"max_piece_tokens": 0}, "max_piece_tokens must be a positive integer"),
        ({"count_tokens": "bert"}, "count_tokens must be a function"),
        ({"count_tokens": lambda text: -1}, "count_tokens must return a non-negative int"),
        ({"count_tokens": lambda text: 2.5}, "count_tokens must return a non-negative int"),
        ({"hits": ["熊猫"]}, "must be RetrievedChunk results"),
    ],
)
def test_bad_options_are_refused_with_the_fix(kwargs, message) -> None:
    args = {"hits": doc_chunks()[:1], "count_tokens": len, "budget_tokens": 10, **kwargs}
    with pytest.raises(InputError, match=message):
        assemble_context(args.pop("hits"), args.pop("count_tokens"), args.pop("budget_tokens"), **args)


# ---------------------------------------------------------------------- the pipeline (stand-in model)

LONG = "\n\n".join(
    f"第{n}段。" + "".join(f"这是第{n}段的第{m}句话，讲{topic}的事情。" for m in range(6))
    for n, topic in enumerate(["熊猫", "长城", "故宫", "黄河", "泰山", "西湖"])
)


@pytest.fixture(scope="module")
def long_rag(tmp_path_factory: pytest.TempPathFactory, tiny_model_path):
    """One long document in small overlapping chunks (tiny random-weight model: use sparse mode to rank)."""
    from m3e_rag import RAGPipeline

    rag = RAGPipeline(tmp_path_factory.mktemp("context") / "idx", model_name=str(tiny_model_path),
                      chunk_tokens=40, overlap_tokens=12)
    rag.ingest(texts=[LONG], sources=["long.txt"])
    return rag


def model_count(rag) -> Callable[[str], int]:
    specials = rag.encoder.count_tokens([""])[0]
    return lambda text: rag.encoder.count_tokens([text])[0] - specials


@pytest.mark.parametrize("budget", [24, 40, 100, 300])
def test_pipeline_context_is_exact_and_within_the_model_token_budget(long_rag, budget) -> None:
    stored = long_rag.store.get(where={"source": "long.txt"})
    assert any(a.metadata["end"] > b.metadata["start"] > a.metadata["start"] for a in stored for b in stored)
    ctx = long_rag.context("黄河的事情", budget_tokens=budget, mode="sparse", k=6)
    hits = long_rag.search("黄河的事情", k=6, mode="sparse")
    assert ctx.budget == budget and 0 < ctx.tokens <= budget
    check_invariants(ctx, {"long.txt": LONG}, stored, hits, budget, stored, model_count(long_rag))
    assert "黄河" in ctx.pieces[0].text  # the best hit's focus is the sentence about the query


def test_pipeline_context_widens_into_stored_neighbours_only_when_asked(long_rag) -> None:
    hit = long_rag.search("泰山的事情", k=1, mode="sparse")[0]
    narrow = long_rag.context("泰山的事情", 2000, k=1, mode="sparse", widen=0)
    assert [p.chunk_ids for p in narrow.pieces] == [(hit.id,)] and narrow.pieces[0].text == hit.text
    wide = long_rag.context("泰山的事情", 2000, k=1, mode="sparse", widen=1)
    (piece,) = wide.pieces
    assert hit.id in piece.chunk_ids and len(piece.chunk_ids) >= 2  # a neighbour fetched from the store
    assert piece.start < hit.metadata["start"] or piece.end > hit.metadata["end"]
    assert piece.text == LONG[piece.start : piece.end]


def test_pipeline_context_counts_with_the_given_counter_and_assembles_given_hits(long_rag) -> None:
    hits = long_rag.search("故宫的事情", k=3, mode="sparse")
    ctx = long_rag.context("故宫的事情", 30, hits=hits, count_tokens=len, widen=0)
    assert ctx.tokens == sum(len(p.text) for p in ctx.pieces) <= 30
    assert {cid for p in ctx.pieces for cid in p.chunk_ids} <= {h.id for h in hits}
    assert "[1] long.txt (" in ctx.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widen": -1}, "widen must be a non-negative integer"),
        ({"budget_tokens": 0}, "budget_tokens must be a positive integer"),
        ({"order": "time"}, "order must be one of"),
        ({"hits": [], "mode": "sparse"}, "hits= replaces the search; mode would be ignored"),
        ({"hits": [], "k": 3}, "hits= replaces the search; k would be ignored"),
        ({"size": 3}, "size"),
    ],
)
def test_pipeline_context_refuses_bad_options_before_searching(long_rag, monkeypatch, kwargs, message) -> None:
    searched = []
    monkeypatch.setattr(long_rag._searcher, "search", lambda *a, **k: searched.append(a) or [])
    with pytest.raises(InputError, match=message):
        long_rag.context("熊猫", **kwargs)
    assert searched == []
