"""LangChain's indexing API over M3EVectorStore: ``index`` / ``aindex``, every cleanup mode, both record managers.

The store is used exactly as LangChain users keep an index in step with their files: the same four
runs go through ``langchain_core.indexing.index`` (and ``aindex``) for each cleanup mode (None,
incremental, full, scoped_full), with langchain_core's ``InMemoryRecordManager`` and
langchain-classic's ``SQLRecordManager`` (sqlite; aiosqlite for async), on an embedded index folder and
on a Chroma server. After each run, the counts ``index()`` returns AND the store's contents are
checked, and the store's ids must be exactly the record manager's keys.

The runs (sources ``a`` and ``b``):
1. a1, a2, b1: all three added.
2. the same again: all three skipped (nothing embedded or written).
3. a1 changed, a2 gone from its source, b1 unchanged.
4. only a1 (as changed in 3): source b gone altogether.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.indexes import SQLRecordManager
from langchain_core.documents import Document
from langchain_core.indexing import InMemoryRecordManager, RecordManager, aindex, index

from langchain_m3e import M3EEmbeddings, M3EVectorStore
from m3e_rag.index.sparse.sync import SPARSE_CACHE_ENV

A1, A1_CHANGED, A2, B1 = "大熊猫主要吃竹子。", "大熊猫每天吃十几公斤竹子。", "熊猫宝宝很小。", "长城很长。"
RUNS: list[list[tuple[str, str]]] = [
    [(A1, "a"), (A2, "a"), (B1, "b")],
    [(A1, "a"), (A2, "a"), (B1, "b")],
    [(A1_CHANGED, "a"), (B1, "b")],
    [(A1_CHANGED, "a")],
]


def _counts(added: int, skipped: int, deleted: int) -> dict[str, int]:
    return {"num_added": added, "num_updated": 0, "num_skipped": skipped, "num_deleted": deleted}


#: cleanup mode -> per run: (the counts index() returns, the texts in the store afterwards)
EXPECTED: dict[str | None, list[tuple[dict[str, int], set[str]]]] = {
    None: [
        (_counts(3, 0, 0), {A1, A2, B1}),
        (_counts(0, 3, 0), {A1, A2, B1}),
        (_counts(1, 1, 0), {A1, A2, B1, A1_CHANGED}),  # no cleanup: the old versions stay
        (_counts(0, 1, 0), {A1, A2, B1, A1_CHANGED}),
    ],
    "incremental": [
        (_counts(3, 0, 0), {A1, A2, B1}),
        (_counts(0, 3, 0), {A1, A2, B1}),
        (_counts(1, 1, 2), {A1_CHANGED, B1}),  # a1 replaced, a2 deleted
        (_counts(0, 1, 0), {A1_CHANGED, B1}),  # source b not seen: kept
    ],
    "full": [
        (_counts(3, 0, 0), {A1, A2, B1}),
        (_counts(0, 3, 0), {A1, A2, B1}),
        (_counts(1, 1, 2), {A1_CHANGED, B1}),
        (_counts(0, 1, 1), {A1_CHANGED}),  # everything not seen is deleted: b1
    ],
    "scoped_full": [
        (_counts(3, 0, 0), {A1, A2, B1}),
        (_counts(0, 3, 0), {A1, A2, B1}),
        (_counts(1, 1, 2), {A1_CHANGED, B1}),
        (_counts(0, 1, 0), {A1_CHANGED, B1}),  # only the sources seen are in scope
    ],
}
MODES = list(EXPECTED)


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbeddings:
    return M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.server)])
def make_store(
    request: pytest.FixtureRequest, emb: M3EEmbeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], M3EVectorStore]]:
    """A factory of stores on one collection: an embedded folder, or a collection on a Chroma server."""
    name = f"indexing_{uuid.uuid4().hex[:12]}"
    if request.param == "embedded":
        def make() -> M3EVectorStore:
            return M3EVectorStore(collection_name=name, embedding_function=emb, persist_directory=tmp_path / "db")
    else:
        monkeypatch.setenv(SPARSE_CACHE_ENV, str(tmp_path / "bm25"))  # the server's BM25 side stays in tmp_path
        host, port = request.getfixturevalue("chroma_server").rsplit("//", 1)[1].split(":")

        def make() -> M3EVectorStore:
            return M3EVectorStore(collection_name=name, embedding_function=emb, host=host, port=int(port))
    yield make
    make().delete_collection()


def _docs(run: int) -> list[Document]:
    return [Document(page_content=text, metadata={"source": source}) for text, source in RUNS[run]]


def _texts(store: M3EVectorStore) -> set[str]:
    return set(store.get()["documents"])


def _sync_manager(kind: str, tmp_path: Path) -> RecordManager:
    manager: RecordManager
    if kind == "memory":
        manager = InMemoryRecordManager(namespace="m3e/indexing")
    else:
        manager = SQLRecordManager("m3e/indexing", db_url=f"sqlite:///{tmp_path / 'records.db'}")
    manager.create_schema()
    return manager


async def _async_manager(kind: str, tmp_path: Path) -> RecordManager:
    manager: RecordManager
    if kind == "memory":
        manager = InMemoryRecordManager(namespace="m3e/indexing")
    else:
        manager = SQLRecordManager("m3e/indexing", db_url=f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
                                   async_mode=True)
    await manager.acreate_schema()
    return manager


@pytest.mark.parametrize("manager_kind", ["memory", "sql"])
@pytest.mark.parametrize("cleanup", MODES)
def test_index_keeps_the_store_in_step(
    make_store: Callable[[], M3EVectorStore], cleanup: Any, manager_kind: str, tmp_path: Path
) -> None:
    manager = _sync_manager(manager_kind, tmp_path)
    for run, (counts, texts) in enumerate(EXPECTED[cleanup]):
        store = make_store()  # a fresh store each run, as a new process would open it
        result = index(_docs(run), manager, store, cleanup=cleanup, source_id_key="source", batch_size=2,
                       key_encoder="sha256")
        assert result == counts, f"run {run + 1}"
        assert _texts(store) == texts, f"run {run + 1}"
        assert set(store.get()["ids"]) == set(manager.list_keys()), f"run {run + 1}"


@pytest.mark.parametrize("manager_kind", ["memory", "sql"])
@pytest.mark.parametrize("cleanup", MODES)
async def test_aindex_keeps_the_store_in_step(
    make_store: Callable[[], M3EVectorStore], cleanup: Any, manager_kind: str, tmp_path: Path
) -> None:
    manager = await _async_manager(manager_kind, tmp_path)
    for run, (counts, texts) in enumerate(EXPECTED[cleanup]):
        store = make_store()
        result = await aindex(_docs(run), manager, store, cleanup=cleanup, source_id_key="source", batch_size=2,
                              key_encoder="sha256")
        assert result == counts, f"run {run + 1}"
        assert set((await store.aget())["documents"]) == texts, f"run {run + 1}"
        assert set(store.get()["ids"]) == set(await manager.alist_keys()), f"run {run + 1}"


def test_index_writes_in_the_batches_it_asks_for(
    make_store: Callable[[], M3EVectorStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """index(batch_size=2) over five Documents: the store writes 2 + 2 + 1, each with LangChain's ids."""
    store = make_store()
    writes: list[list[str]] = []
    add_texts = store.pipeline.add_texts

    def spy(texts: Any, metadatas: Any = None, ids: Any = None, embeddings: Any = None) -> list[str]:
        writes.append(list(ids))
        return add_texts(texts, metadatas, ids, embeddings)

    monkeypatch.setattr(store.pipeline, "add_texts", spy)
    docs = [Document(page_content=f"第{i}段。", metadata={"source": "s"}) for i in range(5)]
    manager = _sync_manager("memory", tmp_path)
    assert index(docs, manager, store, cleanup="full", batch_size=2, key_encoder="sha256")["num_added"] == 5
    assert [len(w) for w in writes] == [2, 2, 1]
    assert sorted(i for w in writes for i in w) == sorted(manager.list_keys()) == sorted(store.get()["ids"])


def test_upsert_kwargs_are_still_checked(make_store: Callable[[], M3EVectorStore], tmp_path: Path) -> None:
    """What LangChain passes is honoured; what a user adds through upsert_kwargs is refused by name."""
    from m3e_rag.errors import InputError

    store = make_store()
    manager = _sync_manager("memory", tmp_path)
    with pytest.raises(InputError, match="bogus_option"):
        index(_docs(0), manager, store, cleanup=None, upsert_kwargs={"bogus_option": 1}, key_encoder="sha256")
    assert store.get()["ids"] == [] and manager.list_keys() == []
