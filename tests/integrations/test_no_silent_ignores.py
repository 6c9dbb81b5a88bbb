"""No silent ignores: every adapter constructor and call refuses an unknown keyword by name.

Each case builds or calls one public entry point of an adapter with the keyword ``bogus_option``
and expects an error whose message names it (and, where the entry point takes ``**kwargs``, lists
the accepted names). Entry points with a fixed Python signature refuse it through Python itself
(TypeError naming the keyword), which is just as loud.

LangChain cases are in ``LANGCHAIN_CASES``; LlamaIndex cases go in ``LLAMAINDEX_CASES`` (same shape).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BOGUS = {"bogus_option": 1}

#: (case id, call(env) -> anything, whether the message must also list the accepted names)
Case = tuple[str, Callable[[dict[str, Any]], Any], bool]


@pytest.fixture(scope="module")
def env(tiny_model_path: Path) -> dict[str, Any]:
    """Shared, cheap objects for the cases: embeddings, an in-memory store with three texts, a splitter."""
    from chromadb.api.client import SharedSystemClient

    from langchain_m3e import M3EEmbeddings, M3ERetriever, M3ETextSplitter, M3EVectorStore

    SharedSystemClient.clear_system_cache()
    emb = M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})
    store = M3EVectorStore(embedding_function=emb, collection_name="no_silent_ignores")
    store.add_texts(["大熊猫吃竹子。", "长城很长。", "西湖龙井。"], ids=["a", "b", "c"])
    return {
        "path": str(tiny_model_path),
        "emb": emb,
        "store": store,
        "vec": emb.embed_query("熊猫"),
        "retriever": M3ERetriever(vectorstore=store, k=2),
        "splitter": M3ETextSplitter(chunk_size=32, chunk_overlap=4, embeddings=emb),
        "M3EEmbeddings": M3EEmbeddings,
        "M3EVectorStore": M3EVectorStore,
        "M3ERetriever": M3ERetriever,
        "M3ETextSplitter": M3ETextSplitter,
    }


def _run(result: Any) -> Any:
    return asyncio.run(result) if inspect.iscoroutine(result) else result


LANGCHAIN_CASES: list[Case] = [
    # constructors
    ("M3EEmbeddings()", lambda e: e["M3EEmbeddings"](model_name=e["path"], **BOGUS), True),
    ("M3EEmbeddings(model_kwargs=)", lambda e: e["M3EEmbeddings"](model_name=e["path"], model_kwargs=BOGUS), True),
    ("M3EEmbeddings(encode_kwargs=)", lambda e: e["M3EEmbeddings"](model_name=e["path"], encode_kwargs=BOGUS), True),
    ("M3EEmbeddings(query_encode_kwargs=)",
     lambda e: e["M3EEmbeddings"](model_name=e["path"], query_encode_kwargs=BOGUS), True),
    ("M3EVectorStore()", lambda e: e["M3EVectorStore"](embedding_function=e["emb"], **BOGUS), True),
    ("M3EVectorStore.from_texts", lambda e: e["M3EVectorStore"].from_texts(["x"], e["emb"], **BOGUS), True),
    ("M3EVectorStore.from_documents",
     lambda e: e["M3EVectorStore"].from_documents([], e["emb"], **BOGUS), True),
    ("M3ERetriever()", lambda e: e["M3ERetriever"](vectorstore=e["store"], **BOGUS), True),
    ("M3ERetriever(search_kwargs=)", lambda e: e["M3ERetriever"](vectorstore=e["store"], search_kwargs=BOGUS), True),
    ("M3ETextSplitter()", lambda e: e["M3ETextSplitter"](embeddings=e["emb"], **BOGUS), True),
    ("as_retriever()", lambda e: e["store"].as_retriever(**BOGUS), True),
    ("as_retriever(search_kwargs=)", lambda e: e["store"].as_retriever(search_kwargs=BOGUS), True),
    ("as_retriever(mmr, search_kwargs=)",
     lambda e: e["store"].as_retriever(search_type="mmr", search_kwargs={"score_threshold": 0.5}), True),
    # calls
    ("similarity_search", lambda e: e["store"].similarity_search("熊猫", **BOGUS), True),
    ("similarity_search_with_score", lambda e: e["store"].similarity_search_with_score("熊猫", **BOGUS), True),
    ("similarity_search_with_relevance_scores",
     lambda e: e["store"].similarity_search_with_relevance_scores("熊猫", **BOGUS), True),
    ("similarity_search_by_vector", lambda e: e["store"].similarity_search_by_vector(e["vec"], **BOGUS), True),
    ("similarity_search_by_vector_with_relevance_scores",
     lambda e: e["store"].similarity_search_by_vector_with_relevance_scores(e["vec"], **BOGUS), True),
    ("max_marginal_relevance_search", lambda e: e["store"].max_marginal_relevance_search("熊猫", **BOGUS), True),
    ("max_marginal_relevance_search_by_vector",
     lambda e: e["store"].max_marginal_relevance_search_by_vector(e["vec"], **BOGUS), True),
    ("add_texts", lambda e: e["store"].add_texts(["x"], **BOGUS), True),
    ("add_documents", lambda e: e["store"].add_documents([], **BOGUS), True),
    ("delete", lambda e: e["store"].delete(["a"], **BOGUS), True),
    ("get", lambda e: e["store"].get(**BOGUS), False),
    ("update_documents", lambda e: e["store"].update_documents(["a"], [], **BOGUS), False),
    ("ingest", lambda e: e["store"].ingest(texts=["x"], **BOGUS), False),
    ("asimilarity_search", lambda e: e["store"].asimilarity_search("熊猫", **BOGUS), True),
    ("amax_marginal_relevance_search", lambda e: e["store"].amax_marginal_relevance_search("熊猫", **BOGUS), True),
    ("aadd_texts", lambda e: e["store"].aadd_texts(["x"], **BOGUS), True),
    ("adelete", lambda e: e["store"].adelete(["a"], **BOGUS), True),
    ("M3ERetriever.invoke", lambda e: e["retriever"].invoke("熊猫", **BOGUS), True),
    ("M3ERetriever.ainvoke", lambda e: e["retriever"].ainvoke("熊猫", **BOGUS), True),
    ("as_retriever().invoke", lambda e: e["store"].as_retriever().invoke("熊猫", **BOGUS), True),
    ("as_retriever(mmr).invoke", lambda e: e["store"].as_retriever(search_type="mmr").invoke("熊猫", **BOGUS), True),
    ("split_text", lambda e: e["splitter"].split_text("熊猫。", **BOGUS), False),
    ("create_documents", lambda e: e["splitter"].create_documents(["熊猫。"], **BOGUS), False),
    ("split_documents", lambda e: e["splitter"].split_documents([], **BOGUS), False),
    ("transform_documents", lambda e: e["splitter"].transform_documents([], **BOGUS), True),
    ("embed_query", lambda e: e["emb"].embed_query("熊猫", **BOGUS), False),
    ("embed_documents", lambda e: e["emb"].embed_documents(["熊猫"], **BOGUS), False),
]

def _li(e: dict[str, Any], name: str) -> Any:
    """LlamaIndex objects for the cases, built once per module on first use (tiny model, temp folders)."""
    if "li" not in e:
        import tempfile

        from llama_index.core.schema import TextNode
        from llama_index.embeddings.m3e import M3EEmbedding
        from llama_index.node_parser.m3e import M3ENodeParser
        from llama_index.readers.m3e import M3EReader
        from llama_index.retrievers.m3e import M3ERetriever as LIRetriever
        from llama_index.vector_stores.m3e import M3EVectorStore as LIStore

        folder = Path(tempfile.mkdtemp(prefix="m3e-no-silent-li-"))
        emb = M3EEmbedding(model_name=e["path"])
        store = LIStore(persist_dir=str(folder / "db"), embed_model=emb)
        store.add([TextNode(text="大熊猫吃竹子。", id_="n1")])
        e["li"] = {"emb": emb, "store": store, "folder": folder, "parser": M3ENodeParser(embed_model=emb),
                   "reader": M3EReader(), "retriever": LIRetriever(store.pipeline), "M3EEmbedding": M3EEmbedding,
                   "M3EVectorStore": LIStore, "M3ERetriever": LIRetriever, "M3ENodeParser": M3ENodeParser,
                   "M3EReader": M3EReader, "TextNode": TextNode}
    return e["li"][name]


def _li_query(e: dict[str, Any], **kwargs: Any) -> Any:
    from llama_index.core.vector_stores.types import VectorStoreQuery

    return _li(e, "store").query(VectorStoreQuery(query_str="熊猫"), **kwargs)


def _li_docs() -> list[Any]:
    from llama_index.core import Document

    return [Document(text="熊猫。")]


#: LlamaIndex adapters (same shape as LANGCHAIN_CASES).
LLAMAINDEX_CASES: list[Case] = [
    # constructors
    ("M3EEmbedding()", lambda e: _li(e, "M3EEmbedding")(model_name=e["path"], **BOGUS), True),
    ("M3EVectorStore()", lambda e: _li(e, "M3EVectorStore")(persist_dir=str(_li(e, "folder") / "v2"), **BOGUS), True),
    ("llama M3ERetriever()", lambda e: _li(e, "M3ERetriever")(index=_li(e, "folder") / "r", **BOGUS), True),
    ("M3ENodeParser()", lambda e: _li(e, "M3ENodeParser")(model_name=e["path"], **BOGUS), True),
    ("M3EReader()", lambda e: _li(e, "M3EReader")(**BOGUS), True),
    # calls
    ("M3EEmbedding.get_text_embedding_batch", lambda e: _li(e, "emb").get_text_embedding_batch(["x"], **BOGUS), True),
    ("M3EEmbedding.__call__", lambda e: _li(e, "emb")([_li(e, "TextNode")(text="x")], **BOGUS), True),
    ("M3EEmbedding.aget_text_embedding_batch", lambda e: _li(e, "emb").aget_text_embedding_batch(["x"], **BOGUS), True),
    ("M3EVectorStore.add", lambda e: _li(e, "store").add([_li(e, "TextNode")(text="x")], **BOGUS), True),
    ("M3EVectorStore.async_add", lambda e: _li(e, "store").async_add([_li(e, "TextNode")(text="x")], **BOGUS), True),
    ("M3EVectorStore.query", lambda e: _li_query(e, **BOGUS), True),
    ("M3EVectorStore.delete", lambda e: _li(e, "store").delete("doc", **BOGUS), True),
    ("M3EVectorStore.delete_nodes", lambda e: _li(e, "store").delete_nodes(["n1"], **BOGUS), True),
    ("M3ENodeParser.get_nodes_from_documents",
     lambda e: _li(e, "parser").get_nodes_from_documents(_li_docs(), **BOGUS), True),
    ("M3ENodeParser.__call__", lambda e: _li(e, "parser")(_li_docs(), **BOGUS), True),
    ("M3EReader.load_data", lambda e: _li(e, "reader").load_data(_li(e, "folder"), **BOGUS), True),
]


@pytest.mark.parametrize(("name", "call", "lists_accepted"), LANGCHAIN_CASES, ids=[c[0] for c in LANGCHAIN_CASES])
def test_langchain_unknown_keyword_is_refused(
    env: dict[str, Any], name: str, call: Callable[[dict[str, Any]], Any], lists_accepted: bool
) -> None:
    from m3e_rag.errors import InputError

    before = env["store"].get()["ids"]
    with pytest.raises((InputError, TypeError)) as info:
        _run(call(env))
    message = str(info.value)
    # "bogus_option" is named; score_threshold (the mmr case) is named instead.
    assert "bogus_option" in message or "score_threshold" in message, message
    if lists_accepted:
        assert isinstance(info.value, InputError) and ("accepted" in message.lower() or "use [" in message), message
    assert env["store"].get()["ids"] == before  # nothing was written or deleted on the way


# Defined only once the list has cases (an empty parametrize would be reported as a skip).
if LLAMAINDEX_CASES:

    @pytest.mark.parametrize(("name", "call", "lists_accepted"), LLAMAINDEX_CASES, ids=[c[0] for c in LLAMAINDEX_CASES])
    def test_llamaindex_unknown_keyword_is_refused(
        env: dict[str, Any], name: str, call: Callable[[dict[str, Any]], Any], lists_accepted: bool
    ) -> None:
        from m3e_rag.errors import InputError

        with pytest.raises((InputError, TypeError)) as info:
            _run(call(env))
        assert "bogus_option" in str(info.value)
        if lists_accepted:
            assert isinstance(info.value, InputError) and "accepted" in str(info.value).lower()
