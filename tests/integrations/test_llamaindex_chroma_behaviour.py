"""M3EVectorStore behaves like ``ChromaVectorStore`` (llama-index-vector-stores-chroma 0.6.0) where issue 20 said not.

- filters-only queries (no text, no vector) return the matching nodes, ``similarities=None``;
- ``mmr_threshold`` / ``mmr_prefetch_factor`` / ``mmr_prefetch_k`` with Chroma's meaning: the expected
  ids below are what ``ChromaVectorStore`` 0.6.0 returned for the same vectors (run on a cosine and an
  L2 collection, chromadb 1.5.9, llama-index-core 0.14.25: identical ids in both);
- the score scales: M3E's cosine against Chroma's ``exp(-distance)`` and LangChain's relevance, on
  cosine and L2 collections (the README's side-by-side table).

The 3-d vectors are zero-padded to the tiny stand-in's 64 dimensions (cosines unchanged).
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import chromadb
import pytest
from langchain_core.vectorstores import VectorStore
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import ImageNode, TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.m3e import M3EEmbedding
from llama_index.vector_stores.m3e import M3EVectorStore

from m3e_rag.errors import InputError

DIM = 64
MMR = VectorStoreQueryMode.MMR
VECTORS = {"a": (1.0, 0.1, 0.0), "b": (1.0, 0.12, 0.01), "c": (0.7, 0.7, 0.0), "d": (0.0, 0.0, 1.0)}
QUERY = (1.0, 0.2, 0.0)


def pad(v: tuple[float, ...] | list[float]) -> list[float]:
    return [float(x) for x in v] + [0.0] * (DIM - len(v))


def cosine(u: tuple[float, ...], v: tuple[float, ...]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def eq(key: str, value: object) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value)])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbedding:
    return M3EEmbedding(model_name=str(tiny_model_path))


@pytest.fixture()
def store(emb: M3EEmbedding) -> M3EVectorStore:
    vs = M3EVectorStore(client=chromadb.EphemeralClient(), collection_name=f"li_{uuid.uuid4().hex[:8]}",
                        embed_model=emb)
    vs.add([TextNode(text=f"doc {k}", id_=k, metadata={"label": k, "group": "x" if k != "d" else "y"},
                     embedding=pad(v)) for k, v in VECTORS.items()])
    return vs


# ---------------------------------------------------------------------------------------------- filters only
def test_filters_only_query_returns_the_matching_node_without_similarities(store: M3EVectorStore) -> None:
    res = store.query(VectorStoreQuery(filters=eq("label", "c"), similarity_top_k=1))
    assert res.ids == ["c"] and [n.get_content() for n in res.nodes or []] == ["doc c"]
    assert res.similarities is None  # ChromaVectorStore's shape for a get(): nodes and ids, no similarities
    assert (res.nodes or [])[0].metadata == {"label": "c", "group": "x"}


async def test_filters_only_query_honours_the_limit_and_every_filter_source(store: M3EVectorStore) -> None:
    res = await store.aquery(VectorStoreQuery(filters=eq("group", "x"), similarity_top_k=2))
    assert len(res.ids or []) == 2 and set(res.ids or []) <= {"a", "b", "c"}
    res = store.query(VectorStoreQuery(filters=eq("group", "x"), similarity_top_k=10), where={"label": {"$ne": "a"}})
    assert sorted(res.ids or []) == ["b", "c"]
    res = store.query(VectorStoreQuery(filters=eq("group", "x"), similarity_top_k=10),
                      where_document={"$contains": "doc b"})
    assert res.ids == ["b"]
    # no filter at all: the first similarity_top_k nodes in storage order, as Chroma's get(limit=k)
    assert store.query(VectorStoreQuery(similarity_top_k=3)).ids == ["a", "b", "c"]
    assert store.query(VectorStoreQuery(filters=eq("label", "zz"), similarity_top_k=3)).ids == []


def test_filters_only_query_on_a_new_empty_store(tmp_path: Path, emb: M3EEmbedding) -> None:
    empty = M3EVectorStore(persist_dir=str(tmp_path / "db"), embed_model=emb)
    res = empty.query(VectorStoreQuery(filters=eq("label", "a"), similarity_top_k=1))
    assert res.ids == [] and res.nodes == [] and res.similarities is None


@pytest.mark.parametrize(
    ("query", "kwargs", "match"),
    [
        (VectorStoreQuery(filters=eq("label", "a"), mode=VectorStoreQueryMode.HYBRID, alpha=0.5), {}, "alpha rank"),
        (VectorStoreQuery(filters=eq("label", "a"), mode=MMR), {"mmr_threshold": 0.5}, "mmr_threshold rank"),
        (VectorStoreQuery(filters=eq("label", "a")), {"fetch_k": 8}, "fetch_k rank"),
        (VectorStoreQuery(filters=eq("label", "a"), similarity_top_k=0), {}, "similarity_top_k must be"),
    ],
    ids=["alpha", "mmr_threshold", "fetch_k", "top_k"],
)
def test_filters_only_query_refuses_ranking_options(store: M3EVectorStore, query: VectorStoreQuery,
                                                    kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        store.query(query, **kwargs)


# ---------------------------------------------------------------------------------------------- MMR options
@pytest.mark.parametrize(
    ("threshold", "extra", "expected"),
    [
        (1.0, {}, ["b", "a"]),
        (0.5, {}, ["b", "c"]),  # default prefetch 4 * top_k: every candidate
        (0.5, {"mmr_prefetch_k": 2}, ["b", "a"]),  # only the two nearest reach MMR
        (0.5, {"mmr_prefetch_factor": 1.0}, ["b", "a"]),
        (0.5, {"mmr_prefetch_factor": 2.0}, ["b", "c"]),
        (0.0, {}, ["b", "d"]),
        (0.0, {"fetch_k": 2}, ["b", "a"]),  # m3e-rag's name for mmr_prefetch_k
    ],
)
def test_mmr_options_pick_what_chroma_vector_store_picks(store: M3EVectorStore, threshold: float,
                                                          extra: dict[str, object], expected: list[str]) -> None:
    query = VectorStoreQuery(query_embedding=pad(QUERY), similarity_top_k=2, mode=MMR)
    res = store.query(query, mmr_threshold=threshold, **extra)
    assert res.ids == expected
    # similarities: each picked node's cosine to the query (Chroma's store: exp(-distance) of the same node)
    assert res.similarities == pytest.approx([cosine(QUERY, VECTORS[i]) for i in expected], abs=1e-5)


def test_mmr_options_reach_the_engine_as_lambda_and_fetch_k(store: M3EVectorStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    real = store.pipeline.search_by_vector

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store.pipeline, "search_by_vector", spy)
    query = VectorStoreQuery(query_embedding=pad(QUERY), similarity_top_k=3, mode=MMR)
    store.query(query, mmr_threshold=0.25, mmr_prefetch_factor=2.0)
    store.query(query)
    store.query(query, mmr_prefetch_k=1)
    store.query(VectorStoreQuery(query_embedding=pad(QUERY), similarity_top_k=3, mode=MMR, mmr_threshold=0.7))
    assert [(s["lambda_mult"], s["fetch_k"], s["mmr"]) for s in seen] == [
        (0.25, 6, True), (0.5, 12, True), (0.5, 3, True), (0.7, 12, True)]


def test_the_issue_row_mmr_options_through_a_retriever(store: M3EVectorStore, emb: M3EEmbedding) -> None:
    res = store.query(VectorStoreQuery(query_embedding=pad(QUERY), similarity_top_k=2, mode=MMR),
                      mmr_threshold=0.5, mmr_prefetch_factor=2.0)
    assert res.ids == ["b", "c"]
    index = VectorStoreIndex.from_vector_store(store, embed_model=emb)
    hits = index.as_retriever(similarity_top_k=2, vector_store_query_mode="mmr",
                              vector_store_kwargs={"mmr_threshold": 0.5, "mmr_prefetch_factor": 2.0}).retrieve("doc")
    assert len(hits) == 2


@pytest.mark.parametrize(
    ("mode", "kwargs", "match"),
    [
        (MMR, {"mmr_prefetch_factor": 2.0, "mmr_prefetch_k": 16}, "cannot coexist"),
        (MMR, {"mmr_prefetch_factor": 2.0, "fetch_k": 16}, "cannot coexist"),
        (MMR, {"mmr_prefetch_k": 8, "fetch_k": 16}, "name the same depth"),
        (MMR, {"mmr_threshold": 1.5}, "mmr_threshold must be a number from 0"),
        (MMR, {"mmr_threshold": True}, "mmr_threshold must be a number from 0"),
        (MMR, {"mmr_prefetch_factor": 0}, "mmr_prefetch_factor must be a number above 0"),
        (MMR, {"mmr_prefetch_k": 0}, "mmr_prefetch_k must be a positive integer"),
        (VectorStoreQueryMode.DEFAULT, {"mmr_prefetch_factor": 2.0}, "mmr_prefetch_factor applies to .*'mmr' only"),
        (VectorStoreQueryMode.HYBRID, {"mmr_prefetch_k": 8}, "mmr_prefetch_k applies to .*'mmr' only"),
    ],
    ids=["factor_and_k", "factor_and_fetch_k", "k_and_fetch_k", "threshold_range", "threshold_bool", "factor_zero",
         "k_zero", "factor_default_mode", "k_hybrid_mode"],
)
def test_mmr_options_refused_with_the_reason(store: M3EVectorStore, mode: VectorStoreQueryMode,
                                             kwargs: dict[str, object], match: str) -> None:
    query = VectorStoreQuery(query_embedding=pad(QUERY), query_str="doc", similarity_top_k=2, mode=mode)
    with pytest.raises(InputError, match=match) as caught:
        store.query(query, **kwargs)
    assert isinstance(caught.value, ValueError)  # what ChromaVectorStore raises, so `except ValueError` still works


def test_mmr_threshold_given_twice_must_agree(store: M3EVectorStore) -> None:
    query = VectorStoreQuery(query_embedding=pad(QUERY), similarity_top_k=2, mode=MMR, mmr_threshold=0.5)
    assert store.query(query, mmr_threshold=0.5).ids == ["b", "c"]
    with pytest.raises(InputError, match="disagree"):
        store.query(query, mmr_threshold=1.0)


# ---------------------------------------------------------------------------------------------- constructors
def test_from_params_with_chroma_vector_store_s_signature(tmp_path: Path, emb: M3EEmbedding) -> None:
    store = M3EVectorStore.from_params(collection_name="llama_collection", persist_dir=str(tmp_path / "db"),
                                       collection_kwargs={}, embed_model=emb)
    assert store.persist_dir == str(tmp_path / "db") and store.collection_name == "llama_collection"
    with pytest.raises(InputError, match="'collection_kwargs'.*created by m3e-rag"):
        M3EVectorStore.from_params(collection_name="llama_collection", persist_dir=str(tmp_path / "db"),
                                   collection_kwargs={"metadata": {"hnsw:space": "l2"}}, embed_model=emb)
    with pytest.raises(InputError, match="'bogus_option'"):
        M3EVectorStore.from_params(collection_name="llama_collection", persist_dir=str(tmp_path / "db"),
                                   embed_model=emb, bogus_option=1)


def test_image_nodes_without_text_come_back_whole_from_query_and_get(store: M3EVectorStore) -> None:
    """What upstream's two private-API tests (_query/_get over a fake collection) check, through the public API."""
    node = ImageNode(text="", image_url="http://example.com/image.png", id_="image-node-id", embedding=pad((0, 1, 0)))
    store.add([node])
    for query in (VectorStoreQuery(query_embedding=pad((0, 1, 0)), similarity_top_k=1),
                  VectorStoreQuery(filters=eq("_node_type", "ImageNode"), similarity_top_k=1)):
        found = (store.query(query).nodes or [None])[0]
        assert isinstance(found, ImageNode) and found.image_url == node.image_url and found.node_id == "image-node-id"


def test_from_collection_is_refused_naming_what_to_pass() -> None:
    collection = chromadb.EphemeralClient().get_or_create_collection("bare_collection")
    with pytest.raises(InputError, match="from_collection.*cosine space.*client="):
        M3EVectorStore.from_collection(collection)


# ---------------------------------------------------------------------------------------------- score scales
@pytest.mark.parametrize("cos", [0.9, 0.5, 0.0, -0.5])
def test_score_scales_side_by_side(emb: M3EEmbedding, cos: float) -> None:
    """The README table: one pair of unit vectors at a known cosine, as each store scores it."""
    doc, query = (cos, math.sqrt(1 - cos * cos)), (1.0, 0.0)
    m3e = M3EVectorStore(client=chromadb.EphemeralClient(), collection_name=f"sc_{uuid.uuid4().hex[:8]}",
                         embed_model=emb)
    m3e.add([TextNode(text="x", id_="x", embedding=pad(doc))])
    similarity = (m3e.query(VectorStoreQuery(query_embedding=pad(query), similarity_top_k=1)).similarities or [])[0]
    assert similarity == pytest.approx(cos, abs=1e-5)  # M3EVectorStore: the cosine itself

    distances = {}
    for space in ("cosine", "l2"):  # what ChromaVectorStore and langchain_chroma.Chroma read from Chroma
        col = chromadb.EphemeralClient().get_or_create_collection(f"raw_{space}_{uuid.uuid4().hex[:6]}",
                                                                  metadata={"hnsw:space": space})
        col.add(ids=["x"], embeddings=[list(doc)])
        distances[space] = col.query(query_embeddings=[list(query)], n_results=1)["distances"][0][0]  # type: ignore[index]
    assert distances["cosine"] == pytest.approx(1 - cos, abs=1e-5)
    assert distances["l2"] == pytest.approx(2 - 2 * cos, abs=1e-5)  # Chroma's l2 is the SQUARED distance
    # ChromaVectorStore's similarity exp(-distance), and the conversion documented in M3EVectorStore's docstring
    assert math.exp(-distances["cosine"]) == pytest.approx(math.exp(cos - 1), abs=1e-5)
    assert 1 + math.log(math.exp(-distances["cosine"])) == pytest.approx(similarity, abs=1e-5)
    assert math.exp(-distances["l2"]) == pytest.approx(math.exp(2 * cos - 2), abs=1e-5)
    # langchain_chroma.Chroma's relevance scores (langchain-core's functions, chosen by the collection's space)
    assert VectorStore._cosine_relevance_score_fn(distances["cosine"]) == pytest.approx(cos, abs=1e-5)
    assert VectorStore._euclidean_relevance_score_fn(distances["l2"]) == pytest.approx(
        1 - (2 - 2 * cos) / math.sqrt(2), abs=1e-5)
