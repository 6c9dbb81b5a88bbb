"""Which sparse list a search ranks with: BM25, or the model's own learned-sparse output (BGE-M3's lexical weights).

A model folder that ships a sparse head (BGE-M3's ``sparse_linear.pt``; the encoder's ``outputs`` name
``"sparse"``) gets a learned-sparse index beside BM25 (:mod:`m3e_rag.index.sparse.learned`). A search's
``sparse=`` option picks the list that ``mode="sparse"`` and ``mode="hybrid"`` use:

- ``"auto"`` (default): the learned list when the index keeps one, else BM25. A user who picks BGE-M3 for
  its hybrid retrieval gets it without a flag; M3E keeps BM25.
- ``"bm25"``: BM25 by name, whatever the model (to compare, or for a corpus where exact words matter).
- ``"learned"``: the learned list, or a clear error when the model has no sparse head.

The query's lexical weights come from one forward pass that also gives its dense vector (and its ColBERT
vectors when the ColBERT stage is asked, :mod:`m3e_rag.retrieve.colbert`): a learned hybrid search runs the
model once per query, as a BM25 hybrid search does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError
from m3e_rag.index.sparse.bm25 import SparseIndex
from m3e_rag.index.sparse.learned import LearnedSparseIndex

__all__ = ["SPARSE_CHOICES", "LearnedReader", "QueryPlan", "SparseChoice", "check_sparse", "plan_query"]

#: The sparse lists a search can rank with (see the module docstring).
SparseChoice = Literal["auto", "bm25", "learned"]
SPARSE_CHOICES: tuple[str, ...] = get_args(SparseChoice)


class LearnedReader(Protocol):
    """What the plan reads of the index: its BM25 side, and its learned side when it keeps one."""

    @property
    def has_learned(self) -> bool:
        """The index keeps a learned-sparse side (the model has a sparse head)."""
        ...

    @property
    def sparse_index(self) -> SparseIndex:
        """The BM25 index, caught up with the store."""
        ...

    @property
    def learned_index(self) -> LearnedSparseIndex | None:
        """The learned-sparse index, caught up with the store (None without a sparse head)."""
        ...


def check_sparse(value: object) -> SparseChoice:
    """A sparse choice name, or InputError listing the accepted ones."""
    if value not in SPARSE_CHOICES:
        raise InputError(f"sparse must be one of {', '.join(SPARSE_CHOICES)}; got {value!r}.")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class QueryPlan:
    """The sparse list of one search and the query's model outputs, computed once.

    Attributes:
        index: the index the sparse list is ranked in (BM25 or learned), None for a dense-only search.
        query: what that index is searched with: the text (BM25) or the query's lexical weights (learned).
        outputs: the query's model outputs (dense, lexical, ColBERT) when the model ran for them, else None.
    """

    index: SparseIndex | None
    query: str | Mapping[str, float]
    outputs: Any | None

    @property
    def learned(self) -> bool:
        """The sparse list is the learned one."""
        return isinstance(self.index, LearnedSparseIndex)

    def search(self, k: int, allowed_ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """The sparse list's ``k`` best ``(id, score)`` pairs among ``allowed_ids`` (all when None)."""
        assert self.index is not None, "a dense-only plan has no sparse list"
        return self.index.search(self.query, k, allowed_ids=allowed_ids)  # type: ignore[arg-type]

    def coverage(self) -> float:
        """Share of the query's terms (BM25) or weighted token ids (learned) that the index holds."""
        assert self.index is not None, "a dense-only plan has no sparse list"
        return self.index.term_coverage(self.query)  # type: ignore[arg-type]

    def dense_vector(self) -> Any | None:
        """The query's dense vector from the same forward pass, when the model ran (saves a second pass)."""
        return None if self.outputs is None else self.outputs.dense[0]


def plan_query(
    index: Any, encoder: TextEncoder, query: str, *, mode: str, sparse: object = "auto", colbert: bool = False
) -> QueryPlan:
    """Pick the sparse list for ``mode`` and run the model once for what the search needs of the query.

    Raises:
        InputError: for an unknown ``sparse``, ``sparse="learned"`` without a sparse head, or a ``sparse``
            other than ``"auto"`` with ``mode="dense"`` (which ranks no sparse list: it would be ignored).
    """
    choice = check_sparse(sparse)
    has_learned = bool(getattr(index, "has_learned", False))
    if mode == "dense" and choice != "auto":
        raise InputError(f"sparse={choice!r} picks the sparse list of mode='sparse' or 'hybrid'; mode='dense' "
                         "ranks none. Leave sparse='auto', or pass mode='hybrid'.")
    if choice == "learned" and not has_learned:
        outputs = getattr(encoder, "outputs", ("dense",))
        raise InputError(
            f"sparse='learned' needs a model with a sparse head (a folder with BGE-M3's sparse_linear.pt); "
            f"{encoder.model_name!r} has outputs {tuple(outputs)}, or the pipeline was built without a sparse "
            "side. Use sparse='bm25' or 'auto'."
        )
    learned = mode != "dense" and has_learned and choice != "bm25"
    outputs = None
    if learned or colbert:
        outputs = encoder.encode_outputs([query], "query", sparse=True, colbert=colbert)  # type: ignore[attr-defined]
    if mode == "dense":
        return QueryPlan(None, query, outputs)
    if learned and outputs is not None:
        return QueryPlan(index.learned_index, dict(outputs.lexical[0]), outputs)
    return QueryPlan(index.sparse_index, query, outputs)
