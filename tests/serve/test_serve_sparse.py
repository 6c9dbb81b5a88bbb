"""``return_sparse`` on ``/v1/embeddings``: BGE-M3-style lexical weights beside the dense vectors (issue 22).

The BGE-M3-shaped stand-in (random heads in BGE-M3's file layout) serves; its weights and vectors must equal
the in-process encoder's ``encode_outputs`` (whose fidelity to FlagEmbedding is tests/encode/test_bge_m3_fidelity.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3e_rag import M3EEncoder
from m3e_rag.serve import ServeConfig, create_app
from tests.support import standins

LOCAL = "http://127.0.0.1"
KEY = "sparse-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["大熊猫主要吃竹子。", "The Eiffel Tower is in Paris.", "混合 mixed 文本 🐼"]


def _ready(c: TestClient) -> None:
    deadline = time.monotonic() + 120
    while c.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def bge_folder() -> Path:
    return standins.bge_m3_standin()


@pytest.fixture(scope="module")
def client(bge_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # max_batch_texts=2: a 3-text request is served in two slices, each its own turn at the worker
    config = ServeConfig(model=str(bge_folder), served_names=("bge",), max_wait_ms=1, max_batch_texts=2,
                         index=tmp_path_factory.mktemp("bge-serve") / "index", api_key=KEY)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _ready(c)
        yield c


def test_sparse_weights_and_dense_vectors_equal_the_encoder(client: TestClient, bge_folder: Path) -> None:
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "bge", "return_sparse": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    expected = M3EEncoder(str(bge_folder)).encode_outputs(TEXTS, sparse=True)
    assert expected.lexical is not None
    for i, item in enumerate(data):
        sparse = item["sparse_embedding"]
        assert sparse["indices"] == sorted(sparse["indices"]) and len(sparse["indices"]) == len(sparse["values"])
        got = dict(zip((str(t) for t in sparse["indices"]), sparse["values"], strict=True))
        assert got.keys() == expected.lexical[i].keys()
        assert all(abs(got[t] - w) < 1e-5 for t, w in expected.lexical[i].items())
        assert np.allclose(item["embedding"], expected.dense[i], atol=1e-5)
    plain = client.post("/v1/embeddings", json={"input": TEXTS, "model": "bge"}, headers=AUTH).json()["data"]
    assert all("sparse_embedding" not in item for item in plain)  # OpenAI's shape unless asked
    assert np.allclose([p["embedding"] for p in plain], [d["embedding"] for d in data], atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] > 0


def test_a_query_gets_the_query_side(client: TestClient, bge_folder: Path) -> None:
    r = client.post("/v1/embeddings", json={"input": "熊猫吃什么", "model": "bge", "return_sparse": True,
                                            "input_type": "query"}, headers=AUTH)
    assert r.status_code == 200, r.text
    expected = M3EEncoder(str(bge_folder)).encode_outputs(["熊猫吃什么"], "query", sparse=True)
    assert expected.lexical is not None
    got = r.json()["data"][0]["sparse_embedding"]
    assert [str(t) for t in got["indices"]] == sorted(expected.lexical[0], key=int)


def test_a_model_without_a_sparse_head_says_so(tiny_model_path: Path) -> None:
    config = ServeConfig(model=str(tiny_model_path), served_names=("m3e",))
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _ready(c)
        r = c.post("/v1/embeddings", json={"input": ["文本"], "model": "m3e", "return_sparse": True})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "return_sparse" and err["code"] == "sparse_not_available"
        assert "sparse_linear.pt" in err["message"]
        assert c.post("/v1/embeddings", json={"input": ["文本"], "model": "m3e"}).status_code == 200


def test_search_picks_the_sparse_list_and_the_colbert_stage(client: TestClient, bge_folder: Path) -> None:
    texts = [{"text": t, "source": f"s{i}"} for i, t in enumerate(TEXTS)]
    assert client.post("/v1/ingest", json={"texts": texts}, headers=AUTH).status_code == 200

    def top(**options: object) -> dict:
        r = client.post("/v1/search", json={"query": "熊猫吃竹子", "k": 3, **options}, headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()["data"][0]

    encoder = M3EEncoder(str(bge_folder))
    query = encoder.encode_outputs(["熊猫吃竹子"], "query", sparse=True)
    learned = top(mode="sparse", sparse="learned")
    doc = encoder.encode_outputs([learned["text"]], sparse=True)
    assert query.lexical is not None and doc.lexical is not None
    expected = sum(w * doc.lexical[0][t] for t, w in query.lexical[0].items() if t in doc.lexical[0])
    assert learned["score"] == pytest.approx(expected, rel=1e-4)  # the model's lexical score, not BM25's
    assert top(mode="sparse", sparse="auto")["score"] == pytest.approx(learned["score"])  # auto: the model's own
    assert top(mode="sparse", sparse="bm25")["score"] != pytest.approx(learned["score"])
    assert top(mode="hybrid", colbert=True)["text"] in TEXTS
    r = client.post("/v1/search", json={"query": "x", "sparse": "splade"}, headers=AUTH)
    assert r.status_code == 422 and "sparse" in r.text
