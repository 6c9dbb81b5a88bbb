"""One request cannot hurt another (issue 24): bad inputs, failing batches, huge queries, big requests, ingests.

- A bad input (a lone surrogate) fails its own request with a 400 before anything is queued; a batch
  that fails in the encoder is retried member by member, so only the failing request fails.
- A multi-megabyte search query is cut to the model's window before any tokenizer or BM25 work.
- The batcher takes fair turns: a small request rides the next batch behind big ones, a cancelled
  request's remaining batches never run, and a search does not wait for an ingest in progress.

Races are driven by events, semaphores and a held model worker, never by sleeping.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3e_rag import M3EEncoder
from m3e_rag.encode.inputs import CHARS_PER_TOKEN_BOUND
from m3e_rag.serve import ServeConfig, create_app
from m3e_rag.serve.batcher import Batcher
from m3e_rag.serve.fair import water_fill

KEY = "isolation-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
MODEL = "m3e-tiny-seed0"


def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition the test is waiting for (not a sleep standing in for an event)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def served(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Index, key and reranker; batches of at most 4 texts so splitting shows with few texts."""
    base = tmp_path_factory.mktemp("isolation")
    config = ServeConfig(model=str(tiny_model_path), index=base / "index", api_key=KEY, reranker=str(tiny_model_path),
                         max_wait_ms=1, max_batch_texts=4)
    with TestClient(create_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        _until(lambda: client.get("/health").status_code == 200, "the model to load")
        texts = [{"text": "大熊猫主要吃竹子，也吃竹笋。", "source": "panda"},
                 {"text": "The panda eats bamboo shoots every day.", "source": "panda-en"},
                 {"text": "长城是古代的防御工程。", "source": "wall"}]
        assert client.post("/v1/ingest", json={"texts": texts}, headers=AUTH).status_code == 200
        yield client


@pytest.fixture(scope="module")
def encoder(tiny_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(tiny_model_path))


def _service(client: TestClient) -> Any:
    return client.app.state.service  # type: ignore[attr-defined]


def _post(client: TestClient, route: str, payload: dict[str, Any]) -> Any:
    """POST raw JSON (``ensure_ascii=False``: a lone surrogate goes as an escape, Chinese as UTF-8)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace")
    return client.post(route, content=body, headers=AUTH)


class _HeldWorker:
    """Keeps the model worker busy with a call until released, so requests pile up in the queue."""

    def __init__(self, client: TestClient) -> None:
        self.release = threading.Event()
        self.future = _service(client).batcher.submit_call(lambda: self.release.wait(60))

    def __enter__(self) -> _HeldWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.future.result(60)


def _concurrently(n: int, send: Callable[[int], Any]) -> tuple[list[threading.Thread], dict[int, Any]]:
    replies: dict[int, Any] = {}
    threads = [threading.Thread(target=lambda i=i: replies.__setitem__(i, send(i))) for i in range(n)]
    for t in threads:
        t.start()
    return threads, replies


# --------------------------------------------------------------- bad inputs
def test_a_lone_surrogate_fails_only_its_own_request(served: TestClient, encoder: M3EEncoder) -> None:
    """Row: one request holding a lone surrogate sent with 30 valid ones: 400 for it, 200 for all 30."""
    svc = _service(served)
    valid = [[f"第{i}段：大熊猫吃竹子。", f"text {i} about bamboo"] for i in range(30)]
    with _HeldWorker(served) as held:
        threads, replies = _concurrently(30, lambda i: _post(served, "/v1/embeddings",
                                                             {"input": valid[i], "model": MODEL}))
        _until(lambda: svc.batcher.queued_texts == 60, "the 30 valid requests to be queued")
        bad = served.post("/v1/embeddings", content=b'{"input": ["ok", "bad \\ud800 text"], "model": "m3e-tiny-seed0"}',
                          headers=AUTH)
        assert not held.future.done()  # answered while the worker was busy: it was never queued
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["param"] == "input" and error["code"] == "invalid_unicode"
    assert "input[1]" in error["message"] and "surrogate" in error["message"] and "at character 4" in error["message"]
    for t in threads:
        t.join(60)
    assert sorted(replies) == list(range(30))
    for i, reply in replies.items():
        assert reply.status_code == 200, reply.text
        got = np.asarray([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, encoder.encode_documents(valid[i]), atol=1e-5)


def test_a_request_that_breaks_the_encoder_fails_alone(served: TestClient, encoder: M3EEncoder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Row: the valid requests batched with a failing one used to get 500 too; now only it does."""
    svc = _service(served)
    real = svc.encoder.encode_documents

    def poisoned(texts: list[str]) -> np.ndarray:
        if any("POISON" in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return real(texts)

    monkeypatch.setattr(svc.encoder, "encode_documents", poisoned)
    inputs = [[f"good text {i}"] for i in range(5)] + [["POISON pill"]]
    with _HeldWorker(served):
        threads, replies = _concurrently(6, lambda i: _post(served, "/v1/embeddings",
                                                            {"input": inputs[i], "model": MODEL}))
        _until(lambda: svc.batcher.queued_texts == 6, "the 6 requests to be queued")
    for t in threads:
        t.join(60)
    assert replies[5].status_code == 500
    for i in range(5):
        assert replies[i].status_code == 200, replies[i].text
        np.testing.assert_allclose(replies[i].json()["data"][0]["embedding"], encoder.encode_documents(inputs[i])[0],
                                   atol=1e-5)


@pytest.mark.parametrize("stage", ["count", "embed"])
def test_a_failing_batch_is_retried_member_by_member(stage: str) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fails(where: str, texts: list[str]) -> None:
        calls.append((where, list(texts)))
        if where == stage and any(t.startswith("bad") for t in texts):
            raise RuntimeError(f"{where} exploded")

    def embed(texts: list[str], kind: str) -> np.ndarray:
        fails("embed", texts)
        return np.asarray([[float(t.split(":")[1])] for t in texts], dtype=np.float32)

    def count(texts: list[str], kind: str) -> list[int]:
        fails("count", texts)
        return [3] * len(texts)

    batcher = Batcher(embed, count, window=512, max_wait_s=0.0).start()
    try:
        hold = threading.Event()
        held = batcher.submit_call(lambda: hold.wait(60))
        good1 = batcher.submit_texts(["g:1", "g:2"])
        bad = batcher.submit_texts(["bad:3"])
        good2 = batcher.submit_texts(["g:4"])
        hold.set()
        held.result(60)
        assert good1.result(60).vectors[:, 0].tolist() == [1.0, 2.0]
        assert good2.result(60).vectors[:, 0].tolist() == [4.0]
        with pytest.raises(RuntimeError, match=f"{stage} exploded"):
            bad.result(60)
    finally:
        batcher.close(10)
    together = ["g:1", "g:2", "bad:3", "g:4"]
    assert calls[0] == ("count", together)
    alone = [c for c in calls if c[0] == stage][-3:]
    assert [texts for _, texts in alone] == [["g:1", "g:2"], ["bad:3"], ["g:4"]]  # each member retried alone


# ------------------------------------------------------------ huge queries
@pytest.mark.parametrize("query", ["panda bamboo " * 800_000, "大熊猫吃竹子" * 500_000],
                         ids=["ascii-10MB", "chinese-9MB"])
@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_a_huge_search_query_is_cut_before_any_tokenizer(served: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                         query: str, mode: str) -> None:
    """Row: /v1/search with a 10 MB query: the text reaching the model, its tokenizer and BM25 is bounded."""
    import m3e_rag.index.sparse.bm25 as bm25

    svc = _service(served)
    seen: list[tuple[str, int]] = []

    def spy(name: str, fn: Callable[..., Any], texts_of: Callable[..., list[str]]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen.extend((name, len(t)) for t in texts_of(*args, **kwargs))
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(svc.encoder, "count_tokens", spy("count", svc.encoder.count_tokens, lambda texts, *a: texts))
    monkeypatch.setattr(svc.encoder, "encode_queries", spy("embed", svc.encoder.encode_queries, lambda texts: texts))
    monkeypatch.setattr(svc.pipeline, "search", spy("search", svc.pipeline.search, lambda q, *a, **k: [q]))
    monkeypatch.setattr(bm25, "tokenize_for_bm25", spy("bm25", bm25.tokenize_for_bm25, lambda text, *a, **k: [text]))
    assert len(query.encode("utf-8")) > 8_000_000
    r = _post(served, "/v1/search", {"query": query, "k": 2, "mode": mode})
    assert r.status_code == 200, r.text[:500]
    limit = svc.window * CHARS_PER_TOKEN_BOUND
    stages = {name for name, _ in seen}
    assert {"search", "bm25"} <= stages and (mode == "sparse" or {"count", "embed"} <= stages), stages
    assert max(size for _, size in seen) <= limit, seen


def test_invalid_unicode_in_search_and_rerank_is_a_400(served: TestClient) -> None:
    r = served.post("/v1/search", content=b'{"query": "pan\\udc80da"}', headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "query", r.text
    assert "surrogate" in r.json()["error"]["message"]
    r = served.post("/v1/rerank", content=b'{"query": "q", "documents": ["a", "b\\ud800"]}', headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "documents", r.text
    assert "documents[1]" in r.json()["error"]["message"]


# ------------------------------------------------------------- fair turns
class _Stepped:
    """An embed function that runs one call per permit and reports each call's texts as it starts."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.started: queue.Queue[list[str]] = queue.Queue()
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str], kind: str) -> np.ndarray:
        self.calls.append(list(texts))
        self.started.put(list(texts))
        assert self.permits.acquire(timeout=60)
        return np.asarray([[float(t.split(":")[1])] for t in texts], dtype=np.float32)

    @staticmethod
    def count(texts: list[str], kind: str) -> list[int]:
        return [3] * len(texts)


def test_water_fill_shares_a_batch_equally() -> None:
    assert water_fill([12, 1], 4) == [3, 1]
    assert water_fill([40, 40, 1], 4) == [2, 1, 1]
    assert water_fill([10] * 6, 4) == [1, 1, 1, 1, 0, 0]
    assert water_fill([2, 3], 64) == [2, 3]
    assert water_fill([5, 1, 9], 9) == [4, 1, 4]
    # more requests than texts in a batch: the remainder goes to the least served so far, then in line order
    assert water_fill([10, 10, 1], 2, served=[5, 5, 0]) == [1, 0, 1]
    assert water_fill([10] * 4, 2, served=[3, 1, 2, 0]) == [0, 1, 0, 1]
    assert water_fill([10] * 6, 4, served=[2] * 6) == [1, 1, 1, 1, 0, 0]
    assert water_fill([9, 9, 9], 7, served=[4, 0, 2]) == [2, 3, 2]  # equal shares; the one left over: least served


def test_a_newcomer_rides_the_next_batch_when_more_requests_wait_than_it_holds() -> None:
    """Issue 25: with more requests waiting than a batch holds texts, a one-text request that just arrived went
    to the back of the line and waited for every request already being served; now it rides the next batch."""
    step = _Stepped()
    batcher = Batcher(step.embed, step.count, window=512, max_batch_texts=4, max_wait_s=0.0).start()
    try:
        hold = threading.Event()
        batcher.submit_call(lambda: hold.wait(60))
        bigs = [batcher.submit_texts([f"{name}:{i:02d}" for i in range(10)]) for name in "abcde"]
        hold.set()
        assert step.started.get(timeout=60) == ["a:00", "b:00", "c:00", "d:00"]  # e waits: 5 requests, 4 texts
        small = batcher.submit_texts(["s:7"])  # arrives while that batch runs
        step.permits.release()
        # e (never served) and the newcomer first, then the least served in line order
        assert step.started.get(timeout=60) == ["e:00", "a:01", "b:01", "s:7"]
        step.permits.release()
        assert small.result(60).vectors[:, 0].tolist() == [7.0]
        step.permits.release(100)
        for big in bigs:
            assert big.result(60).vectors[:, 0].tolist() == list(range(10))
        assert all(len(call) <= 4 for call in step.calls)
    finally:
        step.permits.release(100)
        batcher.close(10)


def test_a_small_request_rides_the_next_batch_behind_big_ones() -> None:
    """Row: a one-word embedding waited behind two 2,048-input requests; now it is in the next batch."""
    step = _Stepped()
    batcher = Batcher(step.embed, step.count, window=512, max_batch_texts=4, max_wait_s=0.0).start()
    try:
        hold = threading.Event()
        batcher.submit_call(lambda: hold.wait(60))
        big1 = batcher.submit_texts([f"a:{i:02d}" for i in range(40)])  # one length: input order
        big2 = batcher.submit_texts([f"b:{i:02d}" for i in range(40)])
        small = batcher.submit_texts(["s:7"])
        hold.set()
        assert step.started.get(timeout=60) == ["a:00", "a:01", "b:00", "s:7"]
        step.permits.release()  # exactly one batch
        assert small.result(60).vectors[:, 0].tolist() == [7.0]
        assert not big1.done() and not big2.done()  # answered before the big ones' last batch
        assert step.started.get(timeout=60) == ["a:02", "a:03", "b:01", "b:02"]  # the big ones take turns
        step.permits.release(100)
        assert big1.result(60).vectors[:, 0].tolist() == list(range(40))
        assert big2.result(60).vectors[:, 0].tolist() == list(range(40))
        assert all(len(call) <= 4 for call in step.calls) and len(step.calls) == 21
    finally:
        step.permits.release(100)
        batcher.close(10)


def test_requests_hand_out_their_longest_texts_first_and_get_them_back_in_order() -> None:
    """Issue 25: every request's share of a batch is its longest texts left, so a batch holds like lengths."""
    step = _Stepped()
    batcher = Batcher(step.embed, step.count, window=512, max_batch_texts=4, max_wait_s=0.0).start()
    try:
        hold = threading.Event()
        batcher.submit_call(lambda: hold.wait(60))
        first = batcher.submit_texts(["x:1", "xxxxxx:2", "xx:3", "xxxxxxxx:4"])
        second = batcher.submit_texts(["y:5", "yyyyyyy:6", "yy:7", "yyyyyyyyy:8"])
        hold.set()
        step.permits.release(100)
        assert step.started.get(timeout=60) == ["xxxxxxxx:4", "xxxxxx:2", "yyyyyyyyy:8", "yyyyyyy:6"]
        assert step.started.get(timeout=60) == ["xx:3", "x:1", "yy:7", "y:5"]
        assert first.result(60).vectors[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # input order
        assert second.result(60).vectors[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0]
        assert first.result(60).tokens == [3, 3, 3, 3]
    finally:
        step.permits.release(100)
        batcher.close(10)


def test_a_cancelled_request_stops_at_the_next_batch_boundary() -> None:
    """Row: after queued texts were abandoned the running request went on; now its next batches never run."""
    step = _Stepped()
    dropped: list[int] = []

    class Observer:
        def batch_done(self, texts: int, requests: int, seconds: float) -> None: ...
        def queue_depth(self, texts: int) -> None: ...
        def cancelled(self, texts: int) -> None:
            dropped.append(texts)

    batcher = Batcher(step.embed, step.count, window=512, max_batch_texts=4, max_wait_s=0.0,
                      observer=Observer()).start()
    try:
        big = batcher.submit_texts([f"a:{i:02d}" for i in range(12)])  # one length: handed out in input order
        assert step.started.get(timeout=60) == ["a:00", "a:01", "a:02", "a:03"]  # its first batch is running
        assert big.cancel()  # the client went away
        assert dropped == [8] and batcher.queued_texts == 0
        after = batcher.submit_texts(["z:5"])
        step.permits.release(10)
        assert after.result(60).vectors[:, 0].tolist() == [5.0]
        assert step.calls == [["a:00", "a:01", "a:02", "a:03"], ["z:5"]]
        assert big.cancelled()
    finally:
        step.permits.release(100)
        batcher.close(10)


def test_a_departed_clients_remaining_batches_are_dropped(served: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTP: the client leaves while its first batch runs; its other batches never reach the model."""
    import asyncio

    svc = _service(served)
    real = svc.encoder.encode_documents
    started, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def gated(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        started.set()
        release.wait(60)
        return real(texts)

    monkeypatch.setattr(svc.encoder, "encode_documents", gated)
    before = svc.metrics.cancelled_texts._value.get()
    body = json.dumps({"input": [f"text number {i:02d}" for i in range(12)], "model": MODEL}).encode()
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        stage = 0

        async def receive() -> dict[str, Any]:
            nonlocal stage
            stage += 1
            if stage == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            while not started.is_set():  # its first batch is in the model: now the client leaves
                await asyncio.sleep(0.005)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": [
            (b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())], "query_string": b"", "http_version": "1.1",
            "scheme": "http", "server": ("testserver", 80), "client": ("testclient", 1), "root_path": ""}
        await asyncio.wait_for(served.app(scope, receive, send), 60)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert sent[0]["status"] == 499
    _until(lambda: svc.batcher.queued_texts == 0, "the queue to empty")
    ok = _post(served, "/v1/embeddings", {"input": ["after"], "model": MODEL})  # the worker moved on
    assert ok.status_code == 200
    assert calls == [[f"text number {i:02d}" for i in range(4)], ["after"]]
    assert svc.metrics.cancelled_texts._value.get() - before == 8


def test_a_search_does_not_wait_for_an_ingest(served: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row: /v1/search waited 32 s behind a 35 s ingest; now it answers while the ingest runs."""
    from m3e_rag.ingest.ingestor import IngestReport

    svc = _service(served)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_ingest(*args: Any, **kwargs: Any) -> IngestReport:
        entered.set()
        release.wait(60)
        finished.set()
        return IngestReport()

    monkeypatch.setattr(svc.pipeline, "ingest", slow_ingest)
    reply: dict[str, Any] = {}
    writer = threading.Thread(target=lambda: reply.setdefault(
        "ingest", served.post("/v1/ingest", json={"texts": [{"text": "新的文本"}]}, headers=AUTH)))
    writer.start()
    try:
        assert entered.wait(60)
        for mode in ("dense", "sparse", "hybrid"):
            r = served.post("/v1/search", json={"query": "熊猫", "k": 2, "mode": mode}, headers=AUTH)
            assert r.status_code == 200 and r.json()["data"], r.text
        assert not finished.is_set()  # every search answered while the ingest was still running
    finally:
        release.set()
        writer.join(60)
    assert reply["ingest"].status_code == 200, reply["ingest"].text


def test_reranks_are_scored_in_slices_that_take_turns(served: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large rerank is split into calls of max_batch_texts pairs, with the scores of one whole predict."""
    svc = _service(served)
    submitted: list[int] = []
    real_submit = svc.batcher.submit_call

    def counting(call: Callable[[], Any]) -> Any:
        submitted.append(1)
        return real_submit(call)

    monkeypatch.setattr(svc.batcher, "submit_call", counting)
    docs = [f"文档 {i}：大熊猫吃竹子" if i % 2 else f"document {i} about walls" for i in range(10)]
    r = served.post("/v1/rerank", json={"query": "熊猫吃什么", "documents": docs}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert len(submitted) == 3  # 4 + 4 + 2 pairs
    scores = {item["index"]: item["relevance_score"] for item in r.json()["results"]}
    expected = np.asarray(svc.reranker.model.predict([("熊猫吃什么", d) for d in docs]))
    np.testing.assert_allclose([scores[i] for i in range(10)], expected, rtol=1e-5)
    submitted.clear()
    pairs = [("熊猫", d) for d in docs]
    np.testing.assert_allclose(svc.reranker.predict(pairs), svc.reranker.model.predict(pairs), rtol=1e-5)
    assert len(submitted) == 3  # the search side's reranker (WorkerReranker) slices the same way


def test_the_shared_tokenizer_is_called_by_one_thread_at_a_time() -> None:
    """Searches run concurrently now: calls on the pipeline encoder's tokenizer hold its lock."""
    from m3e_rag.serve.service import SerialTokenizer

    held: list[bool] = []

    class Inner:
        is_fast = True

        def __call__(self, text: str) -> str:
            held.append(self.other_thread_blocked())
            return text

        def encode(self, text: str) -> str:
            held.append(self.other_thread_blocked())
            return text

        def other_thread_blocked(self) -> bool:
            got: list[bool] = []
            probe = threading.Thread(target=lambda: got.append(outer._lock.acquire(blocking=False)))
            probe.start()
            probe.join()
            return not got[0]

    outer = SerialTokenizer(Inner())
    assert outer("x") == "x" and outer.encode("y") == "y" and outer.is_fast is True
    assert held == [True, True]
