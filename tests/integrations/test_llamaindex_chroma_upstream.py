"""llama-index-vector-stores-chroma's own tests, run against M3EVectorStore (issue 20).

Ported from run-llama/llama_index, ``llama-index-integrations/vector_stores/llama-index-vector-stores-chroma/tests/``
(the 0.6.0 sdist ships no tests): ``test_chromadb.py`` (commit bdc56a68, the version whose calls match
0.6.0's signatures), ``test_mmr.py`` (0a6ebbd5), ``test_vector_memory_chroma.py`` (b0f9e217),
``test_vector_stores_chroma.py`` (bed9f497). Against ``ChromaVectorStore`` 0.6.0 itself, with
llama-index-core 0.14.25 and chromadb 1.5.9, they give 14 passed, 1 skipped (no server on
localhost:8000), 1 failed (the VectorMemory test: see its mark).

The smallest mechanical changes, and nothing else (test bodies are upstream's):

- ``ChromaVectorStore`` -> ``M3EVectorStore``; the store gets ``embed_model=emb``, the tiny M3E
  stand-in (2 layers, 64-d, random weights), and ``MockEmbedding(embed_dim=3)`` becomes ``emb``;
- 3-d vectors are zero-padded to 64 dimensions (``pad``: cosines unchanged);
- a store over a bare Chroma collection (``chroma_client.get_or_create_collection`` then
  ``ChromaVectorStore(chroma_collection=...)`` / ``from_collection``, or ``collection.add``) becomes
  ``M3EVectorStore(client=chroma_client, collection_name=...)``, and ``collection.add`` its raw
  twin ``store.pipeline.add_texts`` (same ids, texts, metadatas, vectors) -- except in the tests whose
  subject is wrapping a bare collection, which keep it and are marked;
- the HTTP test uses the ``chroma_server`` fixture (a real server on a free 127.0.0.1 port) instead of
  probing localhost:8000 at import and skipping; ``persist_dir="./data"`` becomes a temporary folder.

Every test that does not pass is ``xfail(strict=True, raises=<the error>)`` with its reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.core.memory import VectorMemory
from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from llama_index.embeddings.m3e import M3EEmbedding
from llama_index.vector_stores.m3e import M3EVectorStore

from m3e_rag.errors import InputError

DIM = 64
OWN_COLLECTION = (
    "documented difference: M3EVectorStore opens its own collection (cosine space, the model recorded and "
    "checked, the write lock, the BM25 side), so it refuses to wrap a bare chromadb Collection "
    "(chroma_collection= / from_collection()) with an InputError naming client= / persist_dir="
)
PRIVATE = (
    "reaches into ChromaVectorStore's private _query()/_get() over a stand-in Chroma collection object; "
    "M3EVectorStore has neither and refuses chroma_collection= (" + OWN_COLLECTION + ")"
)


def pad(v: list[float]) -> list[float]:
    """A 3-d test vector as a 64-d one (zeros appended: every cosine stays the same)."""
    return list(v) + [0.0] * (DIM - len(v))


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbedding:
    return M3EEmbedding(model_name=str(tiny_model_path))


# ================================================================================ test_chromadb.py
COLLECTION_NAME = "llama_collection"


@pytest.mark.server
def test_instance_creation_from_http_params(chroma_server: str, emb: M3EEmbedding) -> None:
    url = urlparse(chroma_server)
    store = M3EVectorStore.from_params(
        host=url.hostname,
        port=url.port,
        collection_name=COLLECTION_NAME,
        collection_kwargs={},
        embed_model=emb,
    )
    assert isinstance(store, M3EVectorStore)


@pytest.mark.xfail(strict=True, raises=InputError, reason=OWN_COLLECTION)
def test_instance_creation_from_collection() -> None:
    chroma_client = chromadb.Client()
    collection = chroma_client.get_or_create_collection(COLLECTION_NAME)
    store = M3EVectorStore.from_collection(collection)
    assert isinstance(store, M3EVectorStore)


def test_instance_creation_from_persist_dir(tmp_path: Path, emb: M3EEmbedding) -> None:
    store = M3EVectorStore.from_params(
        persist_dir=str(tmp_path / "data"),
        collection_name=COLLECTION_NAME,
        collection_kwargs={},
        embed_model=emb,
    )
    assert isinstance(store, M3EVectorStore)


@pytest.fixture()
def vector_store(emb: M3EEmbedding) -> Generator[M3EVectorStore, None, None]:
    chroma_client = chromadb.Client()
    yield M3EVectorStore(client=chroma_client, collection_name=COLLECTION_NAME, embed_model=emb)
    chroma_client.delete_collection(name=COLLECTION_NAME)


@pytest.fixture(scope="session")
def node_embeddings() -> list[TextNode]:
    return [
        TextNode(
            text="lorem ipsum",
            id_="c330d77f-90bd-4c51-9ed2-57d8d693b3b0",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-0")},
            metadata={"author": "Stephen King", "theme": "Friendship"},
            embedding=pad([1.0, 0.0, 0.0]),
        ),
        TextNode(
            text="lorem ipsum",
            id_="c3d1e1dd-8fb4-4b8f-b7ea-7fa96038d39d",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-1")},
            metadata={"director": "Francis Ford Coppola", "theme": "Mafia"},
            embedding=pad([0.0, 1.0, 0.0]),
        ),
        TextNode(
            text="lorem ipsum",
            id_="c3ew11cd-8fb4-4b8f-b7ea-7fa96038d39d",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-2")},
            metadata={"director": "Christopher Nolan"},
            embedding=pad([0.0, 0.0, 1.0]),
        ),
        TextNode(
            text="I was taught that the way of progress was neither swift nor easy.",
            id_="0b31ae71-b797-4e88-8495-031371a7752e",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="text-3")},
            metadata={"author": "Marie Curie"},
            embedding=pad([0.0, 0.0, 0.9]),
        ),
        TextNode(
            text=("The important thing is not to stop questioning." + " Curiosity has its own reason for existing."),
            id_="bd2e080b-159a-4030-acc3-d98afd2ba49b",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="text-4")},
            metadata={"author": "Albert Einstein"},
            embedding=pad([0.0, 0.0, 0.5]),
        ),
        TextNode(
            text=("I am no bird; and no net ensnares me;" + " I am a free human being with an independent will."),
            id_="f658de3b-8cef-4d1c-8bed-9a263c907251",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="text-5")},
            metadata={"author": "Charlotte Bronte"},
            embedding=pad([0.0, 0.0, 0.3]),
        ),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("use_async", [True, False])
async def test_add_to_chromadb_and_query(
    vector_store: M3EVectorStore, node_embeddings: list[TextNode], use_async: bool
) -> None:
    if use_async:
        await vector_store.async_add(node_embeddings)
        res = await vector_store.aquery(VectorStoreQuery(query_embedding=pad([1.0, 0.0, 0.0]), similarity_top_k=1))
    else:
        vector_store.add(node_embeddings)
        res = vector_store.query(VectorStoreQuery(query_embedding=pad([1.0, 0.0, 0.0]), similarity_top_k=1))
    assert res.nodes
    assert res.nodes[0].get_content() == "lorem ipsum"


@pytest.mark.asyncio
@pytest.mark.parametrize("use_async", [True, False])
async def test_add_to_chromadb_and_query_by_metafilters_only(
    vector_store: M3EVectorStore, node_embeddings: list[TextNode], use_async: bool
) -> None:
    filters = MetadataFilters(
        filters=[MetadataFilter(key="author", value="Marie Curie", operator=FilterOperator.EQ)],
        condition=FilterCondition.AND,
    )

    if use_async:
        await vector_store.async_add(node_embeddings)
        res = await vector_store.aquery(VectorStoreQuery(filters=filters, similarity_top_k=1))
    else:
        vector_store.add(node_embeddings)
        res = vector_store.query(VectorStoreQuery(filters=filters, similarity_top_k=1))

    assert res.nodes[0].get_content() == "I was taught that the way of progress was neither swift nor easy."


def test_get_nodes(vector_store: M3EVectorStore, node_embeddings: list[TextNode]) -> None:
    vector_store.add(node_embeddings)
    res = vector_store.get_nodes(
        node_ids=[
            "c330d77f-90bd-4c51-9ed2-57d8d693b3b0",
            "c3d1e1dd-8fb4-4b8f-b7ea-7fa96038d39d",
            "c3ew11cd-8fb4-4b8f-b7ea-7fa96038d39d",
        ]
    )
    assert len(res) == 3
    assert res[0].get_content() == "lorem ipsum"
    assert res[1].get_content() == "lorem ipsum"
    assert res[2].get_content() == "lorem ipsum"


def test_delete_nodes(vector_store: M3EVectorStore, node_embeddings: list[TextNode]) -> None:
    vector_store.add(node_embeddings)
    vector_store.delete_nodes(node_ids=["c330d77f-90bd-4c51-9ed2-57d8d693b3b0", "c3d1e1dd-8fb4-4b8f-b7ea-7fa96038d39d"])
    res = vector_store.get_nodes(
        node_ids=[
            "c330d77f-90bd-4c51-9ed2-57d8d693b3b0",
            "c3d1e1dd-8fb4-4b8f-b7ea-7fa96038d39d",
            "c3ew11cd-8fb4-4b8f-b7ea-7fa96038d39d",
        ]
    )
    assert len(res) == 1
    assert res[0].get_content() == "lorem ipsum"
    assert res[0].id_ == "c3ew11cd-8fb4-4b8f-b7ea-7fa96038d39d"


def test_clear(vector_store: M3EVectorStore, node_embeddings: list[TextNode]) -> None:
    vector_store.add(node_embeddings)
    vector_store.clear()
    res = vector_store.get_nodes(
        node_ids=[
            "c330d77f-90bd-4c51-9ed2-57d8d693b3b0",
            "c3d1e1dd-8fb4-4b8f-b7ea-7fa96038d39d",
            "c3ew11cd-8fb4-4b8f-b7ea-7fa96038d39d",
        ]
    )
    assert len(res) == 0


# ================================================================================ test_mmr.py
def _build_simple_collection(emb: M3EEmbedding) -> M3EVectorStore:
    client = chromadb.EphemeralClient()
    name = f"chroma_mmr_test_{uuid.uuid4().hex[:8]}"
    col = M3EVectorStore(client=client, collection_name=name, embed_model=emb)

    embeddings = [
        [1.0, 0.0, 0.0],
        [0.9, 0.1, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.9, 0.1],
        [0.0, 0.0, 1.0],
    ]
    ids = [f"id_{i}" for i in range(len(embeddings))]
    documents = [f"doc_{i}" for i in range(len(embeddings))]
    metadatas = [{"label": f"m{i}"} for i in range(len(embeddings))]  # non-empty

    col.pipeline.add_texts(documents, metadatas=metadatas, ids=ids, embeddings=np.array([pad(e) for e in embeddings]))
    return col


def test_chroma_mmr_happy_path_returns_k_results(emb: M3EEmbedding) -> None:
    col = _build_simple_collection(emb)
    vs = col

    query = VectorStoreQuery(query_embedding=pad([1.0, 0.0, 0.0]), similarity_top_k=2, mode=VectorStoreQueryMode.MMR)

    # Should not raise and should return exactly top_k results
    res = vs.query(query, mmr_threshold=0.5)

    # Either nodes or ids must be populated
    if res.ids is not None:
        assert len(res.ids) == 2
    elif res.nodes is not None:
        assert len(res.nodes) == 2
    else:
        pytest.fail("VectorStoreQueryResult must contain ids or nodes")


def test_chroma_mmr_conflicting_prefetch_params_raises(emb: M3EEmbedding) -> None:
    col = _build_simple_collection(emb)
    vs = col

    query = VectorStoreQuery(query_embedding=pad([1.0, 0.0, 0.0]), similarity_top_k=2, mode=VectorStoreQueryMode.MMR)

    with pytest.raises(ValueError):
        vs.query(query, mmr_threshold=0.5, mmr_prefetch_k=16, mmr_prefetch_factor=2.0)


# ================================================================================ test_vector_memory_chroma.py
def _node_to_chroma_metadata(node: TextNode) -> dict[str, Any]:
    """Chroma-safe metadata preserving the full node in _node_content (upstream's helper, unchanged)."""
    node_dict = node.model_dump(mode="json")
    node_dict["text"] = ""
    node_dict["embedding"] = None

    return {
        "_node_content": json.dumps(node_dict, ensure_ascii=False),
        "_node_type": node.class_name(),
        "document_id": node.ref_doc_id or "None",
        "doc_id": node.ref_doc_id or "None",
        "ref_doc_id": node.ref_doc_id or "None",
    }


@pytest.mark.xfail(
    strict=True,
    raises=KeyError,
    reason="fails with ChromaVectorStore 0.6.0 itself on llama-index-core 0.14.25 (measured): VectorMemory.get "
    "reads node.metadata['sub_dicts'] of every retrieved node and raises KeyError for the document node; the "
    "test was written for a later llama-index-core that skips such nodes (not a difference of the store)",
)
def test_vector_memory_get_ignores_document_nodes_without_sub_dicts(emb: M3EEmbedding) -> None:
    chroma_client = chromadb.EphemeralClient()
    collection_name = f"vector-memory-{uuid.uuid4()}"

    vector_store = M3EVectorStore(client=chroma_client, collection_name=collection_name, embed_model=emb)
    embed_model = emb

    doc_node = TextNode(
        id_="doc-node", text="normal document chunk", metadata={"source": "doc.txt"}, embedding=pad([0.0, 0.0, 1.0])
    )

    chat_msg = ChatMessage.from_str("hello from chat", "user")
    chat_node = TextNode(
        id_="chat-node",
        text="hello from chat",
        metadata={"sub_dicts": [chat_msg.model_dump()]},
        embedding=pad([0.0, 1.0, 0.0]),
    )

    vector_store.pipeline.add_texts(
        [doc_node.text, chat_node.text],
        ids=[doc_node.node_id, chat_node.node_id],
        embeddings=[doc_node.get_embedding(), chat_node.get_embedding()],
        metadatas=[_node_to_chroma_metadata(doc_node), _node_to_chroma_metadata(chat_node)],
    )

    mem = VectorMemory.from_defaults(
        vector_store=vector_store, embed_model=embed_model, retriever_kwargs={"similarity_top_k": 2}
    )

    # Should not raise KeyError even if a retrieved node lacks `sub_dicts`.
    result = mem.get("any query")

    assert len(result) == 1
    assert result[0].content == "hello from chat"


# ================================================================================ test_vector_stores_chroma.py
def test_class() -> None:
    names_of_base_classes = [b.__name__ for b in M3EVectorStore.__mro__]
    assert BasePydanticVectorStore.__name__ in names_of_base_classes


@dataclass
class _FakeChromaCollection:
    query_payload: dict[str, Any] | None = None
    get_payload: dict[str, Any] | None = None

    def query(self, **kwargs: Any) -> dict[str, Any]:
        if self.query_payload is None:
            raise AssertionError("query_payload not provided")
        return self.query_payload

    def get(self, **kwargs: Any) -> dict[str, Any]:
        if self.get_payload is None:
            raise AssertionError("get_payload not provided")
        return self.get_payload


def _build_metadata(node: ImageNode) -> dict[str, Any]:
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    # Mimic ChromaVectorStore.add: replace None values with empty strings
    for key, value in list(metadata.items()):
        if value is None:
            metadata[key] = ""
    return metadata


@pytest.mark.xfail(strict=True, raises=InputError, reason=PRIVATE)
def test_query_rehydrates_image_nodes_with_missing_documents() -> None:
    node = ImageNode(text="", image_url="http://example.com/image.png", id_="image-node-id", embedding=[0.1, 0.2, 0.3])
    metadata = _build_metadata(node)
    fake_collection = _FakeChromaCollection(
        query_payload={
            "ids": [[node.node_id]],
            "documents": [[None]],
            "metadatas": [[metadata]],
            "distances": [[0.0]],
        }
    )
    store = M3EVectorStore(chroma_collection=fake_collection)

    result = store._query(query_embeddings=[0.1, 0.2, 0.3], n_results=1, where={})

    assert result.nodes is not None
    assert isinstance(result.nodes[0], ImageNode)
    assert result.nodes[0].image_url == node.image_url


@pytest.mark.xfail(strict=True, raises=InputError, reason=PRIVATE)
def test_get_handles_missing_document_text() -> None:
    node = ImageNode(text="", image_url="http://example.com/image.png", id_="image-node-id", embedding=[0.1, 0.2, 0.3])
    metadata = _build_metadata(node)
    fake_collection = _FakeChromaCollection(
        get_payload={"ids": [node.node_id], "documents": [None], "metadatas": [metadata]}
    )
    store = M3EVectorStore(chroma_collection=fake_collection)

    result = store._get(limit=1, where={})

    assert result.nodes is not None
    assert isinstance(result.nodes[0], ImageNode)
    assert result.nodes[0].image_url == node.image_url
