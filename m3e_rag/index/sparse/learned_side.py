"""The learned-sparse side of a pipeline: kept on disk and in step with the store exactly like the BM25 side.

:class:`LearnedFolder` is a :class:`~m3e_rag.index.sparse.folder.SparseFolder` (snapshot + append-only log,
crash-safe, shared by processes) whose log records carry each token id's weight beside the token ids;
:class:`LearnedSide` is a :class:`~m3e_rag.index.sparse.sync.SparseSide` (generation checks, catch-up
from the store, read-only handling) over such a folder. Catching up needs the weights of chunks the side
lacks, which only the model can give: the side is built with a ``lexical`` function (the encoder's sparse
output for document texts) and calls it on the missing chunks' stored texts. Ingest never needs it: it
computes the weights in the same forward pass as the dense vectors and hands them over
(:meth:`LearnedSide.upsert_weights`).

Layout: ``<index>/sparse_learned`` beside ``<index>/sparse_bm25`` (``sparse_learned-<collection>`` for
other collections; a Chroma server's cache folder gets a ``-learned`` twin), see :func:`learned_folder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from m3e_rag.errors import InputError
from m3e_rag.index.chroma import ChromaStore
from m3e_rag.index.sparse.folder import SparseFolder
from m3e_rag.index.sparse.learned import LearnedSparseIndex, check_weights
from m3e_rag.index.sparse.sync import SPARSE_DIR, SparseSide

__all__ = ["LEARNED_DIR", "LearnedFolder", "LearnedSide", "LexicalFn", "learned_folder"]

#: Folder of the learned-sparse side inside an embedded index folder (beside :data:`SPARSE_DIR`).
LEARNED_DIR = "sparse_learned"
#: Texts -> their lexical weights (the model's sparse output for documents).
LexicalFn = Callable[[list[str]], list[dict[str, float]]]
_ENCODE_PAGE = 64


def learned_folder(bm25_folder: Path) -> Path:
    """The learned side's folder next to the BM25 side's (one naming rule for pipeline and doctor)."""
    name = bm25_folder.name
    if name.startswith(SPARSE_DIR):
        return bm25_folder.with_name(LEARNED_DIR + name[len(SPARSE_DIR):])
    return bm25_folder.with_name(name + "-learned")


class LearnedFolder(SparseFolder):
    """A :class:`LearnedSparseIndex` kept in a folder: records ``{"terms": [[id, ...]], "weights": [[w, ...]]}``."""

    index_type = LearnedSparseIndex

    @property
    def learned(self) -> LearnedSparseIndex:
        """The in-memory index, typed."""
        return cast(LearnedSparseIndex, self.index)

    def upsert(self, ids: Sequence[str], texts: Sequence[str], generation: int | None) -> None:
        """Refused: the folder holds weights (see :meth:`upsert_weights`)."""
        raise InputError("a learned-sparse folder holds lexical weights, not texts; use upsert_weights")

    def upsert_weights(
        self, ids: Sequence[str], lexical: Sequence[Mapping[str, float]], generation: int | None
    ) -> None:
        """Add chunks' weights to the index and append them to the log, recording the store generation."""
        checked = [check_weights(w, repr(cid)) for cid, w in zip(ids, lexical, strict=True)]
        self._append({"op": "u", "ids": list(ids), "terms": [list(w) for w in checked],
                      "weights": [list(w.values()) for w in checked], "gen": generation})

    def _apply_upsert(self, ids: list[str], record: dict[str, Any]) -> None:
        pairs = zip(record["terms"], record["weights"], strict=True)
        self.learned.upsert_weights(ids, [dict(zip(t, w, strict=True)) for t, w in pairs])


class LearnedSide(SparseSide):
    """The learned-sparse index of one store, persisted in ``folder`` (None: in memory only).

    Args:
        store: the Chroma store it mirrors.
        folder: where it lives (:func:`learned_folder`), or None.
        lexical: the model's sparse output for document texts (used only to catch up from the store).
    """

    folder_type = LearnedFolder
    label = "learned-sparse index"
    old_file = None  # no single-file version ever existed (the BM25 side's old file is the BM25 side's to replace)

    def __init__(self, store: ChromaStore, folder: Path | None, lexical: LexicalFn) -> None:
        super().__init__(store, folder)
        self._lexical = lexical

    @property
    def learned(self) -> LearnedSparseIndex:
        """The in-memory index, typed (open first)."""
        return cast(LearnedSparseIndex, self.index)

    def upsert_weights(self, ids: Sequence[str], lexical: Sequence[Mapping[str, float]], generation: int) -> None:
        """Add chunks' weights computed by the caller (ingest: the same forward pass as their vectors)."""
        self._upsert_weights(list(ids), list(lexical), generation)

    def _upsert(self, ids: list[str], texts: list[str], generation: int | None) -> None:
        """Weights for texts (a catch-up from the store, or a writer without weights): run the model on them."""
        for start in range(0, len(ids), _ENCODE_PAGE):
            piece = texts[start : start + _ENCODE_PAGE]
            self._upsert_weights(ids[start : start + _ENCODE_PAGE], self._lexical(piece), generation)

    def _upsert_weights(self, ids: list[str], lexical: Sequence[Mapping[str, float]], generation: int | None) -> None:
        if self._disk is not None:
            cast(LearnedFolder, self._disk).upsert_weights(ids, lexical, generation)
        else:
            self.learned.upsert_weights(ids, lexical)
            self._memory_generation = generation
