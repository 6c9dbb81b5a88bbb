"""HTML: the visible text (stdlib parser), block elements on their own lines, script/style dropped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

from m3e_rag.ingest.loaders._base import FileJob, Yielded, read_text
from m3e_rag.ingest.loaders._common import _Skip
from m3e_rag.types import Document

__all__ = ["load_html"]


def load_html(job: FileJob) -> Iterator[Yielded]:
    """Yield the page's visible text as one document, its ``<title>`` in the metadata."""
    raw, _, meta = read_text(job, declared_from_html=True)
    parser = _HTMLText()
    parser.feed(raw)
    parser.close()
    text = parser.text()
    if not text.strip():
        raise _Skip("no visible text in the HTML page")
    if parser.title:
        meta["title"] = parser.title
    yield Document(text=text, source=job.source, metadata=meta)


class _HTMLText(HTMLParser):
    """Collect the visible text of an HTML page (stdlib parser, no dependency)."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    _PARAGRAPH = frozenset(
        "p h1 h2 h3 h4 h5 h6 blockquote pre table ul ol dl section article header footer main aside "
        "nav figure hr form fieldset details".split()
    )
    _LINE = frozenset("br div li dt dd tr caption figcaption summary address option".split())
    _CELL = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._in_title = False
        self._title: list[str] = []

    @property
    def title(self) -> str:
        """The page ``<title>``, whitespace collapsed."""
        return " ".join("".join(self._title).split())

    def _break(self, newlines: int) -> None:
        """End the current line with at most ``newlines`` line breaks in a row."""
        while self._parts and self._parts[-1].endswith((" ", "\t")) and not self._pre_depth:
            self._parts[-1] = self._parts[-1].rstrip(" \t")
            if not self._parts[-1]:
                self._parts.pop()
        if not self._parts:
            return
        tail = "".join(self._parts[-3:])
        have = len(tail) - len(tail.rstrip("\n"))
        if have < newlines:
            self._parts.append("\n" * (newlines - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track skipped/preformatted regions and break lines at block elements."""
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._PARAGRAPH:
            self._break(2)
        elif tag in self._LINE:
            self._break(1)
        elif tag in self._CELL and self._parts and not self._parts[-1].endswith(("\n", "\t")):
            self._parts.append("\t")
        if tag == "pre":
            self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        """Close regions opened in :meth:`handle_starttag`."""
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self._PARAGRAPH:
            self._break(2)
        elif tag in self._LINE and tag != "br":
            self._break(1)
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        """Keep text outside skipped regions; collapse whitespace outside ``<pre>``."""
        if self._in_title:
            self._title.append(data)
            return
        if self._skip_depth:
            return
        if self._pre_depth:
            self._parts.append(data)
            return
        collapsed = re.sub(r"\s+", " ", data)
        if not self._parts or self._parts[-1].endswith(("\n", "\t", " ")):
            collapsed = collapsed.lstrip(" ")
        if collapsed:
            self._parts.append(collapsed)

    def text(self) -> str:
        """Return the collected text."""
        return "".join(self._parts).strip()
