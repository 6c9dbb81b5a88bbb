"""Chroma collections written by the real frameworks (langchain_chroma.Chroma, LlamaIndex's ChromaVectorStore).

For the ``m3e-rag adopt`` tests: a small bilingual corpus embedded with the bilingual stand-in through the
framework's own store, and a raw snapshot of a collection (ids, texts, metadata, vector bytes) to prove
that adopting rewrote none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings
from langchain_core.embeddings import Embeddings

from m3e_rag.encode.encoder import M3EEncoder

#: (source, text): one topic each, so every query below has one right answer.
CORPUS = [
    ("panda.md", "大熊猫的食物几乎全部是竹子，一只成年大熊猫每天要吃十几公斤竹笋和竹叶。"),
    ("wall.md", "长城是中国古代的军事防御工程，全长两万多公里。"),
    ("tower.txt", "The Eiffel Tower in Paris was finished in 1889 for the World's Fair."),
    ("tea.txt", "绿茶是不发酵茶，西湖龙井是著名的绿茶。"),
    ("python.md", "Python is a programming language popular in data science and machine learning."),
    ("shanghai.md", "上海是中国的经济中心之一，人口超过两千万。"),
]
#: (query, the source that must come first) in dense, sparse and hybrid search alike.
QUERIES = [("大熊猫吃竹子吗？", "panda.md"), ("When was the Eiffel Tower finished?", "tower.txt")]
LC_COLLECTION = "lc_docs"
LI_COLLECTION = "li_docs"


class EncoderEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` over an M3EEncoder: what a user's HuggingFaceEmbeddings would have done."""

    def __init__(self, encoder: M3EEncoder) -> None:
        self.encoder = encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.encoder.encode_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return list(map(float, self.encoder.encode_query(text)))


def langchain_folder(folder: Path, encoder: M3EEncoder, *, cosine: bool, name: str = LC_COLLECTION) -> Path:
    """A folder written by ``langchain_chroma.Chroma``: cosine (as documented) or Chroma's default l2."""
    from langchain_chroma import Chroma

    metadata = {"hnsw:space": "cosine", "owner": "team-a"} if cosine else None
    store = Chroma(collection_name=name, embedding_function=EncoderEmbeddings(encoder), persist_directory=str(folder),
                   collection_metadata=metadata, client_settings=Settings(anonymized_telemetry=False))
    store.add_texts([text for _, text in CORPUS], metadatas=[{"source": src} for src, _ in CORPUS],
                    ids=[f"lc-{i}" for i in range(len(CORPUS))])
    return folder


def llamaindex_folder(folder: Path, model_path: Path) -> Path:
    """A folder written by LlamaIndex's ``ChromaVectorStore`` (cosine), nodes embedded with their file_path."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.m3e import M3EEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection(LI_COLLECTION, metadata={"hnsw:space": "cosine"})
    nodes = [
        TextNode(id_=f"li-{i}", text=text, metadata={"file_path": f"/data/docs/{src}", "file_name": src},
                 excluded_embed_metadata_keys=["file_name"])
        for i, (src, text) in enumerate(CORPUS)
    ]
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    VectorStoreIndex(nodes, storage_context=storage, embed_model=M3EEmbedding(model_name=str(model_path)))
    return folder


def snapshot(location: Path | str, name: str) -> dict[str, Any]:
    """Every record of a collection as stored (vectors as raw float32 bytes), its metadata and its space."""
    if isinstance(location, Path):
        client: Any = chromadb.PersistentClient(path=str(location), settings=Settings(anonymized_telemetry=False))
    else:
        host, port = location.rsplit("//", 1)[1].split(":")
        client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    collection = client.get_collection(name, embedding_function=None)
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    order = np.argsort(got["ids"])
    return {
        "ids": [got["ids"][i] for i in order],
        "documents": [got["documents"][i] for i in order],
        "metadatas": [got["metadatas"][i] for i in order],
        "vectors": [np.asarray(got["embeddings"][i], dtype=np.float32).tobytes() for i in order],
        "metadata": dict(collection.metadata or {}),
        "space": collection.configuration["hnsw"]["space"],
    }


def same_records(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two snapshots hold the same ids, texts, metadata and vector bytes."""
    return all(a[key] == b[key] for key in ("ids", "documents", "metadatas", "vectors"))
