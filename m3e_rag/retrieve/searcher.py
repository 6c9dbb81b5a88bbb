"""The search, in one place: from a query (or a query vector) to ranked chunks.

:class:`Searcher` runs every search of a :class:`~m3e_rag.RAGPipeline`: the argument checks, the
query bounded to the model's window, the dense query, BM25 ranked among the chunks the filters allow
(:meth:`Searcher._sparse_search`), hybrid fusion, MMR, reranking and the score threshold. It reads
the index through an :class:`IndexReader` (the Chroma store and its BM25 side, caught up with other
processes' writes before each search) and embeds with the pipeline's encoder, which loads its model
on first use only: building a Searcher loads nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.boundary import check_filters
from m3e_rag.index.chroma import ChromaStore
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.retrieve.colbert import colbert_rescore
from m3e_rag.retrieve.fusion import HybridWeights, fuse_hybrid
from m3e_rag.retrieve.learned import QueryPlan, plan_query
from m3e_rag.retrieve.mmr import mmr_select
from m3e_rag.retrieve.modes import SearchMode, check_k, check_mode
from m3e_rag.retrieve.rerank import Reranker, RerankerLike, load_reranker, rerank
from m3e_rag.types import RetrievedChunk

__all__ = ["Searcher", "IndexReader", "SPARSE_VERIFY_ROUNDS", "SPARSE_VERIFY_MAX_IDS", "check_threshold",
           "strip_private"]

#: Filtered BM25: heads of the unfiltered ranking checked against the filter, as multiples of the depth
#: asked (see :meth:`Searcher._sparse_search`), and the most ids one check may send to the store.
SPARSE_VERIFY_ROUNDS = (8, 64)
SPARSE_VERIFY_MAX_IDS = 5000


class IndexReader(Protocol):
    """What a search reads: the store, its BM25 side, whether there is one, and a catch-up with other writers."""

    use_sparse: bool

    @property
    def store(self) -> ChromaStore:
        """The Chroma store (opened on first use)."""
        ...

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, caught up with the store."""
        ...

    def sync(self) -> None:
        """See other processes' writes (cheap when there were none)."""
        ...


def check_threshold(value: object) -> float:
    """A finite number, or InputError: a NaN threshold would silently drop every result."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"score_threshold must be a number, got {type(value).__name__}.")
    if not np.isfinite(float(value)):
        raise InputError(f"score_threshold must be a finite number, got {value!r}; leave it None for no threshold.")
    return float(value)


def strip_private(results: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
    """Drop internal metadata keys (stored vectors) before results reach the caller."""
    return [
        RetrievedChunk(r.id, r.text, r.score, {k: v for k, v in r.metadata.items() if not k.startswith("_")})
        if any(k.startswith("_") for k in r.metadata)
        else r
        for r in results
    ]


class Searcher:
    """Runs the searches of one pipeline over its index, encoder and default fusion weights and reranker.

    Args:
        index: the store and its BM25 side (see :class:`IndexReader`).
        encoder: the pipeline's encoder (its model loads on the first query embedded).
        hybrid_weights: default fusion weights of hybrid search.
        reranker: default second stage, or None.
    """

    def __init__(
        self, index: IndexReader, encoder: TextEncoder, hybrid_weights: HybridWeights, reranker: Reranker | None
    ) -> None:
        self._index = index
        self._encoder = encoder
        self.hybrid_weights = hybrid_weights
        self.reranker = reranker

    def search(
        self,
        query: str,
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        mode: SearchMode | None = None,
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        score_threshold: float | None = None,
        reranker: RerankerLike | None = None,
        rerank_top_n: int | None = None,
        query_vector: Sequence[float] | np.ndarray | None = None,
        hybrid_weights: HybridWeights | None = None,
        sparse: str = "auto",
        colbert: bool = False,
    ) -> list[RetrievedChunk]:
        """The ``k`` chunks best matching ``query``; see :meth:`m3e_rag.RAGPipeline.search` for the arguments."""
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r:.80}.")
        check_k(k)
        check_k(fetch_k, "fetch_k")
        if score_threshold is not None:
            score_threshold = check_threshold(score_threshold)
            if mode is None:
                # A threshold is on the mode's scale; the default mode became hybrid, so a threshold
                # written for cosine must not silently start filtering fused scores.
                raise InputError(
                    "score_threshold is on the search mode's scale (cosine for mode='dense', fused z-score units "
                    "for 'hybrid', BM25 for 'sparse'); pass mode= with it, e.g. mode='dense' for a cosine threshold."
                )
        mode = check_mode(mode) if mode is not None else ("hybrid" if self._index.use_sparse else "dense")
        check_filters(where, where_document)  # a bad filter fails before the query is embedded
        query = self.bounded_query(query)  # before any tokenizer or BM25 work: the window is all that is read
        reranker = load_reranker(reranker) if reranker is not None else self.reranker
        if not isinstance(colbert, bool):
            raise InputError(f"colbert must be True or False, got {colbert!r}.")
        depth = max(k, fetch_k) if (mmr or reranker is not None or mode != "dense" or colbert) else k
        if reranker is not None and rerank_top_n is not None:
            depth = max(depth, check_k(rerank_top_n, "rerank_top_n"))
        self._index.sync()  # another process may have written: one metadata read, catch up only if it did
        store = self._index.store
        # The sparse list (BM25 or the model's learned one) and, when the model runs for it, the query's outputs.
        plan = plan_query(self._index, self._encoder, query, mode=mode, sparse=sparse, colbert=colbert)
        qvec: Any = None
        dense: list[RetrievedChunk] = []
        if mode in ("dense", "hybrid") or mmr or colbert:
            qvec = self.check_vector(query_vector) if query_vector is not None else plan.dense_vector()
            qvec = self._encoder.encode_query(query) if qvec is None else qvec
        if mode in ("dense", "hybrid") or mmr:
            dense = store.query(qvec, depth, where=where, where_document=where_document, include_embeddings=mmr)
        if mode == "dense":
            results = dense
        else:
            sparse_hits = self._sparse_search(plan, depth, where, where_document)
            if mode == "sparse":
                results = sparse_hits
            else:
                weights = hybrid_weights or self.hybrid_weights
                coverage = plan.coverage() if weights.coverage_power else 1.0
                results = fuse_hybrid(dense, sparse_hits, weights, coverage)
        if colbert and results:
            results = colbert_rescore(self._encoder, plan.outputs, qvec, results[:depth])
        if mmr and results:
            results = self._mmr(qvec, results, k, lambda_mult)
        if reranker is not None:
            results = rerank(reranker, query, results[: rerank_top_n or depth])
        if score_threshold is not None:
            results = [r for r in results if r.score >= score_threshold]
        return strip_private(results[:k])

    def check_vector(self, vector: Sequence[float] | np.ndarray) -> np.ndarray:
        """``vector`` as a float32 row of this model's dimension, or InputError (a string, wrong shape, NaN)."""
        if isinstance(vector, (str, bytes)):
            raise InputError("query_vector must be a sequence of floats, got a string; pass encoder.encode_query(q).")
        try:
            vec = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"query_vector is not a vector of numbers ({exc}); pass encoder.encode_query(q).") from exc
        if vec.ndim != 1 or vec.shape[0] != self._encoder.dim:
            raise InputError(
                f"query_vector has shape {vec.shape}, expected ({self._encoder.dim},); pass one row of "
                "encoder.encode_queries(...) from this pipeline's model."
            )
        if not np.isfinite(vec).all():
            raise InputError("query_vector holds NaN or infinite values; embed the query again with this model.")
        return vec

    def bounded_query(self, query: str) -> str:
        """The part of ``query`` the model reads (its window less the query prompt); lone surrogates refused.

        Invisible characters are removed first (:func:`m3e_rag.encode.inputs.model_text`), so BM25 and the
        model see the same cleaned query and the window is counted on it.
        """
        from m3e_rag.encode.inputs import cap_query, cap_query_chars, check_unicode, model_text

        check_unicode(query)
        window = self._encoder.max_seq_length
        query = cap_query_chars(model_text(query), window)  # cheap, before the tokenizer sees it
        prompt = self._encoder.query_prompt
        room = window - 2 - (self._encoder.count_tokens([prompt])[0] - 2 if prompt else 0)
        return cap_query(query, self._encoder.tokenizer, max(1, room))

    def _sparse_search(
        self,
        plan: QueryPlan,
        depth: int,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[RetrievedChunk]:
        """The sparse list's top-``depth`` (BM25 or learned, per ``plan``) among the chunks the filters allow (exact).

        With a metadata filter, BM25's unfiltered ranking is first walked in score order, its head
        fetched by id and the filter evaluated on it (:data:`SPARSE_VERIFY_ROUNDS`): when the head holds
        ``depth`` allowed chunks, or the ranking ends inside it, those are exactly the filtered top
        (filtered and unfiltered BM25 scores are equal: document frequencies count the whole index).
        That is what a broad filter (half of the chunks) needs: resolving the ids it allows first is slow
        at a million chunks (figures: benchmarks/README.md, 'Design figures'). A narrow filter, a document
        filter or a record the evaluator cannot decide falls through to that exact path, where the allowed
        ids are resolved by Chroma.
        """
        if where or where_document:
            verified = self._sparse_verified(plan, depth, where, where_document)
            if verified is not None:
                return verified
        allowed = self._index.store.allowed_ids(where, where_document)  # None: no filter
        if allowed is not None and not allowed:
            return []
        hits = plan.search(depth, allowed_ids=None if allowed is None else set(allowed))
        if not hits:
            return []
        records = {r.id: r for r in self._index.store.get(ids=[cid for cid, _ in hits])}
        return [RetrievedChunk(cid, records[cid].text, score, records[cid].metadata)
                for cid, score in hits if cid in records]

    def _sparse_verified(
        self, plan: QueryPlan, depth: int, where: Mapping[str, Any] | None, where_document: Mapping[str, Any] | None
    ) -> list[RetrievedChunk] | None:
        """The filtered BM25 top-``depth`` from the head of the unfiltered ranking; None to take the exact path.

        The head's records are fetched by id and the metadata filter evaluated on them
        (:func:`m3e_rag.index.where.match_where`); a document filter, a record it cannot decide, or a head
        too short sends the search to the exact path.
        """
        from m3e_rag.index.where import match_where

        if where_document or not where:
            return None
        budgets = [depth * f for f in SPARSE_VERIFY_ROUNDS if depth * f <= SPARSE_VERIFY_MAX_IDS]
        if not budgets:
            return None
        ranked = plan.search(budgets[-1])  # one scoring; each head is a prefix of it
        if not ranked:
            return []
        records: dict[str, RetrievedChunk] = {}
        kept: list[RetrievedChunk] = []
        walked = 0
        for budget in budgets:
            head = ranked[walked:budget]
            records.update((r.id, r) for r in self._index.store.get(ids=[cid for cid, _ in head]))
            for cid, score in head:
                record = records.get(cid)
                if record is None:
                    continue  # written to BM25, not (yet) to the store: not a result either way
                verdict = match_where(where, record.metadata)
                if verdict is None:
                    return None
                if verdict:
                    kept.append(RetrievedChunk(cid, record.text, score, record.metadata))
                    if len(kept) == depth:
                        return kept
            walked = budget
            if len(ranked) < budget:
                return kept  # the whole ranking was walked
            if len(kept) * SPARSE_VERIFY_ROUNDS[-1] < budget:
                return None  # too selective for the next round as well: resolve the allowed ids instead
        return None

    def _mmr(self, qvec: Any, results: list[RetrievedChunk], k: int, lambda_mult: float) -> list[RetrievedChunk]:
        """MMR over ``results``, with the stored vectors of those that came without one (BM25 hits)."""
        missing = [r.id for r in results if "_embedding" not in r.metadata]
        vectors: dict[str, Any] = {r.id: r.metadata["_embedding"] for r in results if "_embedding" in r.metadata}
        if missing:
            for rec in self._index.store.get(ids=missing, include_text=False, include_embeddings=True):
                vectors[rec.id] = rec.metadata["_embedding"]
        picked = mmr_select(qvec, [vectors[r.id] for r in results], k, lambda_mult)
        return [results[i] for i in picked]

    def search_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 4,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        mmr: bool = False,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        include_embeddings: bool = False,
    ) -> list[RetrievedChunk]:
        """Dense search for a query vector computed beforehand; see :meth:`m3e_rag.RAGPipeline.search_by_vector`."""
        check_k(k)
        check_k(fetch_k, "fetch_k")
        vec = self.check_vector(vector)
        depth = max(k, fetch_k) if mmr else k
        self._index.sync()
        results = self._index.store.query(vec, depth, where=where, where_document=where_document,
                                          include_embeddings=mmr or include_embeddings)
        if mmr and results:
            results = self._mmr(vec, results, k, lambda_mult)
        results = results[:k]
        return results if include_embeddings else strip_private(results)
