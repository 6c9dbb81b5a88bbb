"""`m3e-rag serve` as a real process on a real socket: the official openai client, LangChain's
OpenAIEmbeddings, a Dify-shaped rerank call, the 127.0.0.1 default, and SIGTERM with requests in flight.

One server subprocess (tiny model) is shared by the module; the shutdown test stops it, so it runs last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from m3e_rag import M3EEncoder

pytestmark = pytest.mark.slow

KEY = "live-key-456"
TEXTS = ["大熊猫主要吃竹子。", "The Eiffel Tower is in Paris.", "长城是中国古代的军事防御工程。"]
MODEL = "m3e-tiny-seed0"


@dataclass
class Live:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    index: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("serve-live")
    port = _free_port()
    log = base / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("M3E_RAG_API_KEY", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "m3e_rag", "serve", "--model", str(tiny_model_path), "--index", str(base / "index"),
             "--port", str(port), "--api-key", KEY, "--reranker", str(tiny_model_path)],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 180 s: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Live(url, port, proc, base / "index", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def encoder(tiny_model_path: Path) -> M3EEncoder:
    return M3EEncoder(str(tiny_model_path))


def _cosines(got: list[list[float]], expected: np.ndarray) -> list[float]:
    a = np.asarray(got, dtype=np.float64)
    b = expected.astype(np.float64)
    return list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def test_openai_client_base64_default_and_float(live: Live, encoder: M3EEncoder) -> None:
    from openai import OpenAI

    sent: list[dict] = []
    http = httpx.Client(event_hooks={"request": [lambda r: r.method == "POST" and sent.append(json.loads(r.content))]})
    client = OpenAI(base_url=f"{live.url}/v1", api_key=KEY, http_client=http, max_retries=0)
    expected = encoder.encode_documents(TEXTS)
    res = client.embeddings.create(model=MODEL, input=TEXTS)
    assert sent[-1]["encoding_format"] == "base64"  # the client's default, decoded by the client
    assert min(_cosines([d.embedding for d in res.data], expected)) >= 0.9999
    assert res.usage.total_tokens == sum(encoder.count_tokens(TEXTS)) and res.model == MODEL
    res = client.embeddings.create(model=MODEL, input=TEXTS[1], encoding_format="float")
    assert sent[-1]["encoding_format"] == "float"
    assert _cosines([res.data[0].embedding], expected[1:2])[0] >= 0.9999
    assert [m.id for m in client.models.list().data][0] == MODEL


def test_openai_client_gets_a_clear_400_for_token_ids(live: Live) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model=MODEL, input=[[101, 2769, 102]])  # what OpenAIEmbeddings sends by default
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model=MODEL, input="x")


def test_langchain_openai_embeddings(live: Live, encoder: M3EEncoder) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=MODEL, base_url=f"{live.url}/v1", api_key=KEY, check_embedding_ctx_length=False,
                           max_retries=0)
    expected = encoder.encode_documents(TEXTS)
    assert min(_cosines(emb.embed_documents(TEXTS), expected)) >= 0.9999
    assert _cosines([emb.embed_query(TEXTS[0])], expected[:1])[0] >= 0.9999


def test_dify_shaped_rerank_over_http(live: Live) -> None:
    docs = ["大熊猫吃竹子", "埃菲尔铁塔在巴黎", "绿茶是不发酵茶"]
    r = httpx.post(f"{live.url}/v1/rerank", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                   json={"model": MODEL, "query": "熊猫吃什么", "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2 and all(docs[x["index"]] == x["document"]["text"] for x in results)
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]


def test_binds_loopback_only_by_default(live: Live) -> None:
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == live.port:  # LISTEN
                listening.add(addr)
    assert listening == {"0100007F"}, listening  # 127.0.0.1 only


def _partial_request(port: int, path: str, payload: dict) -> tuple[socket.socket, bytes]:
    """Open a connection and send the headers and half the body: a request the server holds in flight."""
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def _finish(sock: socket.socket, rest: bytes) -> tuple[int, dict]:
    sock.sendall(rest)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)


def _wait_in_progress(live: Live, expected: dict[str, int], timeout: float = 60) -> None:
    """Wait until the server has received the headers of the requests held open (its in-progress gauge).

    A connection whose request the server has not read yet is idle to uvicorn and is closed at
    shutdown; on a busy machine that takes a moment, so SIGTERM waits for it.
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        text = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
        seen = {route: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("m3e_rag_requests_in_progress{")
                for route in [line.split('route="', 1)[1].split('"', 1)[0]]}
        if all(seen.get(route, 0) >= n for route, n in expected.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the server did not receive the held requests in {timeout} s: {seen}")


def test_sigterm_finishes_requests_and_ingest_in_flight(live: Live, tiny_model_path: Path) -> None:
    texts = [f"第{i}段：熊猫在四川的山里吃竹子，每天要吃很久。" for i in range(600)]  # > 2 ingest steps
    ingest_sock, ingest_rest = _partial_request(
        live.port, "/v1/ingest", {"texts": [{"text": t, "source": f"doc{i}"} for i, t in enumerate(texts)]})
    embed_sock, embed_rest = _partial_request(live.port, "/v1/embeddings", {"model": MODEL, "input": TEXTS})
    bursts = [
        _partial_request(live.port, "/v1/embeddings", {"model": MODEL, "input": [f"{t} {i}" for t in texts[:200]]})
        for i in range(4)
    ]
    results: list[tuple[int, int]] = []
    _wait_in_progress(live, {"/v1/ingest": 1, "/v1/embeddings": 5})

    def finish_burst(sock: socket.socket, rest: bytes) -> None:
        status, body = _finish(sock, rest)
        results.append((status, len(body["data"])))

    live.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the server is shutting down: every request above is still in flight
    threads = [threading.Thread(target=finish_burst, args=burst) for burst in bursts]
    for t in threads:  # four requests computing concurrently during the shutdown
        t.start()
    ingest_status, report = _finish(ingest_sock, ingest_rest)
    embed_status, embedded = _finish(embed_sock, embed_rest)
    for t in threads:
        t.join(120)
    assert live.proc.wait(120) == 0, live.log.read_text()[-3000:]
    assert embed_status == 200 and len(embedded["data"]) == 3
    assert ingest_status == 200 and report["chunks_added"] == 600, report
    assert results == [(200, 200)] * 4
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live.url}/health", timeout=2)
    from m3e_rag import RAGPipeline

    assert RAGPipeline(live.index, model_name=str(tiny_model_path)).stats()["chunks"] == 600
