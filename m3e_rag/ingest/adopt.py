"""Adopting a Chroma collection written by ``langchain_chroma.Chroma`` or LlamaIndex's ``ChromaVectorStore``.

Such a collection holds texts (Chroma documents), metadata and vectors, but no record of the model that
made the vectors, so :class:`~m3e_rag.index.chroma.ChromaStore` refuses to open it (the model guard,
:mod:`m3e_rag.index.guard`). :func:`adopt_index` checks that m3e-rag can serve it as it is, then records
the guard, so the index moves over without re-embedding anything:

1. **It exists, is not m3e-rag's already, and holds records.**
2. **The vectors' dimension** is the model's.
3. **The space is cosine.** Chroma's default is ``l2`` (``langchain_chroma.Chroma`` without
   ``collection_metadata={"hnsw:space": "cosine"}``, ``ChromaVectorStore`` over a plain
   ``get_or_create_collection``), and Chroma cannot change a collection's space. m3e-rag's scores and
   thresholds are cosine, so such a collection is refused unless ``copy_to`` names a new collection: its
   ids, texts, metadata and stored vectors (unchanged) are then copied, page by page, into a new cosine
   collection with the guard, and the original is left as it was.
4. **The model made these vectors.** Up to :data:`SAMPLE_SIZE` records spread evenly over the collection
   are embedded again and compared with their stored vectors: the same model gives a cosine of about 1.0
   (0.99+ even across backends and int8), another model's vectors live in another space (around 0; the
   MiniLM and e5 stand-ins of the tests: see ``tests/ingest/test_adopt.py``). The median must reach
   :data:`MIN_SAMPLE_COSINE`; the median, not the minimum, so a few records whose vector was made from a
   text the store does not hold verbatim cannot sink a good index. LlamaIndex embeds a node's metadata with
   its text (``file_path: ...`` lines, a blank line, then the text); that text is rebuilt from the node
   JSON LlamaIndex stores (``_node_content``) before comparing.

In place, only the collection's metadata changes (Chroma's ``modify``: the guard's keys added, the other
keys kept, except ``hnsw:space``, which Chroma refuses in ``modify`` and keeps in the collection's
configuration anyway); ids, texts, metadata and vectors are never rewritten. Last, the BM25 side is built
from the stored texts by :class:`~m3e_rag.index.sparse.sync.SparseSide`, as for an index whose BM25 folder
is missing, with ``progress("bm25", done, total)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m3e_rag.encode.protocol import TextEncoder
from m3e_rag.errors import InputError, ModelMismatchError, StoreError
from m3e_rag.index.boundary import store_boundary
from m3e_rag.index.chroma import LOCK_TIMEOUT_S, StoreRecord
from m3e_rag.index.connect import connect, folder_is_read_only
from m3e_rag.index.guard import META_PREFIX, expected_metadata, recorded_model
from m3e_rag.index.integrity import SQLITE_FILE, WRITE_LOCK_FILE, check_before_open
from m3e_rag.index.sparse.sync import SparseSide
from m3e_rag.ingest.index_handle import IndexHandle

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = [
    "AdoptProgress", "AdoptReport", "MIN_SAMPLE_COSINE", "SAMPLE_SIZE", "adopt_collection", "adopt_index",
    "embedded_text",
]

logger = logging.getLogger(__name__)

#: Records re-embedded to check the model: enough for a stable median, cheap even on a CPU (one batch).
SAMPLE_SIZE = 16
#: Least median cosine between re-embedded sampled texts and their stored vectors (see the module doc).
MIN_SAMPLE_COSINE = 0.95
#: Records read and written per page when copying (below Chroma's max batch and sqlite's variable limit).
COPY_PAGE = 1000
#: ``progress(stage, done, total)``: ``stage`` is ``"copy"`` (records copied) or ``"bm25"`` (texts indexed).
AdoptProgress = Callable[[str, int, int], None]

_SPACE_KEY = "hnsw:space"


@dataclass(frozen=True)
class AdoptReport:
    """What :func:`adopt_index` did.

    Attributes:
        collection: the collection m3e-rag opens now (``copied_to`` when copied, else the adopted one).
        source: the collection that was adopted (or copied from).
        location: the index folder or the Chroma server's address.
        records: records in the adopted collection (or copied).
        space: the source collection's distance space (``cosine``, ``l2`` or ``ip``).
        model: the model recorded by the guard.
        dim: the vectors' dimension.
        sample_size: records re-embedded to check the model.
        sample_cosine: median cosine between those and their stored vectors.
        bm25_built: whether the BM25 side was built (False when the index keeps none).
        copied_to: the new cosine collection, or None when adopted in place.
    """

    collection: str
    source: str
    location: str
    records: int
    space: str
    model: str
    dim: int
    sample_size: int
    sample_cosine: float
    bm25_built: bool
    copied_to: str | None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class _Source:
    """Where the collection lives and the client reaching it."""

    client: ClientAPI
    path: Path | None  # an embedded folder (None: a server or a given client)
    where: str


def adopt_collection(
    index: str | Path | None = None,
    *,
    chroma_url: str | None = None,
    collection: str,
    encoder: TextEncoder,
    chunk_tokens: int,
    overlap_tokens: int,
    copy_to: str | None = None,
    sparse: bool = True,
    progress: AdoptProgress | None = None,
    client: Any = None,
    settings: Any = None,
    headers: Mapping[str, str] | None = None,
) -> AdoptReport:
    """Adopt the collection ``collection`` of the folder ``index`` (or of the server ``chroma_url``).

    ``chunk_tokens`` / ``overlap_tokens`` are recorded as the index's chunker settings (for what m3e-rag
    ingests into it later). Everything else: see :func:`adopt_index`.
    """
    if index is None and chroma_url is None and client is None:
        raise InputError("adopt needs an index folder, a Chroma server address (chroma_url=...) or a client.")
    handle = IndexHandle(Path(index or ".").expanduser(), chroma_url, collection, encoder, chunk_tokens,
                         overlap_tokens, sparse, client=client, settings=settings, headers=headers)
    return adopt_index(handle, copy_to=copy_to, progress=progress)


def adopt_index(handle: IndexHandle, *, copy_to: str | None = None,
                progress: AdoptProgress | None = None) -> AdoptReport:
    """Check the handle's collection (see the module doc), record m3e-rag's guard on it, build its BM25 side.

    Args:
        handle: the index (folder or server, collection, encoder, chunk settings) of a pipeline.
        copy_to: name of a NEW collection to copy the records into (needed for an ``l2`` or ``ip``
            collection; allowed for a cosine one). The source collection is never changed then.
        progress: called as ``progress(stage, done, total)`` (see :data:`AdoptProgress`).

    Returns:
        An :class:`AdoptReport`.

    Raises:
        InputError: no such collection, an m3e-rag collection already, no records, a non-cosine space
            without ``copy_to``, or ``copy_to`` naming an existing collection.
        ModelMismatchError: the vectors' dimension is not the model's, or the model did not make them.
        StoreError: the folder holds no Chroma database or cannot be written.
    """
    encoder = handle.encoder
    src = _connect(handle)
    coll = _source_collection(src, handle.collection, handle.chroma_url is not None)
    if copy_to is not None:
        _check_copy_target(src, handle.collection, copy_to)
    meta = dict(coll.metadata or {})
    count = _count(coll, src.where)
    sample = _sample(coll, count, src.where)
    dim = len(sample[0][1])
    if dim != encoder.dim:
        raise ModelMismatchError(
            f"Collection {handle.collection!r} at {src.where} holds {dim}-d vectors, but model {encoder.model_name!r} "
            f"makes {encoder.dim}-d vectors: another model built it. Adopt it with the model that built it (--model)."
        )
    space = _space_of(coll, meta)
    if space != "cosine" and copy_to is None:
        raise InputError(
            f"Collection {handle.collection!r} at {src.where} uses Chroma's {space!r} distance"
            f"{' (the default when no hnsw:space is set)' if space == 'l2' and _SPACE_KEY not in meta else ''}; "
            "m3e-rag searches in cosine space only, and Chroma cannot change a collection's space. Copy it into a new "
            "cosine collection (ids, texts, metadata and the stored vectors, unchanged; this one is left as it is): "
            "add --copy-to NEW_NAME (Python: copy_to='NEW_NAME')."
        )
    cosine = _check_model(encoder, sample, handle.collection, src.where)
    if copy_to is not None:
        target = _copy(src, coll, count, handle, copy_to, meta, progress)
    else:
        _record_guard(src, handle)
        target = handle
    bm25 = _build_bm25(target, progress)
    logger.info("adopted collection %r at %s (%d records, %s space, model %s, median sample cosine %.4f)%s",
                handle.collection, src.where, count, space, encoder.model_name, cosine,
                f": copied to {copy_to!r}" if copy_to else "")
    return AdoptReport(
        collection=target.collection, source=handle.collection, location=src.where, records=count, space=space,
        model=encoder.model_name, dim=dim, sample_size=len(sample), sample_cosine=cosine, bm25_built=bm25,
        copied_to=copy_to,
    )


# ------------------------------------------------------------------------------------------ reading the source
def _connect(handle: IndexHandle) -> _Source:
    """The Chroma client of the handle's location; a folder must already hold a writable Chroma database."""
    options = handle.chroma_options  # the handle's connection options (client, settings, headers)
    given, url = options.get("client"), handle.chroma_url
    path = None if given is not None or url is not None else handle.index_path.expanduser().resolve()
    if path is not None:
        where = str(path)
        if not (path / SQLITE_FILE).is_file():
            raise StoreError(
                f"There is no Chroma database at {where} (no {SQLITE_FILE}); pass the folder the collection was "
                "written to (langchain_chroma's persist_directory, the path of LlamaIndex's chromadb.PersistentClient)."
            )
        if folder_is_read_only(path):
            raise StoreError(f"The index at {where} is read-only; adopting records m3e-rag's model in the collection: "
                             "copy the folder somewhere writable and adopt the copy.")
        check_before_open(path, handle.collection)  # a damaged database is refused, never opened
    else:
        where = url or "the given Chroma client"
    headers = options.get("headers")
    with store_boundary("open the index", where):
        client = connect(given, options.get("settings"), url, path, dict(headers) if headers else None)
    return _Source(client, path, where)


def _source_collection(src: _Source, name: str, server: bool) -> Collection:
    """The collection to adopt, refused when missing or already m3e-rag's."""
    from chromadb.errors import NotFoundError

    with store_boundary("open the collection", src.where):
        try:
            coll = src.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            names = sorted(c.name for c in src.client.list_collections())
            flag = "--chroma-url" if server else "--index"
            raise InputError(
                f"There is no collection {name!r} at {src.where} (collections there: {', '.join(names) or 'none'}); "
                f"check --collection and {flag}."
            ) from None
    meta = coll.metadata or {}
    if f"{META_PREFIX}model" in meta:
        model, dim = recorded_model(meta) or (meta.get(f"{META_PREFIX}model"), meta.get(f"{META_PREFIX}dim"))
        raise InputError(
            f"Collection {name!r} at {src.where} is already an m3e-rag collection (built with model {model!r}, "
            f"{dim}-d): there is nothing to adopt; open it as it is, with --model {model}."
        )
    return coll


def _count(coll: Collection, where: str) -> int:
    with store_boundary("count records", where):
        count = int(coll.count())
    if count == 0:
        raise InputError(
            f"Collection {coll.name!r} at {where} holds no records: there is nothing to adopt; ingest with m3e-rag "
            "into a new collection name instead (or delete this empty one)."
        )
    return count


def _space_of(coll: Collection, meta: Mapping[str, Any]) -> str:
    """The collection's distance space: Chroma 1.x keeps it in the configuration (``hnsw`` or ``spann``).

    The ``hnsw:space`` metadata key is how it was asked for (and what older Chroma read); without either,
    Chroma's default is ``l2``.
    """
    config = coll.configuration or {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space")  # type: ignore[attr-defined]
        if space:
            return str(space)
    return str(meta.get(_SPACE_KEY) or "l2")


def _sample(coll: Collection, count: int, where: str) -> list[tuple[str, np.ndarray]]:
    """Up to :data:`SAMPLE_SIZE` (text the vector was made from, stored vector), spread evenly over the collection.

    Records with no text or a zero vector are skipped: neither says anything about the model.
    """
    n = min(SAMPLE_SIZE, count)
    offsets = sorted({i * count // n for i in range(n)})
    out: list[tuple[str, np.ndarray]] = []
    dims: set[int] = set()
    for offset in offsets:
        with store_boundary("read records", where):
            res = coll.get(limit=1, offset=offset, include=["documents", "metadatas", "embeddings"])
        embeddings = res.get("embeddings")
        if not res["ids"] or embeddings is None or len(embeddings) == 0:
            continue
        vector = np.asarray(embeddings[0], dtype=np.float32)
        dims.add(int(vector.shape[-1]))
        documents, metadatas = res.get("documents") or [], res.get("metadatas") or []
        text = (documents[0] if documents else "") or ""
        if text.strip() and float(np.linalg.norm(vector)) > 0:
            out.append((embedded_text(text, metadatas[0] if metadatas else None), vector))
    if not out:
        raise InputError(
            f"None of {len(offsets)} records sampled from collection {coll.name!r} at {where} has both a text and "
            "a vector: the model cannot be checked and BM25 would have nothing to index; re-ingest the texts with "
            "m3e-rag."
        )
    return out


def embedded_text(document: str, metadata: Mapping[str, Any] | None) -> str:
    """The text a record's vector was made from: the document, or for a LlamaIndex node its embed text.

    LlamaIndex embeds ``text_template.format(metadata_str=..., content=text)``, where ``metadata_str`` joins
    ``metadata_template`` over the metadata not in ``excluded_embed_metadata_keys`` (``TextNode.get_content``
    with ``MetadataMode.EMBED``); every piece is in the node JSON that ``ChromaVectorStore`` stores under
    ``_node_content``. The engine imports no framework, so it is rebuilt here from that JSON.
    """
    import json

    raw = (metadata or {}).get("_node_content")
    try:
        node = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        node = None
    if not isinstance(node, dict) or not isinstance(node.get("metadata"), dict):
        return document
    excluded = set(node.get("excluded_embed_metadata_keys") or ())
    template = str(node.get("metadata_template") or "{key}: {value}")
    separator = str(node.get("metadata_separator", node.get("metadata_seperator", "\n")))
    try:
        meta_str = separator.join(template.format(key=k, value=str(v)) for k, v in node["metadata"].items()
                                  if k not in excluded).strip()
        if not meta_str:
            return document
        return str(node.get("text_template") or "{metadata_str}\n\n{content}").format(
            metadata_str=meta_str, content=document).strip()
    except (KeyError, IndexError, ValueError):  # a template of another shape: compare with the text alone
        return document


def _check_model(encoder: TextEncoder, sample: list[tuple[str, np.ndarray]], name: str, where: str) -> float:
    """Median cosine between the sampled texts embedded now and their stored vectors; refused when too low."""
    fresh = np.asarray(encoder.encode_documents([text for text, _ in sample]), dtype=np.float32)
    stored = np.stack([vector for _, vector in sample])
    norms = np.maximum(np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1), 1e-12)
    cosine = float(np.median(np.sum(fresh * stored, axis=1) / norms))
    if not cosine >= MIN_SAMPLE_COSINE:
        raise ModelMismatchError(
            f"Model {encoder.model_name!r} did not make the vectors of collection {name!r} at {where}: embedding "
            f"{len(sample)} of its texts again gives a median cosine of {cosine:.3f} with their stored vectors (the "
            f"model that made them gives about 1.0; adopting needs {MIN_SAMPLE_COSINE}). A different model built this "
            "index: adopt it with that model (--model), or ingest the texts with m3e-rag into a new collection."
        )
    return cosine


# ------------------------------------------------------------------------------------------ writing
@contextmanager
def _folder_lock(path: Path | None) -> Iterator[None]:
    """The folder's write lock (ChromaStore's): two processes writing one Chroma folder corrupt it."""
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(path / WRITE_LOCK_FILE), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout as exc:
        raise StoreError(f"Another process has held the write lock on {path} for {LOCK_TIMEOUT_S:.0f} s; wait for "
                         "it to finish, or remove the stale lock file if no process is writing.") from exc


def _record_guard(src: _Source, handle: IndexHandle) -> None:
    """Add the guard's keys to the collection's metadata (records untouched), checking nobody did meanwhile."""
    encoder = handle.encoder
    chunker = handle.chunker.settings()  # the settings later ingests chunk with (loads the tokenizer first)
    with _folder_lock(src.path), store_boundary("record the model in the collection", src.where):
        fresh = src.client.get_collection(handle.collection, embedding_function=None)
        current = dict(fresh.metadata or {})
        if f"{META_PREFIX}model" in current:
            raise InputError(f"Collection {handle.collection!r} at {src.where} was adopted by another process "
                             "meanwhile; open it as it is.")
        kept = {k: v for k, v in current.items() if k != _SPACE_KEY}  # Chroma refuses the key in modify()
        fresh.modify(metadata=expected_metadata(kept, encoder.model_name, encoder.dim, encoder.normalize, chunker))


def _check_copy_target(src: _Source, source: str, copy_to: str) -> None:
    """Refuse a ``copy_to`` that is not a new collection (checked before anything slow is done)."""
    from chromadb.errors import NotFoundError

    if copy_to == source:
        raise InputError(f"--copy-to must name a new collection, not {copy_to!r} itself.")
    with store_boundary("look for the collection", src.where):
        try:
            src.client.get_collection(copy_to, embedding_function=None)
            exists = True
        except (NotFoundError, ValueError):
            exists = False
    if exists:
        raise InputError(f"Collection {copy_to!r} already exists at {src.where}; --copy-to needs a new name.")


def _copy(src: _Source, coll: Collection, count: int, handle: IndexHandle, copy_to: str,
          meta: Mapping[str, Any], progress: AdoptProgress | None) -> IndexHandle:
    """Copy every record into the new cosine collection ``copy_to`` (vectors as stored); returns its handle.

    The new collection is dropped again if the copy fails midway, so a rerun starts clean.
    """
    options = handle.chroma_options  # the same connection options as the source's
    scalar_meta = {k: v for k, v in meta.items()
                   if not k.startswith(("hnsw:", META_PREFIX)) and isinstance(v, (str, int, float, bool))}
    target = IndexHandle(handle.index_path, handle.chroma_url, copy_to, handle.encoder, handle.chunk_tokens,
                         handle.overlap_tokens, handle.use_sparse, client=options.get("client"),
                         settings=options.get("settings"), headers=options.get("headers"),
                         collection_metadata=scalar_meta or None)
    try:
        step = min(COPY_PAGE, target.store.max_batch_size)
        for offset in range(0, count, step):
            with store_boundary("read records", src.where):
                page = coll.get(limit=step, offset=offset, include=["documents", "metadatas", "embeddings"])
            ids, vectors = page["ids"], page["embeddings"]  # vectors: one float32 array, as stored
            none: list[Any] = [None] * len(ids)
            texts: list[Any] = list(page["documents"] or none)
            metas: list[Any] = list(page["metadatas"] or none)
            records = [
                StoreRecord(str(i), d or "", np.asarray(e, dtype=np.float32), dict(m or {}))
                for i, d, e, m in zip(ids, texts, vectors if vectors is not None else [], metas, strict=True)
            ]
            with target.writing():
                target.store.upsert(records)
                target.sparse_upsert([r.id for r in records], [r.text for r in records])
            if progress is not None:
                progress("copy", min(offset + step, count), count)
        target.save_sparse()
    except BaseException:
        logger.warning("copying %r to %r failed: dropping the partial copy %r", handle.collection, copy_to, copy_to)
        target.drop()
        raise
    return target


def _build_bm25(handle: IndexHandle, progress: AdoptProgress | None) -> bool:
    """Build (or catch up) the BM25 side of the adopted collection from its stored texts."""
    if not handle.use_sparse:
        return False
    store = handle.store  # opens now: the guard is recorded
    side = SparseSide(store, handle.sparse_path())
    step = None if progress is None else (lambda done, total: progress("bm25", done, total))
    with side.locked():
        store.refresh_if_moved()
        side.open(progress=step)
    return True
