"""LlamaIndex nodes <-> m3e-rag records, laid out so both sides read the same index.

A node written through LlamaIndex is stored as one m3e-rag record:

- the text is the record's text (Chroma document), so BM25 and ``m3e-rag search`` see it;
- metadata holds the node's own metadata, plus LlamaIndex's ``_node_content`` / ``_node_type``
  (the node as JSON, text removed, like ``llama-index-vector-stores-chroma``) and its
  ``document_id`` / ``doc_id`` / ``ref_doc_id``;
- m3e-rag's keys are added where the node does not set them: ``source`` (the node's
  ``file_path``, else its ref_doc_id, else its id), ``start`` / ``end`` (its character span).

``_``-prefixed keys never reach m3e-rag's own results (``strip_private``). A record written by
``m3e-rag ingest`` has no ``_node_content``: it becomes a ``TextNode`` whose ref_doc_id (and SOURCE
relationship) is its ``source`` and whose span is its ``start`` / ``end``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from m3e_rag.errors import InputError
from m3e_rag.types import RetrievedChunk

__all__ = ["node_to_record", "page_records", "record_to_node", "records_to_nodes", "BOOKKEEPING_KEYS",
           "NODE_CONTENT_KEY"]

NODE_CONTENT_KEY = "_node_content"
#: m3e-rag's own bookkeeping keys: kept on nodes but out of the text an LLM or the embedder sees.
BOOKKEEPING_KEYS = (
    "start", "end", "chunk_index", "n_tokens", "encoding", "dense_score", "sparse_score", "retrieval_score",
    "document_id", "doc_id", "ref_doc_id",
)


def node_to_record(node: BaseNode) -> tuple[str, str, dict[str, Any]]:
    """Return (id, text, metadata) for storing ``node`` (flat metadata only, like Chroma's own store)."""
    if not isinstance(node, TextNode):
        raise InputError(
            f"M3EVectorStore stores text nodes; got a {type(node).__name__}. Convert it to a TextNode first."
        )
    try:
        # Lists of scalars are allowed (Chroma 1.x stores them; CONTAINS/ANY/ALL filter on them); ChromaStore
        # refuses dicts and other objects with the key named.
        meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    except ValueError as exc:
        raise InputError(
            f"Node {node.node_id!r} has metadata Chroma cannot store ({exc}); values must be str, int, float or "
            "bool: flatten nested values or serialize them yourself."
        ) from exc
    ref = node.ref_doc_id
    meta.setdefault("source", str(node.metadata.get("file_path") or ref or node.node_id))
    if node.start_char_idx is not None:
        meta.setdefault("start", int(node.start_char_idx))
    if node.end_char_idx is not None:
        meta.setdefault("end", int(node.end_char_idx))
    return node.node_id, node.get_content(metadata_mode=MetadataMode.NONE), meta


def record_to_node(record: RetrievedChunk, raw_metadata: dict[str, Any] | None = None) -> TextNode:
    """Rebuild the node of a stored record (``raw_metadata``: its metadata including private keys)."""
    meta = dict(raw_metadata if raw_metadata is not None else record.metadata)
    if NODE_CONTENT_KEY in meta:
        node = metadata_dict_to_node(meta, text=record.text)
        if isinstance(node, TextNode):
            return node
    public = {k: v for k, v in record.metadata.items() if not k.startswith("_")}
    source = public.get("source")
    ref = public.get("doc_id") or source
    relationships = {}
    if ref is not None:
        relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(ref))
    start, end = public.get("start"), public.get("end")
    hidden = [k for k in BOOKKEEPING_KEYS if k in public]
    return TextNode(
        id_=record.id,
        text=record.text,
        metadata=public,
        relationships=relationships,
        start_char_idx=start if isinstance(start, int) and not isinstance(start, bool) else None,
        end_char_idx=end if isinstance(end, int) and not isinstance(end, bool) else None,
        excluded_embed_metadata_keys=hidden,
        excluded_llm_metadata_keys=hidden,
    )


def records_to_nodes(results: Sequence[RetrievedChunk], raw: dict[str, dict[str, Any]]) -> list[TextNode]:
    """Nodes for search results, ``raw`` mapping id -> full stored metadata (private keys included)."""
    return [record_to_node(r, raw.get(r.id)) for r in results]


def page_records(page: Mapping[str, Any]) -> list[RetrievedChunk]:
    """Records of one page of Chroma's ``get`` (``ChromaStore.page``), full metadata kept (score 0.0)."""
    ids = [str(i) for i in page["ids"]]
    texts = page.get("documents") or [""] * len(ids)
    metas = page.get("metadatas") or [None] * len(ids)
    return [RetrievedChunk(i, t or "", 0.0, dict(m or {})) for i, t, m in zip(ids, texts, metas, strict=True)]
