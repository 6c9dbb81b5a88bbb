"""``M3EVectorStore.query()`` options: ``ChromaVectorStore``'s names resolved to the engine's, or refused.

MMR, side by side with ``llama-index-vector-stores-chroma`` 0.6.0 (``ChromaVectorStore._mmr_search``):

=============================  =======================================  ===============================================
option                         ``ChromaVectorStore``                    ``M3EVectorStore`` (the engine's names)
=============================  =======================================  ===============================================
``mmr_threshold`` (0..1)       relevance weight of LlamaIndex's MMR;    ``lambda_mult = mmr_threshold``: 1 relevance
                               default 0.5; outside 0..1: ValueError    only, 0 diversity only; default 0.5; outside
                                                                        0..1: InputError (a ValueError). Also read from
                                                                        ``VectorStoreQuery.mmr_threshold`` (Chroma's
                                                                        store ignores that field)
``mmr_prefetch_factor``        candidates ``int(top_k * factor)``,      ``fetch_k = max(top_k, int(top_k * factor))``;
                               at least top_k; default 4.0              default 4.0; a factor <= 0: InputError
``mmr_prefetch_k``             candidates ``max(top_k, prefetch_k)``    ``fetch_k = max(top_k, mmr_prefetch_k)``
                                                                        (m3e-rag's own name ``fetch_k`` is the same)
factor and prefetch_k both     ValueError                               InputError (a ValueError)
a non-MMR mode                 the names reach ``collection.query``     InputError: they apply to mode ``mmr`` only
                               (TypeError)                              (``fetch_k`` stays the candidate depth of
                                                                        sparse and hybrid, default 20)
=============================  =======================================  ===============================================

One difference in the algorithm itself: LlamaIndex's ``get_top_k_mmr_embeddings`` (used by Chroma's
store) discounts a candidate by its similarity to the *last* node picked; the engine's
:func:`~m3e_rag.retrieve.mmr.mmr_select` by its greatest similarity to *any* node picked (MMR as
published). The first two picks agree; later ones can differ when a candidate resembles an earlier
pick but not the last one. Similarities returned are each picked node's own similarity to the query
(cosine here, ``exp(-distance)`` in Chroma's store), not the MMR score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from m3e_rag.errors import InputError
from m3e_rag.retrieve.modes import check_k

__all__ = [
    "QUERY_KWARGS",
    "DEFAULT_FETCH_K",
    "DEFAULT_MMR_PREFETCH_FACTOR",
    "MMR_KWARGS",
    "mmr_settings",
    "refuse_ranking_options",
    "refuse_unsupported_fields",
]

#: ``ChromaVectorStore``'s default: MMR picks from ``similarity_top_k * 4`` candidates.
DEFAULT_MMR_PREFETCH_FACTOR = 4.0
#: Candidates per ranking (sparse, hybrid) when ``fetch_k`` is not given: the engine's default.
DEFAULT_FETCH_K = 20
#: The MMR-only ``query(**kwargs)`` names (``ChromaVectorStore``'s).
MMR_KWARGS = ("mmr_threshold", "mmr_prefetch_factor", "mmr_prefetch_k")
#: ``query(**kwargs)`` names honoured (LlamaIndex passes ``vector_store_kwargs`` here).
QUERY_KWARGS = ("where", "where_document", "fetch_k", *MMR_KWARGS)


def _threshold(query: VectorStoreQuery, kwargs: Mapping[str, Any]) -> float | None:
    """The MMR threshold from the query field or the keyword (they must agree when both are given)."""
    field, keyword = query.mmr_threshold, kwargs.get("mmr_threshold")
    if field is not None and keyword is not None and field != keyword:
        raise InputError(
            f"VectorStoreQuery(mmr_threshold={field!r}) and query(mmr_threshold={keyword!r}) disagree; give one."
        )
    value = field if field is not None else keyword
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InputError(
            f"mmr_threshold must be a number from 0 (diversity only) to 1 (relevance only), got {value!r}."
        )
    return float(value)


def _prefetch(top_k: int, kwargs: Mapping[str, Any]) -> int:
    """MMR's candidate count, with ``ChromaVectorStore``'s meaning of its two options (see the module doc)."""
    factor, prefetch_k, fetch_k = (kwargs.get(n) for n in ("mmr_prefetch_factor", "mmr_prefetch_k", "fetch_k"))
    if prefetch_k is not None and fetch_k is not None and prefetch_k != fetch_k:
        raise InputError(f"mmr_prefetch_k={prefetch_k!r} and fetch_k={fetch_k!r} name the same depth; give one.")
    count = prefetch_k if prefetch_k is not None else fetch_k
    if factor is not None:
        if count is not None:
            raise InputError(
                "'mmr_prefetch_factor' and 'mmr_prefetch_k' (or fetch_k) cannot coexist in a call to query(): "
                "give the candidate count or its factor of similarity_top_k, not both."
            )
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise InputError(f"mmr_prefetch_factor must be a number above 0 (default 4.0), got {factor!r}.")
        return max(top_k, int(top_k * factor))
    if count is None:
        return max(top_k, int(top_k * DEFAULT_MMR_PREFETCH_FACTOR))
    return max(top_k, check_k(count, "mmr_prefetch_k" if prefetch_k is not None else "fetch_k"))


def mmr_settings(query: VectorStoreQuery, top_k: int, kwargs: Mapping[str, Any]) -> tuple[float, int]:
    """``(lambda_mult, fetch_k)`` for the engine's search, from ``ChromaVectorStore``'s option names.

    In mode ``mmr``: ``lambda_mult = mmr_threshold`` (default 0.5) and ``fetch_k`` from
    ``mmr_prefetch_k`` / ``fetch_k`` or ``int(top_k * mmr_prefetch_factor)`` (default factor 4.0), at
    least ``top_k``. In any other mode the MMR names are refused (they would rank nothing) and
    ``fetch_k`` is the candidate depth of sparse and hybrid rankings (default 20).

    Raises:
        InputError: an MMR option outside mode ``mmr``, a value out of range, or two options that
            name the same thing (factor and count; a threshold given twice, differently).
    """
    threshold = _threshold(query, kwargs)
    if query.mode != VectorStoreQueryMode.MMR:
        given = ["mmr_threshold" if threshold is not None else None,
                 *(n for n in MMR_KWARGS[1:] if kwargs.get(n) is not None)]
        named = [n for n in given if n]
        if named:
            raise InputError(f"{', '.join(named)} applies to vector_store_query_mode='mmr' only.")
        fetch_k = kwargs.get("fetch_k")
        return 0.5, DEFAULT_FETCH_K if fetch_k is None else check_k(fetch_k, "fetch_k")
    return (0.5 if threshold is None else threshold), _prefetch(top_k, kwargs)


def refuse_unsupported_fields(query: VectorStoreQuery) -> None:
    """Refuse the ``VectorStoreQuery`` fields this store cannot honour, each with the reason."""
    for name, reason in (
        ("sparse_top_k", "both rankings fetch the same candidate depth; pass vector_store_kwargs={'fetch_k': N}"),
        ("node_ids", "m3e-rag restricts searches by metadata, not by node id; use filters or doc_ids"),
        ("output_fields", "every node comes back whole"),
        ("embedding_field", "the index has one vector per node"),
    ):
        if getattr(query, name) not in (None, []):  # as_retriever() passes node_ids=[]: no restriction
            raise InputError(f"M3EVectorStore.query() does not support {name}={getattr(query, name)!r}: {reason}.")


def refuse_ranking_options(query: VectorStoreQuery, kwargs: Mapping[str, Any]) -> None:
    """A query without query_str or query_embedding is a filtered fetch: refuse options that rank.

    ``ChromaVectorStore`` answers such a query with ``collection.get(where=..., limit=top_k)``;
    M3EVectorStore does the same, so options that weigh or diversify a ranking would be ignored.
    """
    named = [n for n in ("alpha", "hybrid_top_k", "mmr_threshold") if getattr(query, n) is not None]
    named += [n for n in ("fetch_k", *MMR_KWARGS) if kwargs.get(n) is not None and n not in named]
    if named:
        raise InputError(
            f"{', '.join(named)} rank results against a query, but this query has neither query_str nor "
            "query_embedding (a filtered fetch of similarity_top_k nodes, as ChromaVectorStore does); add the "
            "query, or drop them."
        )
