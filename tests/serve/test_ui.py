"""The ``/ui`` playground's server side, in process: its files and headers, and the routes it reads.

The page itself is driven in a real browser in test_ui_browser.py; these tests need no browser:
the Content-Security-Policy and nosniff headers, files that load nothing from outside the server and
never write data as HTML, and ``/v1/index``, ``/v1/neighbours``, ``/v1/terms`` with their errors.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from m3e_rag.serve import ServeConfig, create_app
from m3e_rag.serve.routes.ui import CSP

KEY = "ui-key-789"
AUTH = {"Authorization": f"Bearer {KEY}"}
LOCAL = "http://127.0.0.1"
#: One document long enough for several chunks (256 tokens each, the tiny model reads Chinese per character).
LONG = "".join(f"第{i}段：大熊猫在四川的竹林里生活，每天要吃很多竹子。" for i in range(60))


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service did not become ready")


@pytest.fixture(scope="module")
def keyed(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A keyed server with an index holding a long document and two short ones."""
    base = tmp_path_factory.mktemp("ui")
    config = ServeConfig(model=str(tiny_model_path), index=base / "index", api_key=KEY, max_wait_ms=1)
    with TestClient(create_app(config), base_url=LOCAL) as c:
        _wait_ready(c)
        texts = [{"text": LONG, "source": "long.md", "metadata": {"lang": "zh"}},
                 {"text": "The Eiffel Tower is in Paris.", "source": "tower.md", "metadata": {"lang": "en"}},
                 {"text": "长城是古代的防御工程。", "source": "wall.md"}]
        r = c.post("/v1/ingest", json={"texts": texts}, headers=AUTH)
        assert r.status_code == 200, r.text
        yield c


@pytest.fixture(scope="module")
def bare(tiny_model_path: Path) -> Iterator[TestClient]:
    """No key, no index."""
    with TestClient(create_app(ServeConfig(model=str(tiny_model_path))), base_url=LOCAL) as c:
        _wait_ready(c)
        yield c


def _ui_text(name: str) -> str:
    return resources.files("m3e_rag.serve").joinpath("ui", name).read_text(encoding="utf-8")


# ------------------------------------------------------------------ the files
@pytest.mark.parametrize(("path", "media"), [("/ui", "text/html"), ("/ui/index.html", "text/html"),
                                             ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")])
def test_ui_files_are_served_with_csp_and_nosniff_without_a_key(bare: TestClient, keyed: TestClient, path: str,
                                                               media: str) -> None:
    for client in (bare, keyed):  # the page holds no data: it is served without the key, as /docs is
        r = client.get(path)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP


def test_ui_answers_only_its_files_and_its_host(bare: TestClient) -> None:
    r = bare.get("/ui/app.py")
    assert r.status_code == 404 and "/ui" in r.json()["error"]["message"]
    assert bare.get("/ui/../serve/app.py").status_code == 404
    r = bare.get("/ui", headers={"Host": "attacker.example.com"})  # DNS rebinding: refused as for the API
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"


def test_ui_files_load_nothing_from_outside_and_write_no_html() -> None:
    html, js, css = _ui_text("index.html"), _ui_text("app.js"), _ui_text("app.css")
    for text in (html, js, css):
        assert not re.search(r"https?:|//[a-z0-9]", re.sub(r"^\s*//.*$|/\*.*?\*/", "", text, flags=re.M | re.S),
                             re.I), "a remote URL"
        assert "@import" not in text and "@font-face" not in text
    # the CSP forbids inline code: every script is a same-origin file, no inline style or handler
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/ui/app.js" defer></script>'[:-9]]
    assert "<style" not in html and not re.search(r"\sstyle=|\son[a-z]+=", html)
    code = re.sub(r"^\s*//.*$", "", js, flags=re.M)  # the comments may name what the code must not do
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute('style'", ".style."):
        assert sink not in code, f"app.js uses {sink}"
    assert "isComposing" in js and "sessionStorage" in js and "Bearer" in js


# ------------------------------------------------------------------ /v1/index
def test_index_route_describes_the_index(keyed: TestClient, bare: TestClient) -> None:
    assert keyed.get("/v1/index").status_code == 401  # index text and names: the key, as search
    r = keyed.get("/v1/index", headers=AUTH)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["sources"] == 3 and info["source_names"] == ["long.md", "tower.md", "wall.md"]
    assert info["chunks"] > 3 and info["dim"] > 0 and info["window"] > 0
    assert info["chunker"]["max_tokens"] == 256 and info["sparse"] is True and info["reranker"] is None
    r = keyed.get("/v1/index?verbose=1", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "verbose"
    r = bare.get("/v1/index")
    assert r.status_code == 404 and r.json()["error"]["code"] == "index_not_configured"


# ------------------------------------------------------------- /v1/neighbours
def _long_chunks(client: TestClient) -> list[dict]:
    r = client.post("/v1/search", json={"query": "大熊猫 竹子", "k": 50, "mode": "sparse",
                                        "where": {"source": "long.md"}}, headers=AUTH)
    assert r.status_code == 200, r.text
    return sorted(r.json()["data"], key=lambda h: h["metadata"]["chunk_index"])


def test_neighbours_reads_the_chunks_around_a_hit_in_order(keyed: TestClient) -> None:
    chunks = _long_chunks(keyed)
    assert len(chunks) >= 4
    middle = chunks[2]
    r = keyed.post("/v1/neighbours", json={"id": middle["id"], "around": 1}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == middle["id"] and body["source"] == "long.md"
    assert [c["chunk_index"] for c in body["chunks"]] == [1, 2, 3]
    for c in body["chunks"]:  # each chunk is the exact slice of its document at its span
        assert LONG[c["start"]:c["end"]] == c["text"]
    r = keyed.post("/v1/neighbours", json={"id": chunks[0]["id"], "around": 10}, headers=AUTH)
    assert [c["chunk_index"] for c in r.json()["chunks"]] == list(range(len(chunks)))
    r = keyed.post("/v1/neighbours", json={"id": middle["id"], "around": 0}, headers=AUTH)
    assert [c["id"] for c in r.json()["chunks"]] == [middle["id"]]


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [({"id": "no-such-chunk"}, 404, "id"), ({"id": "x", "around": 11}, 400, "around"),
     ({"id": "x", "around": -1}, 400, "around"), ({"id": " "}, 400, "id"), ({"id": "x", "before": 2}, 422, "before"),
     ({}, 422, "id")],
)
def test_neighbours_errors_name_the_field(keyed: TestClient, payload: dict, status: int, param: str) -> None:
    r = keyed.post("/v1/neighbours", json=payload, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_neighbours_needs_the_key_and_an_index(keyed: TestClient, bare: TestClient) -> None:
    assert keyed.post("/v1/neighbours", json={"id": "x"}).status_code == 401
    r = bare.post("/v1/neighbours", json={"id": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "index_not_configured"


# ------------------------------------------------------------------ /v1/terms
def test_terms_are_the_bm25_terms_of_the_query(keyed: TestClient, bare: TestClient) -> None:
    r = keyed.post("/v1/terms", json={"query": "大熊猫吃什么 Eiffel Tower 的"}, headers=AUTH)
    assert r.status_code == 200, r.text
    terms = r.json()["terms"]
    assert "熊猫" in terms and "eiffel" in terms and "tower" in terms
    assert "的" not in terms and len(terms) == len(set(terms))  # stopwords out, each term once
    assert bare.post("/v1/terms", json={"query": "长城"}).json()["terms"] == ["长城"]  # no index needed
    r = keyed.post("/v1/terms", json={"query": "  "}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"
    assert keyed.post("/v1/terms", json={"query": "长城"}).status_code == 401


# ------------------------------------------------------- the browser tests' own guard
def test_browser_tests_fail_in_ci_when_chromium_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.serve import test_ui_browser as browser

    monkeypatch.setattr(browser, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("CI", "true")  # CI must run them: a missing browser is a failure, not a skip
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        browser._need_browser()
    monkeypatch.delenv("CI")  # elsewhere they skip, saying what is missing
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium"):
        browser._need_browser()
