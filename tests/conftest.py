"""Shared fixtures: offline stand-in models, fresh Chroma folders, a real Chroma server.

HF_HUB_OFFLINE is set before anything imports huggingface_hub: tests never touch the network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import standins
from tests.support.net import free_port


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """Architecture-exact M3E (2 layers, 64 hidden) with random weights: for plumbing, never semantics."""
    return standins.tiny_m3e()


@pytest.fixture(scope="session")
def bilingual_model_path() -> Path:
    """The converted multilingual-e5-small stand-in: real Chinese/English semantics, 384-d."""
    return standins.bilingual_standin()


@pytest.fixture(scope="session")
def minilm_model_path() -> Path:
    """all-MiniLM-L6-v2: real English semantics, 384-d."""
    return standins.minilm_path()


@pytest.fixture(autouse=True)
def _fresh_chroma_clients() -> Iterator[None]:
    """Chroma caches one client per path in-process; clear it so each test opens its folders anew."""
    yield
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on 127.0.0.1 for the session; yields its URL."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(chroma).exists():
        pytest.fail("the `chroma` command (from the chromadb package) is not installed")
    data = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        import urllib.request

        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma server exited with {proc.returncode}: {(data / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("chroma server did not answer within 60 s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
