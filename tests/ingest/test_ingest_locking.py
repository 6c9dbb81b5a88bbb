"""An ingest holds the index's write locks for its writes only: searches do not wait for the model.

The service's searches share a pipeline with its ingests (issue 24: "/v1/search waits 32 s behind a
35 s ingest"). Each ingest step embeds its new chunks before it takes the locks, so a search that
needs them (to catch up with writers) waits for a step's writes, not for its embedding.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from m3e_rag import RAGPipeline


def test_a_search_runs_while_an_ingest_is_embedding(tmp_path: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["熊猫吃竹子。", "西湖龙井是绿茶。"], sources=["panda", "tea"])
    encoder = rag.encoder
    real = encoder.encode_documents
    embedding, release = threading.Event(), threading.Event()

    def held(texts: Any) -> np.ndarray:
        embedding.set()
        assert release.wait(60), "the test never released the ingest"
        return real(texts)

    encoder.encode_documents = held  # type: ignore[method-assign]
    ingest = threading.Thread(target=rag.ingest, kwargs={"texts": ["长城很长。"], "sources": ["wall"]})
    ingest.start()
    try:
        assert embedding.wait(60), "the ingest never reached its embedding"
        hits: list[Any] = []
        search = threading.Thread(target=lambda: hits.extend(rag.search("熊猫", k=1, mode="sparse")))
        search.start()
        search.join(30)
        assert not search.is_alive(), "the search waited for the ingest's embedding"
        assert hits and hits[0].source == "panda"
    finally:
        release.set()
        ingest.join(60)
    del encoder.encode_documents
    assert rag.search("长城", k=1, mode="sparse")[0].source == "wall"
    assert rag.store.count() == 3
