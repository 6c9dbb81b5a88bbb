"""langchain-chroma 1.1.0's own test files, run against ``langchain_m3e.M3EVectorStore``.

The files are langchain-chroma's (MIT licence, Copyright (c) 2024 LangChain, Inc.), taken from its PyPI
sdist with the smallest mechanical change: ``Chroma`` is imported as ``M3EVectorStore as Chroma`` and the
fake embeddings module is imported from here. Everything else (which tests differ, and why) is decided
in this file, so the files stay diffable against upstream:

- :data:`DIFFERENCES`: tests that fail on purpose, as ``xfail(strict=True)`` with the reason (a strict
  xfail that starts passing fails the run, so the table cannot go stale);
- :data:`NOT_A_STORE_TEST`: tests of langchain_chroma's private module functions, not of a store:
  deselected (not run, not counted);
- the three tests that want a Chroma server on ``localhost:8000`` (``chromadb.HttpClient()`` with its
  default port) get the suite's own server instead of upstream's skip.

The README's table "langchain-chroma's own tests" gives the counts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import urlparse

import chromadb
import pytest

from m3e_rag.errors import InputError, ModelMismatchError

_L2 = ("Chroma's default space is l2 and this test expects l2 numbers; m3e-rag indexes are cosine space, where "
       "{what} (README: differences from langchain_chroma.Chroma)")
_FOREIGN = ("the collection was created with chromadb's own client (no m3e-rag model record, Chroma's default l2 "
            "space): M3EVectorStore refuses it until adopted (`m3e-rag adopt`), rather than mixing vectors unchecked")
_OLD_CHROMA = ("fails in chromadb 1.5's own get_or_create_collection (the test's MyEmbeddingFunction has no `name`, "
               "which chromadb >= 1 requires), before the store is reached")

#: test name -> (why it differs, the exception it must fail with: another failure fails the run)
DIFFERENCES: dict[str, tuple[str, type[BaseException]]] = {
    "test_chroma_search_filter_with_scores": (_L2.format(
        what="the same document's distance is the cosine distance 0.0513, not the squared l2 distance 1.0"),
        AssertionError),
    "test_chroma_with_relevance_score_custom_normalization_fn": (_L2.format(
        what="collection_metadata={'hnsw:space': 'l2'} is refused with the relevance_score_fn that gives l2 numbers"),
        InputError),
    "test_chroma_with_persistence_with_client_settings": (
        "m3e-rag opens a folder with anonymized_telemetry=False; chromadb refuses a second client on one folder in "
        "one process with other settings (the test opens it first with client_settings=Settings(), then without)",
        InputError),
    "test_create_collection_if_not_exist_true_existing": (_FOREIGN, ModelMismatchError),
    "test_create_collection_if_not_exist_false_existing": (_FOREIGN, ModelMismatchError),
    # These three fail inside chromadb 1.5 itself, before any store code runs (upstream skips them: its
    # version check reads 0.x, and no server answers on localhost:8000); here they run against the suite's server.
    "test_chroma_large_batch": (_OLD_CHROMA, AttributeError),
    "test_chroma_large_batch_update": (_OLD_CHROMA, AttributeError),
    "test_chroma_legacy_batching": (_OLD_CHROMA, AttributeError),
}
NOT_A_STORE_TEST = {
    "test_chroma_handles_none_page_content": "tests langchain_chroma.vectorstores._results_to_docs_and_scores",
    "test_chroma_handles_none_page_content_with_vectors": "tests langchain_chroma.vectorstores."
    "_results_to_docs_and_vectors",
}
_NEEDS_SERVER = {"test_chroma_large_batch", "test_chroma_large_batch_update", "test_chroma_legacy_batching"}


def pytest_configure(config: pytest.Config) -> None:
    """LangChain's ``requires`` marker (its monorepo conftest registers it; here it names a package present)."""
    config.addinivalue_line("markers", "requires(name): the test needs this package (langchain's marker)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the documented differences, deselect the tests of langchain_chroma's internals, give the server."""
    kept, dropped = [], []
    for item in items:
        if "langchain_chroma_upstream/" not in item.nodeid:
            kept.append(item)
            continue
        name = getattr(item, "originalname", item.name)
        if name in NOT_A_STORE_TEST:
            dropped.append(item)
            continue
        if name in _NEEDS_SERVER:
            item.own_markers = [m for m in item.own_markers if m.name != "skipif"]
            item.add_marker(pytest.mark.usefixtures("_suite_chroma_server_as_default"))
            item.fixturenames.append("_suite_chroma_server_as_default")  # type: ignore[attr-defined]
        if name in DIFFERENCES:
            reason, raises = DIFFERENCES[name]
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def _suite_chroma_server_as_default(chroma_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``chromadb.HttpClient()`` (upstream's call, default localhost:8000) reaches the suite's own server."""
    parsed = urlparse(chroma_server)
    monkeypatch.setattr(chromadb, "HttpClient", functools.partial(chromadb.HttpClient, host=parsed.hostname,
                                                                  port=parsed.port))
    yield
