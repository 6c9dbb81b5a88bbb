"""`m3e-rag serve` in process: every route and error code, auth, limits, batching, cancellation.

FastAPI's TestClient drives the real ASGI app (lifespan, gate, routes) with the tiny model; the
socket-level behaviour (real clients, SIGTERM) is in test_serve_live.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3e_rag import M3EEncoder
from m3e_rag.cli.dispatch import main as cli_main
from m3e_rag.errors import InputError, InputTooLongError
from m3e_rag.serve import ServeConfig, create_app
from m3e_rag.serve.batcher import Batcher, QueueFullError

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["大熊猫主要吃竹子。", "The Eiffel Tower is in Paris.", "长城是中国古代的军事防御工程。"]
#: The clients' base URL: a loopback server answers only loopback names in the Host header (DNS rebinding),
#: and TestClient's default host, "testserver", is not one of them.
LOCAL = "http://127.0.0.1"


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = client.get("/health")
        if r.status_code == 200:
            return
        assert r.status_code == 503, r.text
        time.sleep(0.05)
    raise AssertionError("service did not become ready")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "allowed"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "tea.txt").write_text("绿茶是不发酵茶，西湖龙井是著名的绿茶。", encoding="utf-8")
    outside = base / "secret.txt"
    outside.write_text("secret text outside the root", encoding="utf-8")
    (root / "linked").mkdir()
    (root / "linked" / "leak.txt").symlink_to(outside)
    return {"base": base, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def client(tiny_model_path: Path, roots: dict[str, Path]) -> Iterator[TestClient]:
    """Key, index, reranker and ingest root: everything on."""
    config = ServeConfig(model=str(tiny_model_path), index=roots["base"] / "index", api_key=KEY,
                         reranker=str(tiny_model_path), ingest_root=roots["root"], max_wait_ms=1)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def bare(tiny_model_path: Path) -> Iterator[TestClient]:
    """No key, no index, no reranker, small limits, over-length inputs refused."""
    config = ServeConfig(model=str(tiny_model_path), served_names=("m3e",), max_inputs=3,
                         max_request_bytes=4000, on_overflow="error")
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def encoder(tiny_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(tiny_model_path))


def _embed(c: TestClient, payload: dict, headers: dict | None = None) -> tuple[int, dict]:
    r = c.post("/v1/embeddings", json=payload, headers=AUTH if headers is None else headers)
    return r.status_code, r.json()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- embeddings
def test_embeddings_float_equal_the_in_process_encoder(client: TestClient, encoder: M3EEncoder) -> None:
    status, body = _embed(client, {"input": TEXTS, "model": "m3e-tiny-seed0", "encoding_format": "float"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "m3e-tiny-seed0"
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and body["data"][0]["object"] == "embedding"
    expected = encoder.encode_documents(TEXTS)
    for row, item in zip(expected, body["data"], strict=True):
        assert _cos(np.asarray(item["embedding"], dtype=np.float32), row) >= 0.9999
    tokens = sum(encoder.count_tokens(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_embeddings_base64_and_single_string(client: TestClient, encoder: M3EEncoder) -> None:
    status, body = _embed(client, {"input": TEXTS[0], "model": "m3e-tiny-seed0", "encoding_format": "base64"})
    assert status == 200, body
    assert len(body["data"]) == 1
    vec = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, encoder.encode_documents([TEXTS[0]])[0], atol=1e-5)
    status, body = _embed(client, {"input": TEXTS[0], "model": "m3e-tiny-seed0", "input_type": "query"})
    np.testing.assert_allclose(body["data"][0]["embedding"], encoder.encode_query(TEXTS[0]), atol=1e-5)
    # dimensions equal to the model's is accepted, and the full model name is too
    status, body = _embed(client, {"input": ["x"], "model": encoder.model_name, "dimensions": 64, "user": "u1"})
    assert status == 200 and len(body["data"][0]["embedding"]) == 64


@pytest.mark.parametrize(
    ("payload", "status", "param", "needle"),
    [
        ({"input": [[101, 102]], "model": "m3e-tiny-seed0"}, 400, "input", "check_embedding_ctx_length=False"),
        ({"input": [101, 102], "model": "m3e-tiny-seed0"}, 400, "input", "token ids"),
        ({"input": ["ok", ""], "model": "m3e-tiny-seed0"}, 400, "input", "input[1] is an empty string"),
        ({"input": [], "model": "m3e-tiny-seed0"}, 400, "input", "empty list"),
        ({"input": ["ok"], "model": "m3e-tiny-seed0", "dimensions": 32}, 400, "dimensions", "64 dimensions"),
        ({"input": ["ok"], "model": "text-embedding-ada-002"}, 404, "model", "serves 'm3e-tiny-seed0'"),
        ({"input": ["ok"]}, 422, "model", "Field 'model'"),
        ({"input": ["ok"], "model": "m3e-tiny-seed0", "encoding_format": "int8"}, 422, "encoding_format", "float"),
        ({"input": ["ok"], "model": "m3e-tiny-seed0", "normalize": False}, 422, "normalize", "Unknown field"),
        ({"input": [{"text": "x"}], "model": "m3e-tiny-seed0"}, 422, "input", "Field 'input"),
    ],
)
def test_embeddings_errors_name_the_field(client: TestClient, payload: dict, status: int, param: str,
                                          needle: str) -> None:
    got, body = _embed(client, payload)
    assert got == status, body
    assert body["error"]["param"] == param
    assert needle in body["error"]["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/embeddings", content=b'{"input": ["a"', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "body" and "not valid JSON" in r.json()["error"]["message"]


def test_overlong_input_follows_on_overflow(bare: TestClient, client: TestClient, encoder: M3EEncoder) -> None:
    long_text = "熊" * 600
    status, body = _embed(bare, {"input": ["short", long_text], "model": "m3e"}, headers={})
    assert status == 400 and body["error"]["code"] == "input_too_long"
    assert "input[1] has 602 tokens" in body["error"]["message"]
    status, body = _embed(client, {"input": ["short", long_text], "model": "m3e-tiny-seed0"})  # warn: truncates
    assert status == 200 and body["usage"]["total_tokens"] == encoder.count_tokens(["short"])[0] + 512


def test_limits_answer_413(bare: TestClient) -> None:
    status, body = _embed(bare, {"input": ["a", "b", "c", "d"], "model": "m3e"}, headers={})
    assert status == 413 and body["error"]["code"] == "too_many_inputs"
    status, body = _embed(bare, {"input": ["长" * 2000], "model": "m3e"}, headers={})  # Content-Length over 4000
    assert status == 413 and body["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"model": "m3e", "input": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    r = bare.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_served_model_name_and_models_route(bare: TestClient) -> None:
    r = bare.get("/v1/models")
    assert r.status_code == 200
    assert r.json()["data"] == [{"id": "m3e", "object": "model", "created": 0, "owned_by": "m3e-rag",
                                 "type": "embedding", "dimensions": 64, "max_tokens": 512}]
    assert _embed(bare, {"input": "x", "model": "m3e"}, headers={})[0] == 200


# --------------------------------------------------------------------- auth
def test_auth(client: TestClient) -> None:
    payload = {"input": "x", "model": "m3e-tiny-seed0"}
    assert _embed(client, payload, headers={})[0] == 401
    status, body = _embed(client, payload, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert _embed(client, payload, headers={"Authorization": f"Basic {KEY}"})[0] == 401
    r = client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401  # the key is checked before the body is parsed
    assert client.get("/health").status_code == 200  # open
    assert client.get("/metrics").status_code == 401
    assert client.get("/openapi.json").status_code == 200


def test_writes_need_a_configured_key(bare: TestClient) -> None:
    r = bare.post("/v1/ingest", json={"texts": [{"text": "x"}]})
    assert r.status_code == 403 and "--api-key" in r.json()["error"]["message"]


def test_openapi_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/v1/embeddings", "/v1/models", "/v1/rerank", "/v1/search", "/v1/ingest", "/health", "/metrics"):
        assert route in paths
    schema = client.get("/openapi.json").json()["components"]["schemas"]["EmbeddingRequest"]
    assert {"input", "model", "encoding_format", "dimensions", "user"} <= set(schema["properties"])


# ------------------------------------------------------------ rerank (Dify)
def test_rerank_dify_shape(client: TestClient, tiny_model_path: Path) -> None:
    docs = ["大熊猫吃竹子", "埃菲尔铁塔在巴黎", "绿茶是不发酵茶", "长城很长"]
    # exactly what Dify's rerank provider posts
    r = client.post("/v1/rerank", json={"model": "m3e-tiny-seed0", "query": "熊猫吃什么", "documents": docs,
                                        "top_n": 3}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert len(results) == 3 and body["usage"]["total_tokens"] > 0
    assert all(docs[item["index"]] == item["document"]["text"] for item in results)
    scores = [item["relevance_score"] for item in results]
    assert scores == sorted(scores, reverse=True)
    served = client.app.state.service.reranker.model  # type: ignore[attr-defined]
    expected = np.asarray(served.predict([("熊猫吃什么", d) for d in docs]))
    np.testing.assert_allclose(scores, np.sort(expected)[::-1][:3], rtol=1e-5)
    r = client.post("/v1/rerank", json={"query": "q", "documents": [{"text": "a"}, "b"], "return_documents": False},
                    headers=AUTH)
    assert r.status_code == 200 and all("document" not in item for item in r.json()["results"])


def test_rerank_not_configured_or_bad(bare: TestClient, client: TestClient) -> None:
    r = bare.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 404 and "--reranker" in r.json()["error"]["message"]
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "top_n": 0}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["param"] == "top_n"
    r = client.post("/v1/rerank", json={"query": " ", "documents": ["a"]}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"


# ---------------------------------------------------------- ingest + search
def test_ingest_texts_then_search_every_mode(client: TestClient) -> None:
    texts = [{"text": "大熊猫主要吃竹子，也吃竹笋。", "source": "panda", "metadata": {"lang": "zh"}},
             {"text": "The Eiffel Tower was finished in 1889.", "source": "tower", "metadata": {"lang": "en"}},
             {"text": "长城是古代的防御工程。"}]
    r = client.post("/v1/ingest", json={"texts": texts}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["chunks_added"] == 3
    assert client.post("/v1/ingest", json={"texts": texts}, headers=AUTH).json()["chunks_unchanged"] == 3
    for mode in ("dense", "sparse", "hybrid"):
        r = client.post("/v1/search", json={"query": "Eiffel Tower 1889", "k": 2, "mode": mode}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert 1 <= len(r.json()["data"]) <= 2
    r = client.post("/v1/search", json={"query": "Eiffel", "k": 1, "mode": "sparse"}, headers=AUTH)
    assert r.json()["data"][0]["metadata"]["source"] == "tower"
    r = client.post("/v1/search", json={"query": "熊猫", "k": 5, "where": {"lang": "en"}}, headers=AUTH)
    assert [h["metadata"]["source"] for h in r.json()["data"]] == ["tower"]
    r = client.post("/v1/search", json={"query": "工程", "k": 5, "where_document": {"$contains": "长城"}},
                    headers=AUTH)
    assert [h["text"] for h in r.json()["data"]] == ["长城是古代的防御工程。"]
    r = client.post("/v1/search", json={"query": "熊猫", "k": 2, "mmr": True, "fetch_k": 3, "lambda_mult": 0.3},
                    headers=AUTH)
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    r = client.post("/v1/search", json={"query": "熊猫", "k": 2, "rerank": True}, headers=AUTH)
    assert r.status_code == 200 and len(r.json()["data"]) == 2


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"query": "x", "where": {"$bogus": 1}}, 400, "where"),
        ({"query": "x", "where_document": {"$nope": "a"}}, 400, "where_document"),
        ({"query": "x", "k": 0}, 422, "k"),
        ({"query": "x", "k": 5000}, 400, "k"),
        ({"query": "x", "mode": "fuzzy"}, 422, "mode"),
        ({"query": "x", "lambda_mult": 2}, 422, "lambda_mult"),
        ({"query": "", "k": 1}, 400, "query"),
        ({"query": "x", "rerank_top_n": 3}, 400, "rerank_top_n"),
        ({"query": "x", "fetch": 3}, 422, "fetch"),
    ],
)
def test_search_errors(client: TestClient, payload: dict, status: int, param: str) -> None:
    r = client.post("/v1/search", json=payload, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_search_and_ingest_without_index(bare: TestClient) -> None:
    r = bare.post("/v1/search", json={"query": "x"})
    assert r.status_code == 404 and "--index" in r.json()["error"]["message"]


def test_ingest_server_paths_stay_under_the_root(client: TestClient, roots: dict[str, Path]) -> None:
    r = client.post("/v1/ingest", json={"paths": ["docs"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["files_seen"] == 1 and r.json()["chunks_added"] == 1
    for bad in (str(roots["outside"]), "../secret.txt", "linked"):
        r = client.post("/v1/ingest", json={"paths": [bad]}, headers=AUTH)
        assert r.status_code == 403, (bad, r.text)
        assert r.json()["error"]["code"] == "path_outside_root"
    r = client.post("/v1/ingest", json={"paths": ["missing"]}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "paths"
    r = client.post("/v1/ingest", json={}, headers=AUTH)
    assert r.status_code == 400
    r = client.post("/v1/ingest", json={"texts": [{"text": "x"}], "include": ["*.md"]}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "include"


# --------------------------------------------------------- health, metrics
def test_health_is_503_until_the_model_is_loaded(tiny_model_path: Path) -> None:
    app = create_app(ServeConfig(model=str(tiny_model_path)))
    c = TestClient(app, base_url=LOCAL)  # no lifespan: the model never loads
    r = c.get("/health")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    r = c.post("/v1/embeddings", json={"input": "x", "model": "m"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "loading" and r.headers["retry-after"] == "1"


def test_failed_load_is_reported(tmp_path: Path) -> None:
    with TestClient(create_app(ServeConfig(model=str(tmp_path / "nope"))), base_url=LOCAL) as c:
        deadline = time.monotonic() + 60
        while (r := c.get("/health")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 500 and r.json()["status"] == "failed"


def test_metrics_in_prometheus_text(client: TestClient) -> None:
    _embed(client, {"input": TEXTS, "model": "m3e-tiny-seed0"})
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"m3e_rag_requests", "m3e_rag_request_seconds", "m3e_rag_batch_texts", "m3e_rag_queue_texts",
            "m3e_rag_embedded_tokens", "m3e_rag_cancelled_texts", "m3e_rag_rejected_requests"} <= set(families)
    ok = [s for s in families["m3e_rag_requests"].samples
          if s.labels == {"route": "/v1/embeddings", "status": "200"} and s.name.endswith("_total")]
    assert ok and ok[0].value >= 1
    batch_count = [s for s in families["m3e_rag_batch_texts"].samples if s.name.endswith("_count")]
    assert batch_count[0].value >= 1


def test_queue_full_is_503_with_retry_after(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = client.app.state.service.batcher  # type: ignore[attr-defined]

    def full(*args: object, **kwargs: object) -> None:
        raise QueueFullError("The queue holds 4096 texts (limit 4096); retry in a moment.")

    monkeypatch.setattr(batcher, "submit_texts", full)
    status, body = _embed(client, {"input": "x", "model": "m3e-tiny-seed0"})
    assert status == 503 and body["error"]["code"] == "queue_full"
    r = client.post("/v1/embeddings", json={"input": "x", "model": "m3e-tiny-seed0"}, headers=AUTH)
    assert r.headers["retry-after"] == "1"


# ---------------------------------------------------------- the batcher
class _Gated:
    """An embed function that blocks until released and records what it was given."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str], kind: str) -> np.ndarray:
        self.entered.set()
        self.release.wait(10)
        self.calls.append(list(texts))
        return np.asarray([[float(len(t)), float(i)] for i, t in enumerate(texts)], dtype=np.float32)

    @staticmethod
    def count(texts: list[str], kind: str) -> list[int]:
        return [len(t) + 2 for t in texts]


def test_batcher_coalesces_waiting_requests_and_maps_results_back() -> None:
    gated = _Gated()
    batcher = Batcher(gated.embed, gated.count, window=512, max_batch_texts=64, max_wait_s=0.0).start()
    try:
        first = batcher.submit_texts(["warm"])
        assert gated.entered.wait(5)  # the worker is busy with `first`
        later = [batcher.submit_texts(["a" * (i + 1)] * 2) for i in range(5)]
        gated.release.set()
        assert first.result(5).tokens == [6]
        results = [f.result(5) for f in later]
        assert gated.calls[1] == [t for i in range(5) for t in ["a" * (i + 1)] * 2]  # one batch of 10
        for i, res in enumerate(results):
            assert res.vectors[:, 0].tolist() == [i + 1, i + 1] and res.tokens == [i + 3, i + 3]
    finally:
        gated.release.set()
        batcher.close(5)


def test_batcher_bounded_queue_cancel_and_window() -> None:
    gated = _Gated()
    cancelled: list[int] = []

    class Observer:
        def batch_done(self, texts: int, requests: int, seconds: float) -> None: ...
        def queue_depth(self, texts: int) -> None: ...
        def cancelled(self, texts: int) -> None:
            cancelled.append(texts)

    batcher = Batcher(gated.embed, gated.count, window=10, on_overflow="error", max_queue_texts=3,
                      max_wait_s=0.0, observer=Observer()).start()
    try:
        busy = batcher.submit_texts(["busy"])
        assert gated.entered.wait(5)
        gone = batcher.submit_texts(["gone", "gone"])
        kept = batcher.submit_texts(["kept"])
        with pytest.raises(QueueFullError, match="limit 3"):
            batcher.submit_texts(["over"])
        assert gone.cancel() and cancelled == [2] and batcher.queued_texts == 1
        too_long = batcher.submit_texts(["ok", "x" * 20])
        with pytest.raises(InputError, match=r"input\[1\]"):
            batcher.submit_texts(["fine", " "])
        gated.release.set()
        busy.result(5)
        assert kept.result(5).tokens == [6]
        with pytest.raises(InputTooLongError, match=r"input\[1\] has 22 tokens"):
            too_long.result(5)
        assert all("gone" not in call for call in gated.calls)  # the cancelled texts never reached the model
    finally:
        gated.release.set()
        batcher.close(5)


def test_client_disconnect_drops_its_queued_work(client: TestClient) -> None:
    """An ASGI request whose client goes away while queued: its texts leave the queue (499, counted)."""
    service = client.app.state.service  # type: ignore[attr-defined]
    release = threading.Event()
    blocker = service.batcher.submit_call(lambda: release.wait(10))  # keep the worker busy
    before = service.metrics.cancelled_texts._value.get()
    body = json.dumps({"input": ["dropped one", "dropped two"], "model": "m3e-tiny-seed0"}).encode()
    sent: list[dict] = []

    async def scenario() -> None:
        stage = 0

        async def receive() -> dict:
            nonlocal stage
            stage += 1
            if stage == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            while service.batcher.queued_texts < 2:  # the request is queued: now the client leaves
                await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": [
            (b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())], "query_string": b"", "http_version": "1.1",
            "scheme": "http", "server": ("testserver", 80), "client": ("testclient", 1), "root_path": ""}
        await asyncio.wait_for(client.app(scope, receive, send), 20)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    blocker.result(10)
    assert sent[0]["status"] == 499
    assert service.metrics.cancelled_texts._value.get() - before == 2
    assert service.batcher.queued_texts == 0


# --------------------------------------------------------------- the CLI
def test_serve_refuses_a_public_bind_without_a_key(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M3E_RAG_API_KEY", raising=False)
    assert cli_main(["serve", "--host", "0.0.0.0", "--model", "m3e-small"]) == 2
    err = capsys.readouterr().err
    assert "Refusing to bind '0.0.0.0' without an API key" in err and "--insecure-no-auth" in err


def test_serve_defaults_bind_loopback_and_read_the_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from m3e_rag.cli.dispatch import build_parser
    from m3e_rag.serve.config import config_from_args

    monkeypatch.setenv("M3E_RAG_API_KEY", "from-env")
    config = config_from_args(build_parser().parse_args(["serve"]))
    assert config.host == "127.0.0.1" and config.port == 8000 and config.api_key == "from-env"
    config = config_from_args(build_parser().parse_args(["serve", "--host", "0.0.0.0"]))  # a key: allowed
    assert config.host == "0.0.0.0"
    monkeypatch.delenv("M3E_RAG_API_KEY")
    config = config_from_args(build_parser().parse_args(["serve", "--host", "10.0.0.5", "--insecure-no-auth"]))
    assert config.api_key is None and config.insecure_no_auth


def test_cli_import_does_not_load_the_web_stack() -> None:
    code = ("import sys, m3e_rag.cli.dispatch as c; c.build_parser().parse_args(['serve']); "
            "bad = [m for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
