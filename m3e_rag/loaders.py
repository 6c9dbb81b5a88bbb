"""Load files and in-memory texts into :class:`~m3e_rag.types.Document` s.

Formats: ``.txt``/``.md`` (text as is), ``.html``/``.htm`` (visible text; script and style
dropped), ``.pdf`` (pypdf, one document per page), ``.docx`` (python-docx), ``.json`` (an object
or a list of objects), ``.jsonl``, ``.csv``/``.tsv``. Any other extension is read as text when it
decodes as text. A file that cannot be read is never an exception: it lands in
:attr:`LoadResult.skipped` with the reason (binary, empty, unreadable, missing extra, bad JSON...).

Design: **``source`` is always the file** (its absolute POSIX path), for every document a file
yields, so that replacing or deleting a file in an index (``delete(source=path)``) catches all of
it. A PDF gives one document per page with ``page`` (1-based) in the metadata; JSON/JSONL give one
document per record with ``record`` (0-based index in the list, or 0-based line number in JSONL);
CSV gives one per row with ``row`` (0-based data row). A record or row that has no usable text is
reported in ``skipped`` as ``"{path}#{index}"``.

Every document's metadata holds ``source``, ``file_name``, ``file_type`` (extension, lower case,
no dot) and, for decoded text formats, ``encoding``; all values are str/int/float/bool, never None.

Encoding detection for text: a BOM (UTF-8, UTF-16, UTF-32), strict UTF-8, UTF-8 with a few stray
bad bytes, the ``<meta charset>`` of an HTML page, then a Chinese check (strict GB18030 and Big5
decodes scored by their share of common Chinese characters: reliable even for a 10-character
file, where statistical detectors guess wrong), a Western-European check, and last
charset-normalizer's best guess among sensible candidates. GBK and GB2312 are read as GB18030,
their superset.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from m3e_rag.errors import InputError, MissingExtraError
from m3e_rag.types import Document, Metadata

__all__ = ["LoadResult", "SkippedFile", "load_paths", "load_texts", "decode_bytes"]


@dataclass(frozen=True)
class SkippedFile:
    """A file (or one record of a file, ``"{path}#{index}"``) that produced no document.

    Attributes:
        path: absolute POSIX path of the file, with ``#index`` for a JSON/JSONL record or CSV row.
        reason: why it was skipped, and what to do about it where something can be done.

    """

    path: str
    reason: str


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_paths` found.

    Attributes:
        documents: the loaded documents, in file order (folders walked in sorted order).
        skipped: files, records and rows that yielded no document, with the reason.
        files_seen: files that passed the include/exclude filters and were opened or tried.

    """

    documents: list[Document] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files_seen: int = 0


class _Skip(Exception):
    """Internal: the current file (or record) cannot be loaded; the message is the reason."""


# ---------------------------------------------------------------------- public entry points


def load_paths(
    paths: Sequence[str | os.PathLike[str]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    text_field: str = "text",
    text_column: str = "text",
) -> LoadResult:
    """Load files and folders (walked recursively) into documents.

    Folders are walked in sorted order; files and folders whose name starts with ``.`` are left
    out. ``include``/``exclude`` are glob patterns (``fnmatch``, case-sensitive) matched against
    each file's path relative to the folder given (``*.md``, ``**/*.md``, ``docs/**``); a pattern
    without ``/`` also matches the bare file name, and an excluded folder is not entered. Files
    named directly in ``paths`` are always loaded, whatever the patterns say.

    Args:
        paths: files and folders to load (a single path is accepted too).
        include: load only files matching one of these patterns (``None``: all files).
        exclude: leave out files (and folders) matching one of these patterns.
        text_field: the key holding the text in JSON and JSONL records.
        text_column: the column holding the text in CSV/TSV files.

    Returns:
        The documents, the skipped files with reasons, and the number of files tried.

    Raises:
        InputError: a path does not exist, or an argument has the wrong type.

    """
    path_list = _as_path_list(paths)
    include_patterns = _as_patterns(include, "include")
    exclude_patterns = _as_patterns(exclude, "exclude")
    for name, value in (("text_field", text_field), ("text_column", text_column)):
        if not isinstance(value, str) or not value:
            raise InputError(f"{name} must be a non-empty string naming the field that holds the text")
    missing = [p for p in path_list if not p.exists()]
    if missing:
        raise InputError(
            f"path does not exist: '{missing[0]}' (working directory: {Path.cwd()}); check the spelling"
        )

    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    seen: set[Path] = set()
    files_seen = 0
    for root in path_list:
        if root.is_dir():
            files = _walk(root, include_patterns, exclude_patterns, skipped)
        else:
            files = [root]
        for file in files:
            key = _identity(file)
            if key in seen:
                continue
            seen.add(key)
            files_seen += 1
            docs, skips = _load_file(file, text_field, text_column)
            documents.extend(docs)
            skipped.extend(skips)
    return LoadResult(documents=documents, skipped=skipped, files_seen=files_seen)


def load_texts(
    texts: Sequence[str],
    sources: Sequence[str] | None = None,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[Document]:
    """Wrap in-memory texts as documents.

    Args:
        texts: the texts, one document each (empty texts are kept; they yield no chunk).
        sources: a source name per text; by default ``"text:<first 16 hex of sha1(text)>"``,
            stable across runs so re-ingesting the same text replaces it.
        metadatas: metadata per text (``None`` entries allowed). Values must be str, int, float or
            bool; keys whose value is ``None`` are dropped. ``source`` is set to the source.

    Returns:
        One :class:`~m3e_rag.types.Document` per text, in order.

    Raises:
        InputError: ``texts`` is a bare string or holds a non-string, a length does not match,
            or a metadata value is not a scalar.

    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InputError("texts must be a list of strings (wrap a single text in a list)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is a {type(text).__name__}, not a str; pass decoded text")
    if sources is not None:
        if isinstance(sources, str) or len(sources) != len(texts):
            raise InputError(
                f"sources must be a list with one name per text ({len(texts)}); "
                f"got {'a str' if isinstance(sources, str) else len(sources)}"
            )
        for i, src in enumerate(sources):
            if not isinstance(src, str) or not src:
                raise InputError(f"sources[{i}] must be a non-empty string; got {src!r}")
    if metadatas is not None and len(metadatas) != len(texts):
        raise InputError(f"metadatas must have one entry per text ({len(texts)}); got {len(metadatas)}")
    documents: list[Document] = []
    for i, text in enumerate(texts):
        source = sources[i] if sources is not None else _text_source(text)
        meta = _clean_metadata(metadatas[i] if metadatas is not None else None, f"metadatas[{i}]")
        meta["source"] = source
        documents.append(Document(text=text, source=source, metadata=meta))
    return documents


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode the bytes of a text file, detecting the encoding.

    Args:
        data: the raw bytes.
        declared: an encoding the container declares (an HTML ``<meta charset>``), tried after
            UTF-8 fails.

    Returns:
        ``(text, encoding)``, the encoding as a Python codec name (``"utf-8"``, ``"utf-8-sig"``,
        ``"utf-16-le"``, ``"gb18030"``, ``"big5"``, ``"cp1252"``...).

    Raises:
        InputError: the bytes are not text (NUL bytes, or no candidate encoding decodes them).

    """
    try:
        return _decode(data, declared)
    except _Skip as exc:
        raise InputError(f"{exc}; this is not a text file") from None


# ---------------------------------------------------------------------- argument helpers


def _as_path_list(paths: Any) -> list[Path]:
    """Normalize ``paths`` (a sequence, or one path) into a list of :class:`Path`."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    if not isinstance(paths, Iterable):
        raise InputError(f"paths must be a list of files or folders; got {type(paths).__name__}")
    out: list[Path] = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise InputError(f"each path must be a str or Path; got {type(p).__name__}")
        out.append(Path(p))
    return out


def _as_patterns(patterns: Sequence[str] | None, name: str) -> list[str] | None:
    """Normalize glob patterns (one pattern string is accepted too)."""
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    for p in items:
        if not isinstance(p, str) or not p:
            raise InputError(f"{name} patterns must be non-empty strings such as '*.md'; got {p!r}")
    return [p.replace("\\", "/").removeprefix("./") for p in items]


def _text_source(text: str) -> str:
    """Stable default source for an in-memory text."""
    return "text:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _clean_metadata(meta: Mapping[str, Any] | None, where: str) -> Metadata:
    """Copy metadata, dropping ``None`` values and refusing values Chroma cannot store."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InputError(f"{where} must be a dict; got {type(meta).__name__}")
    out: Metadata = {}
    for key, value in meta.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise InputError(f"{where} has a non-string key {key!r}; metadata keys must be strings")
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(
                f"{where}[{key!r}] is a {type(value).__name__}; metadata values must be str, int, float "
                "or bool (convert it, e.g. to a JSON string)"
            )
        out[key] = value
    return out


# ---------------------------------------------------------------------- walking


def _identity(path: Path) -> Path:
    """Return a key that is the same for two spellings of one file."""
    try:
        return path.resolve()
    except OSError:
        return Path(os.path.abspath(path))


def _posix(path: str | os.PathLike[str]) -> str:
    """Absolute POSIX form of a path (symlinks kept as given)."""
    return Path(os.path.abspath(path)).as_posix()


def _match(rel: str, name: str, pattern: str) -> bool:
    """Whether a relative POSIX path matches a glob pattern (see :func:`load_paths`)."""
    if "/" not in pattern.rstrip("/"):
        return fnmatchcase(name, pattern) or fnmatchcase(rel, pattern)
    variants = {pattern, pattern.replace("/**/", "/")}
    while pattern.startswith("**/"):
        pattern = pattern[3:]
        variants.update({pattern, pattern.replace("/**/", "/")})
    return any(fnmatchcase(rel, v) for v in variants)


def _walk(
    root: Path, include: list[str] | None, exclude: list[str] | None, skipped: list[SkippedFile]
) -> list[Path]:
    """Files under ``root`` passing the filters, in sorted order (hidden entries left out)."""

    def on_error(err: OSError) -> None:
        reason = f"cannot read folder: {err.strerror or err}"
        skipped.append(SkippedFile(_posix(err.filename or root), reason))

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            rel = prefix + d
            if exclude and any(_match(rel, d, p) or _match(rel + "/", d, p) for p in exclude):
                continue
            kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            rel = prefix + f
            if include is not None and not any(_match(rel, f, p) for p in include):
                continue
            if exclude and any(_match(rel, f, p) for p in exclude):
                continue
            found.append(Path(dirpath) / f)
    return found


# ---------------------------------------------------------------------- per-file loading


def _load_file(path: Path, text_field: str, text_column: str) -> tuple[list[Document], list[SkippedFile]]:
    """Load one file; never raises for a bad file."""
    source = _posix(path)
    suffix = path.suffix.lower().lstrip(".")
    base: Metadata = {"source": source, "file_name": path.name, "file_type": suffix}
    try:
        if not path.is_file():
            raise _Skip("not a regular file")
        loader = _LOADERS.get(suffix, _load_text)
        docs, skips = loader(path, source, base, text_field, text_column)
    except _Skip as exc:
        return [], [SkippedFile(source, str(exc))]
    except OSError as exc:
        return [], [SkippedFile(source, f"cannot read file: {exc.strerror or exc}")]
    except Exception as exc:  # noqa: BLE001 - a malformed file must not stop a whole ingest
        return [], [SkippedFile(source, f"could not parse file ({type(exc).__name__}: {exc})")]
    if not docs and not skips:
        skips = [SkippedFile(source, "empty file (no text)")]
    return docs, skips


def _read_text(path: Path, declared_from_html: bool = False) -> tuple[str, str]:
    """Read and decode a text file, or raise :class:`_Skip` (binary, empty)."""
    data = path.read_bytes()
    if not data.strip():
        raise _Skip("empty file")
    declared = _html_charset(data) if declared_from_html else None
    text, encoding = _decode(data, declared)
    if not text.strip():
        raise _Skip("empty file (whitespace only)")
    return text, encoding


_Loaded = tuple[list[Document], list[SkippedFile]]


def _load_text(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """Plain text and Markdown: the decoded text as is."""
    text, encoding = _read_text(path)
    return [Document(text=text, source=source, metadata={**base, "encoding": encoding})], []


def _load_html(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """HTML: visible text, block elements on their own lines, script/style dropped."""
    raw, encoding = _read_text(path, declared_from_html=True)
    parser = _HTMLText()
    parser.feed(raw)
    parser.close()
    text = parser.text()
    if not text.strip():
        raise _Skip("no visible text in the HTML page")
    meta: Metadata = {**base, "encoding": encoding}
    if parser.title:
        meta["title"] = parser.title
    return [Document(text=text, source=source, metadata=meta)], []


def _record_text(record: Any, text_field: str) -> str:
    """Return the text of one JSON record, or raise :class:`_Skip` saying why there is none."""
    if isinstance(record, str):
        value: Any = record
    elif isinstance(record, Mapping):
        if text_field not in record:
            keys = ", ".join(sorted(map(str, record))[:8])
            raise _Skip(f"no '{text_field}' field (fields: {keys}); pass text_field= to pick one")
        value = record[text_field]
    else:
        raise _Skip(f"record is a {type(record).__name__}, not an object with a '{text_field}' field")
    if not isinstance(value, str):
        raise _Skip(f"'{text_field}' is a {type(value).__name__}, not a string")
    if not value.strip():
        raise _Skip(f"'{text_field}' is empty")
    return value


def _records_to_documents(
    records: Iterable[tuple[int, Any]], source: str, base: Metadata, key: str, field_name: str
) -> _Loaded:
    """Documents for ``(index, record)`` pairs; unusable records become ``#index`` skips."""
    docs: list[Document] = []
    skips: list[SkippedFile] = []
    for index, record in records:
        try:
            text = _record_text(record, field_name)
        except _Skip as exc:
            skips.append(SkippedFile(f"{source}#{index}", str(exc)))
            continue
        docs.append(Document(text=text, source=source, metadata={**base, key: index}))
    return docs, skips


def _load_json(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """JSON: one object, or a list of objects (or strings); each record's ``text_field``."""
    raw, encoding = _read_text(path)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _Skip(f"invalid JSON: {exc}") from None
    meta = {**base, "encoding": encoding}
    if isinstance(data, list):
        return _records_to_documents(enumerate(data), source, meta, "record", text_field)
    if isinstance(data, Mapping):
        try:
            text = _record_text(data, text_field)
        except _Skip as exc:
            raise _Skip(f"the JSON object has {exc}") from None
        return [Document(text=text, source=source, metadata={**meta, "record": 0})], []
    raise _Skip(f"JSON top level is a {type(data).__name__}; expected an object or a list of objects")


def _load_jsonl(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """JSON Lines: one record per non-blank line; ``record`` is the 0-based line number."""
    raw, encoding = _read_text(path)
    records: list[tuple[int, Any]] = []
    bad: list[SkippedFile] = []
    for index, line in enumerate(raw.splitlines()):
        if not line.strip():
            continue
        try:
            records.append((index, json.loads(line)))
        except json.JSONDecodeError as exc:
            bad.append(SkippedFile(f"{source}#{index}", f"invalid JSON on line {index + 1}: {exc.msg}"))
    docs, skips = _records_to_documents(records, source, {**base, "encoding": encoding}, "record", text_field)
    return docs, sorted([*bad, *skips], key=lambda s: int(s.path.rsplit("#", 1)[1]))


def _load_csv(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """CSV/TSV with a header row: each row's ``text_column``; ``row`` is the 0-based data row."""
    raw, encoding = _read_text(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delimiter)
        columns = reader.fieldnames or []
        if text_column not in columns:
            shown = ", ".join(str(c) for c in columns[:8])
            raise _Skip(f"no '{text_column}' column (columns: {shown}); pass text_column= to pick one")
        rows = [(i, {text_column: row.get(text_column) or ""}) for i, row in enumerate(reader)]
    except csv.Error as exc:
        raise _Skip(f"invalid CSV: {exc}") from None
    return _records_to_documents(rows, source, {**base, "encoding": encoding}, "row", text_column)


def _load_pdf(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """PDF: one document per page with text, ``page`` 1-based, all with the file as source."""
    try:
        from pypdf import PdfReader
    except ImportError:
        raise _Skip(str(MissingExtraError("pypdf", "pdf", "Reading PDF files"))) from None
    reader = PdfReader(str(path))
    if reader.is_encrypted:
        try:
            unlocked = bool(reader.decrypt(""))
        except Exception:  # noqa: BLE001 - pypdf raises several types (and needs extras for AES)
            unlocked = False
        if not unlocked:
            raise _Skip("encrypted PDF (password protected); decrypt it first")
    docs: list[Document] = []
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        if text.strip():
            docs.append(Document(text=text, source=source, metadata={**base, "page": number}))
    if not docs:
        raise _Skip("no extractable text in the PDF (a scanned PDF needs OCR first)")
    return docs, []


def _load_docx(path: Path, source: str, base: Metadata, text_field: str, text_column: str) -> _Loaded:
    """DOCX: paragraphs (and table rows, cells tab-separated) joined by newlines."""
    try:
        import docx
    except ImportError:
        raise _Skip(str(MissingExtraError("python-docx", "docx", "Reading Word (.docx) files"))) from None
    document = docx.Document(str(path))
    lines: list[str] = []
    blocks = document.iter_inner_content() if hasattr(document, "iter_inner_content") else document.paragraphs
    for block in blocks:
        if hasattr(block, "rows"):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    if not cells or cell.text != cells[-1]:  # merged cells repeat
                        cells.append(cell.text)
                lines.append("\t".join(cells))
        else:
            lines.append(block.text)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise _Skip("empty document (no text in the .docx)")
    meta: Metadata = dict(base)
    title = getattr(document.core_properties, "title", None)
    if isinstance(title, str) and title.strip():
        meta["title"] = title.strip()
    return [Document(text=text, source=source, metadata=meta)], []


_LOADERS = {
    "txt": _load_text,
    "md": _load_text,
    "markdown": _load_text,
    "html": _load_html,
    "htm": _load_html,
    "xhtml": _load_html,
    "json": _load_json,
    "jsonl": _load_jsonl,
    "ndjson": _load_jsonl,
    "csv": _load_csv,
    "tsv": _load_csv,
    "pdf": _load_pdf,
    "docx": _load_docx,
}


# ---------------------------------------------------------------------- HTML


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


def _html_charset(data: bytes) -> str | None:
    """Return the charset an HTML page declares in its first 4 KiB, if any."""
    m = re.search(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", data[:4096], re.IGNORECASE)
    return m.group(1).decode("ascii", "ignore") if m else None


# ---------------------------------------------------------------------- encoding detection

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: Encodings charset-normalizer may choose from (cp1250 left out: it wins French and German).
_CANDIDATES = [
    "gb18030", "big5", "cp950", "cp1252", "latin_1", "iso8859_15", "cp1251", "koi8_r", "cp1253",
    "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874", "shift_jis", "cp932", "euc_jp",
    "euc_kr", "cp949",
]  # fmt: skip
_GB_ALIASES = frozenset("gbk gb2312 gb_2312 gb_2312_80 cp936 x_gbk euc_cn gb18030".split())
_COMMON_PUNCTUATION = frozenset("，。、；：？！“”‘’（）《》〈〉「」『』【】…—·～　﹏・")
_SAMPLE_CHARS = 20_000
_MIN_CHINESE_SCORE = 0.6


def _normalize_codec(name: str) -> str | None:
    """Map a declared or guessed encoding to a Python codec name; the GBK family becomes GB18030."""
    key = name.strip().lower().replace("-", "_")
    if key in _GB_ALIASES:
        return "gb18030"
    try:
        return codecs.lookup(key).name
    except LookupError:
        return None


@lru_cache(maxsize=1)
def _common_chinese() -> frozenset[str]:
    """Return the common characters: GB2312 level 1 (simplified) and Big5 level 1 (traditional)."""
    chars: set[str] = set()
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                chars.add(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    for lead in range(0xA4, 0xC7):
        for trail in (*range(0x40, 0x7F), *range(0xA1, 0xFF)):
            if lead == 0xC6 and trail > 0x7E:
                break
            try:
                chars.add(bytes((lead, trail)).decode("big5"))
            except UnicodeDecodeError:
                pass
    return frozenset(chars | _COMMON_PUNCTUATION)


def _chinese_score(text: str) -> float:
    """Share of non-ASCII, non-space characters that are common Chinese characters or punctuation."""
    common = _common_chinese()
    total = hits = 0
    for ch in text[:_SAMPLE_CHARS]:
        if ch.isascii() or ch.isspace():
            continue
        total += 1
        if ch in common or 0xFF01 <= ord(ch) <= 0xFF5E:
            hits += 1
    return hits / total if total else 0.0


def _junk_ratio(text: str) -> float:
    """Share of control characters and U+FFFD in a sample: high means binary, not text."""
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return 0.0
    junk = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return junk / len(sample)


def _looks_western(text: str) -> bool:
    """Whether a cp1252 decode reads like Western European text (accents inside ASCII words)."""
    sample = text[:_SAMPLE_CHARS]
    letters = [ch for ch in sample if ch.isalpha()]
    high = sum(1 for ch in letters if not ch.isascii())
    if high * 2 > len(letters) or sample.isascii():
        return False  # mostly accented letters: a Cyrillic/Greek code page read as cp1252
    allowed = set("€£¥©®°±§¶·«»–—‘’“”…•™¢¿¡ªº×÷")
    return all(ch.isascii() or ch.isspace() or ("\u00c0" <= ch <= "\u00ff") or ch in allowed for ch in sample)


def _decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode text bytes (see the module docstring for the order); raise :class:`_Skip` if binary."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            text = data[len(bom) :].decode(codec.replace("utf-8-sig", "utf-8"), errors="replace")
            return text, codec
    if b"\x00" in data[:8192]:
        raise _Skip("binary file (contains NUL bytes)")
    try:
        return _checked(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", errors="replace")
    bad = lenient.count("\ufffd")
    good = sum(1 for ch in lenient[:_SAMPLE_CHARS] if not ch.isascii() and ch != "\ufffd")
    if good >= 20 * bad:  # UTF-8 text with a few broken bytes (a cut or corrupted file)
        return lenient, "utf-8"
    if declared:
        declared_codec = _normalize_codec(declared)
        if declared_codec and not declared_codec.startswith("utf"):
            try:
                return _checked(data.decode(declared_codec)), declared_codec
            except (UnicodeDecodeError, _Skip):
                pass
    best: tuple[float, str, str] | None = None
    for codec in ("gb18030", "big5", "cp950"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        score = _chinese_score(text)
        if best is None or score > best[0]:
            best = (score, codec, text)
    if best is not None and best[0] >= _MIN_CHINESE_SCORE and _junk_ratio(best[2]) < 0.03:
        return best[2], best[1]
    try:
        western = data.decode("cp1252")
    except UnicodeDecodeError:
        western = ""
    if western and _looks_western(western) and _junk_ratio(western) < 0.03:
        return western, "cp1252"
    return _charset_normalizer_guess(data)


def _checked(text: str) -> str:
    """Return ``text`` unless it is mostly control characters (binary data that decoded)."""
    if _junk_ratio(text) >= 0.03:
        raise _Skip("binary file (control characters)")
    return text


def _charset_normalizer_guess(data: bytes) -> tuple[str, str]:
    """Last resort: charset-normalizer's best guess among sensible candidates."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # a core dependency; only a broken install lacks it
        raise _Skip("binary file (not UTF-8 or Chinese text, and charset-normalizer is missing)") from None
    match = from_bytes(data, cp_isolation=_CANDIDATES).best()
    if match is None:
        raise _Skip("binary file (not decodable as text)")
    codec = _normalize_codec(match.encoding) or str(match.encoding)
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        text = str(match)
    if _junk_ratio(text) >= 0.03:
        raise _Skip("binary file (control characters)")
    return text, codec
