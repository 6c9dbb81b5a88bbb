"""`m3e-rag serve` against hostile clients and failures: Host check, timeouts, connection limit, typed failures.

Rows of issue 24 re-run here: DNS rebinding (a Host header of another name), idle and slow
connections at the file limit, a start-up that fails with a non-``Exception`` (a pyo3 panic), the
index folder removed under a running server, and bad input answered as JSON (never plain text).

The transport mechanics run against a real uvicorn server in a thread (a trivial app, so no model
to load, and the server's own connection set as a deterministic hook); the wiring through the
command line runs against a live ``m3e-rag serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from m3e_rag.errors import IndexDamagedError, InputError, ModelLoadError
from m3e_rag.serve import ServeConfig, create_app
from m3e_rag.serve.config import connection_budget
from m3e_rag.serve.hosts import HostCheck, allowed_hosts, host_name
from m3e_rag.serve.http_errors import startup_failure
from m3e_rag.serve.service import Service
from m3e_rag.serve.transport import guarded_protocol

KEY = "transport-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LOCAL = "http://127.0.0.1"
MODEL = "m3e-tiny-seed0"


class FakePanic(BaseException):
    """Stands for pyo3's PanicException: a BaseException, not an Exception."""


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _raising(*errors: BaseException) -> Callable[..., None]:
    """A stand-in that raises ``errors`` in turn, one per call."""
    queue = list(errors)

    def fail(*args: object, **kwargs: object) -> None:
        raise queue.pop(0)

    return fail


def _settled(client: TestClient) -> httpx.Response:
    """The first /health answer that is not 'loading'."""
    _wait(lambda: client.get("/health").json().get("status") != "loading", "the load to end", 120)
    return client.get("/health")


# ------------------------------------------------------------------ Host header (DNS rebinding)
def test_host_name_reads_ports_brackets_and_case() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LocalHost.:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("::1") == "::1"
    assert host_name("attacker.example.com:8000") == "attacker.example.com"


def test_allowed_hosts_by_bind_and_option() -> None:
    loop = allowed_hosts(ServeConfig())
    assert loop == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts(ServeConfig(allowed_hosts=("rag.internal",))) == loop | {"rag.internal"}
    assert allowed_hosts(ServeConfig(allowed_hosts=("*",))) is None
    wide = allowed_hosts(ServeConfig(host="10.0.0.5", api_key=KEY, allowed_hosts=("rag.corp:8000",)))
    assert wide == {"10.0.0.5", "rag.corp"}  # no loopback names on another bind; ports are not compared
    check = HostCheck(lambda *a: None, allowed=allowed_hosts(ServeConfig(allowed_hosts=("*.corp.example",))),
                      loopback=True)
    assert check.accepts("a.corp.example:9") and check.accepts("127.0.0.2") and check.accepts("[::1]:1")
    assert not check.accepts("corp.example.attacker.com") and not check.accepts("attacker.example.com")
    assert HostCheck(lambda *a: None, allowed=None, loopback=True).accepts("attacker.example.com")  # '*'
    with pytest.raises(InputError, match="allowed-hosts"):
        ServeConfig(allowed_hosts=("a.com, b.com",))


@pytest.fixture(scope="module")
def indexed(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index holding one known text."""
    from m3e_rag import RAGPipeline

    folder = tmp_path_factory.mktemp("transport") / "index"
    RAGPipeline(folder, model_name=str(tiny_model_path)).ingest(texts=["熊猫的秘密：竹子。"], sources=["secret"])
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    return folder


def test_a_keyless_loopback_server_refuses_another_host_name(tiny_model_path: Path, indexed: Path) -> None:
    """Row: keyless server on 127.0.0.1, `Host: attacker.example.com` -> was 200 with index text; now 400."""
    config = ServeConfig(model=str(tiny_model_path), index=indexed)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _settled(c)
        query = {"query": "熊猫", "k": 1}
        for host in ("attacker.example.com", "attacker.example.com:8000", "127.0.0.1.nip.io"):
            r = c.post("/v1/search", json=query, headers={"Host": host})
            assert r.status_code == 400, (host, r.text)
            assert r.json()["error"]["code"] == "host_not_allowed" and "--allowed-hosts" in r.json()["error"]["message"]
            assert "竹子" not in r.text
        assert c.get("/v1/models", headers={"Host": "attacker.example.com"}).status_code == 400
        for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1234", "[::1]:8000"):
            r = c.post("/v1/search", json=query, headers={"Host": host})
            assert r.status_code == 200 and "竹子" in r.text, (host, r.text)
        assert c.get("/health", headers={"Host": "lb-probe.internal"}).status_code == 200  # exempt
        rejected = c.app.state.service.metrics.rejected.labels("host")._value.get()  # type: ignore[attr-defined]
        assert rejected == 4


def test_allowed_hosts_option(tiny_model_path: Path) -> None:
    config = ServeConfig(model=str(tiny_model_path), allowed_hosts=("rag.example.com",))
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _settled(c)
        assert c.get("/v1/models", headers={"Host": "rag.example.com:8000"}).status_code == 200
        assert c.get("/v1/models", headers={"Host": "other.example.com"}).status_code == 400


def test_serve_cli_takes_the_transport_options() -> None:
    from m3e_rag.cli.dispatch import build_parser
    from m3e_rag.serve.config import config_from_args

    args = build_parser().parse_args(["serve", "--allowed-hosts", "a.example", "--allowed-hosts", "*.b.example",
                                      "--keep-alive-timeout", "2", "--header-timeout", "3.5",
                                      "--max-connections", "50"])
    config = config_from_args(args)
    assert config.allowed_hosts == ("a.example", "*.b.example")
    assert (config.keep_alive_timeout_s, config.header_timeout_s, config.max_connections) == (2, 3.5, 50)
    with pytest.raises(InputError, match="ulimit -n"):
        ServeConfig(max_connections=10**9)
    with pytest.raises(InputError, match="header_timeout_s"):
        ServeConfig(header_timeout_s=0)
    assert connection_budget(1024) == 768  # the default limit stays below the file limit
    assert connection_budget(20000) == 20000 - 256
    assert 0 < connection_budget(64) < 64
    assert connection_budget(None) > 0


# ------------------------------------------------------------------ transport: a real uvicorn in a thread
class _App:
    """A trivial ASGI app: ``/block`` waits for ``release``; everything else answers 200 at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.entered += 1
        if scope["path"] == "/block":
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _uvicorn(base: Any, *, header_timeout_s: float = 60, max_connections: int = 1000,
             ) -> Iterator[tuple[Any, int, _App]]:
    import uvicorn

    app = _App()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="error", ws="none", timeout_keep_alive=60,
                            http=guarded_protocol(base, header_timeout_s=header_timeout_s,
                                                  max_connections=max_connections))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait(lambda: server.started, "uvicorn to start")
    try:
        yield server, port, app
    finally:
        app.release.set()
        server.should_exit = True
        thread.join(30)
        sock.close()


def _protocols() -> list[Any]:
    """uvicorn's two HTTP protocol classes (httptools only where installed: uvicorn falls back to h11)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return [H11Protocol]
    return [H11Protocol, HttpToolsProtocol]


def _closed_by_server(sock: socket.socket, timeout: float = 60) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) before ``timeout`` seconds pass."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _closed_now(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _get(port: int, path: str = "/", host: str = "127.0.0.1") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("base", _protocols(), ids=lambda b: b.__name__)
def test_header_deadline_closes_silent_and_slow_connections(base: Any) -> None:
    """Row: idle or slow connections were never timed out; now each must send its head within the deadline."""
    with _uvicorn(base, header_timeout_s=0.5) as (_, port, _app):
        silent = socket.create_connection(("127.0.0.1", port))
        assert _closed_by_server(silent), "a connection that sent nothing was kept open"
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        closed = False
        for _ in range(600):  # one byte every 50 ms: 30 s for the whole head, far past the deadline
            if _closed_now(slow):
                closed = True
                break
            try:
                slow.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        assert closed, "a head sent one byte at a time was read for 30 s"
        kept = socket.create_connection(("127.0.0.1", port))  # a kept-alive connection: same deadline next time
        kept.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the next head, never finished
        assert _closed_by_server(kept)
        assert _get(port) == (200, b"ok")  # a normal request is untouched


@pytest.mark.parametrize("base", _protocols(), ids=lambda b: b.__name__)
def test_connection_limit_closes_the_longest_idle_to_serve_a_new_client(base: Any) -> None:
    """Row: 1,100 idle connections at the file limit reset every new client; now idle ones make room."""
    limit = 20
    with _uvicorn(base, max_connections=limit) as (server, port, _app):
        idle = []
        for _ in range(50):  # idle connections far over the limit (the header deadline is 60 s here)
            idle.append(socket.create_connection(("127.0.0.1", port)))
        assert _get(port) == (200, b"ok")  # a new client is served while they are open
        _wait(lambda: len(server.server_state.connections) <= limit, "the server to hold at most the limit")
        _wait(lambda: sum(_closed_now(s) for s in idle) >= 50 - limit, "the oldest idle connections to close")
        assert not _closed_now(idle[-1])  # the newest idle connection was kept: the oldest made room
        for s in idle:
            s.close()


@pytest.mark.parametrize("base", _protocols(), ids=lambda b: b.__name__)
def test_connection_limit_answers_503_when_every_connection_is_busy(base: Any) -> None:
    limit = 4
    with _uvicorn(base, max_connections=limit) as (_, port, app):
        busy = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(limit)]
        for s in busy:
            s.sendall(b"GET /block HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        _wait(lambda: app.entered == limit, "every connection to hold a request in flight")
        status, body = _get(port)
        assert status == 503 and json.loads(body)["error"]["code"] == "too_many_connections"
        app.release.set()
        for s in busy:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.close()


# ------------------------------------------------------------------ sustained load: nothing kept per request
@pytest.mark.slow
def test_per_request_state_stays_bounded(keyed: TestClient) -> None:
    """Row: RSS grew under 200 clients. Measured flat after warm-up (nothing of ours grew); this guards it:
    a second round of requests leaves no objects, metric series or queued work behind."""
    service = keyed.app.state.service  # type: ignore[attr-defined]
    calls = [("POST", "/v1/embeddings", {"model": MODEL, "input": [f"熊猫{i}"] * (1 + i % 3)}) for i in range(8)]
    calls += [("POST", "/v1/search", {"query": f"竹子 {i}", "k": 2, "mode": "sparse"}) for i in range(8)]
    calls += [("POST", "/v1/embeddings", {"model": MODEL, "input": [""]}), ("GET", "/v1/models", None),
              ("GET", "/health", None), ("GET", "/metrics", None), ("POST", "/v1/search", {"query": "x", "k": 0})]

    def round_of(n: int, offset: int) -> None:
        for i in range(n):
            method, path, body = calls[i % len(calls)]
            keyed.request(method, path, json=body, headers=AUTH)
            keyed.get(f"/no/such/route/{offset + i}", headers=AUTH)  # a new path each time: one metric label

    def series() -> int:
        return sum(len(family.samples) for family in service.metrics.registry.collect())

    round_of(200, 0)  # warm-up: caches, thread pools, first-use imports
    gc.collect()
    objects, metric_series = len(gc.get_objects()), series()
    round_of(400, 1000)
    gc.collect()
    assert len(gc.get_objects()) - objects < 200, "objects kept per request"
    assert series() == metric_series, "a metric label per request"
    assert service.batcher.queued_texts == 0


def test_health_does_not_wait_for_the_model_worker(keyed: TestClient) -> None:
    service = keyed.app.state.service  # type: ignore[attr-defined]
    release = threading.Event()
    blocker = service.batcher.submit_call(lambda: release.wait(60))  # the worker is busy until released
    answers: list[int] = []
    probe = threading.Thread(target=lambda: answers.append(keyed.get("/health").status_code))
    try:
        probe.start()
        probe.join(30)
        assert answers == [200], "/health waited for the model worker"
    finally:
        release.set()
        blocker.result(30)
        probe.join(30)


# ------------------------------------------------------------------ typed failures (in process)
def test_a_load_failure_that_is_not_an_exception_is_reported(tiny_model_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Row: a damaged sqlite file made Chroma panic (a BaseException) and the service stayed 'loading' forever."""
    monkeypatch.setattr(Service, "load", _raising(FakePanic("database disk image is malformed")))
    failures: list[BaseException] = []
    index = tmp_path / "index"
    app = create_app(ServeConfig(model=str(tiny_model_path), index=index, api_key=KEY), on_load_failed=failures.append)
    with TestClient(app, base_url=LOCAL) as c:
        r = _settled(c)
        assert r.status_code == 500 and r.json()["status"] == "failed", r.text
        assert "FakePanic: database disk image is malformed" in r.json()["error"]
        assert f"m3e-rag doctor --index {index}" in r.json()["error"]
        for path, body in (("/v1/search", {"query": "x"}), ("/v1/embeddings", {"input": "x", "model": MODEL})):
            r = c.post(path, json=body, headers=AUTH)
            assert r.status_code == 503 and r.json()["error"]["code"] == "load_failed", r.text
            assert "m3e-rag doctor --index" in r.json()["error"]["message"]
    assert len(failures) == 1 and isinstance(failures[0], FakePanic)


def test_serve_command_exits_with_the_reason_when_the_start_fails(tiny_model_path: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from m3e_rag.serve import run

    monkeypatch.setattr(Service, "load", _raising(FakePanic("malformed"), IndexDamagedError("damaged: run doctor")))
    config = ServeConfig(model=str(tiny_model_path), index=tmp_path / "index", port=_free_port())
    assert run(config, log_level="error") == 2
    assert f"FakePanic: malformed. If the index is damaged, `m3e-rag doctor --index {tmp_path / 'index'}`" in \
        capsys.readouterr().err
    assert run(config, log_level="error") == 3  # a damaged index exits as `m3e-rag doctor` does


def test_startup_failure_names_doctor_only_where_it_can_help(tmp_path: Path) -> None:
    folder = ServeConfig(index=tmp_path)
    assert "m3e-rag doctor --index" in startup_failure(folder, FakePanic("boom"))
    assert "doctor" not in startup_failure(folder, ModelLoadError("no such model"))
    assert "doctor" not in startup_failure(ServeConfig(chroma_url="http://127.0.0.1:1"), FakePanic("boom"))
    assert "doctor" not in startup_failure(ServeConfig(), RuntimeError("boom"))
    damaged = IndexDamagedError("the index is damaged; run m3e-rag doctor --index X")
    assert startup_failure(folder, damaged).count("m3e-rag doctor") == 1


def test_health_says_unhealthy_when_the_index_folder_is_removed(tiny_model_path: Path, tmp_path: Path) -> None:
    """Row: the index folder removed under a running server: 503 on every route while /health said ok."""
    index = tmp_path / "index"
    with TestClient(create_app(ServeConfig(model=str(tiny_model_path), index=index, api_key=KEY)),
                    base_url=LOCAL) as c:
        assert _settled(c).status_code == 200
        assert c.post("/v1/ingest", json={"texts": [{"text": "熊猫吃竹子。"}]}, headers=AUTH).status_code == 200
        shutil.rmtree(index)
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy", r.text
        assert str(index) in r.json()["error"] and "gone" in r.json()["error"]


# ------------------------------------------------------------------ bad input as JSON 400, failures as JSON 500
@pytest.fixture(scope="module")
def keyed(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("transport-keyed")
    (base / "root").mkdir()
    config = ServeConfig(model=str(tiny_model_path), index=base / "index", api_key=KEY, ingest_root=base / "root")
    with TestClient(create_app(config), base_url=LOCAL, raise_server_exceptions=False) as c:
        assert _settled(c).status_code == 200
        yield c


@pytest.mark.parametrize(("payload", "needle"), [
    ({"texts": [{"text": "熊猫", "metadata": {"$and": 1}}]}, "$and"),
    ({"texts": [{"text": "熊猫", "metadata": {"": 1}}]}, "empty key"),
    ({"paths": ["a\x00b.txt"]}, "NUL"),
    ({"paths": ["x" * 5000]}, "not a usable path"),
])
def test_bad_ingest_input_is_a_json_400_not_doctor(keyed: TestClient, payload: dict, needle: str) -> None:
    """Row: metadata key "$and" or "", a NUL byte or a 5,000-character path: was 503 'run doctor' or plain 500."""
    r = keyed.post("/v1/ingest", json=payload, headers=AUTH)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json", r.text
    message = r.json()["error"]["message"]
    assert needle in message and "doctor" not in message


def test_library_errors_and_unexpected_failures_are_json(keyed: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = keyed.app.state.service.pipeline  # type: ignore[attr-defined]
    body = {"texts": [{"text": "熊猫吃竹子。"}]}
    monkeypatch.setattr(pipeline, "ingest", _raising(InputError("metadata key '$x' is reserved; rename it."),
                                                     RuntimeError("boom"), FakePanic("index panicked")))
    r = keyed.post("/v1/ingest", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value", r.text
    for name in ("RuntimeError", "FakePanic"):  # Starlette's plain-text 500; uvicorn's for a BaseException
        r = keyed.post("/v1/ingest", json=body, headers=AUTH)
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
        assert r.json()["error"]["code"] == "internal_error" and name in r.json()["error"]["message"]
    assert keyed.get("/health").status_code == 200  # the server carries on


# ------------------------------------------------------------------ the live server: the command line's options
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_live_server_applies_host_check_timeouts_and_connection_limit(tiny_model_path: Path,
                                                                       tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("M3E_RAG_API_KEY", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "m3e_rag", "serve", "--model", str(tiny_model_path), "--port", str(port),
             "--header-timeout", "1", "--keep-alive-timeout", "1", "--max-connections", "20"],
            stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        def up() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return _get(port, "/health")[0] == 200
            except OSError:
                return False

        _wait(up, "the server to be ready", 180)
        status, body = _get(port, "/v1/models", host="attacker.example.com")
        assert status == 400 and json.loads(body)["error"]["code"] == "host_not_allowed"
        assert _get(port, "/v1/models", host=f"localhost:{port}")[0] == 200
        silent = socket.create_connection(("127.0.0.1", port))
        assert _closed_by_server(silent), "--header-timeout did not close a silent connection"
        kept = socket.create_connection(("127.0.0.1", port))
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        assert _closed_by_server(kept), "--keep-alive-timeout did not close an idle kept-alive connection"
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        assert _get(port, "/v1/models")[0] == 200  # served while 50 idle connections are open (limit 20)
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
