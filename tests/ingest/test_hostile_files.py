"""Issue 24, file rows re-run: paths swapped for links after their check, zip bombs, files rewritten
during their ingest, terminal escapes in names and text.

Each test names the row of the issue's table it re-runs and what happened before. Races are driven
by a monkeypatched function standing in for the wait (never a sleep).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from m3e_rag import RAGPipeline
from m3e_rag.cli.dispatch import main
from m3e_rag.cli.output import escape_text, print_json
from m3e_rag.ingest import ingestor as ingestor_module
from m3e_rag.ingest.loaders import FileLoader, StreamedDocument, archive, files, load_paths, textfile
from m3e_rag.ingest.loaders._common import _Skip
from m3e_rag.ingest.run import IngestRun
from m3e_rag.serve import ServeConfig, create_app
from m3e_rag.serve.routes import ingest as ingest_route

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET = "外面的秘密 SECRET-MARKER-24"
ZH = "自然语言处理是人工智能的一个重要方向，它研究如何让计算机理解人类的语言。"
EN = "Natural language processing is a field of AI, e.g. it includes 3.14 and U.S. examples. "


def _pipeline(tmp_path: Path, tiny_model_path: Path) -> RAGPipeline:
    return RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path), chunk_tokens=64, overlap_tokens=8)


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace a file (or a folder) by a symbolic link to ``target``: what an attacker does during a wait."""
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        path.unlink()
    path.symlink_to(target)


# ---------------------------------------------------------------- row: path race on /v1/ingest


@pytest.fixture(scope="module")
def served(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path, Path]]:
    base = tmp_path_factory.mktemp("hostile-serve")
    root = base / "root"
    root.mkdir()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    config = ServeConfig(model=str(tiny_model_path), index=base / "index", api_key=KEY, ingest_root=root,
                         max_wait_ms=1)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:  # a loopback Host
        deadline = time.monotonic() + 120
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.05)
        yield client, root, outside


def _secret_hits(client: TestClient) -> list[dict]:
    r = client.post("/v1/search", json={"query": "SECRET", "k": 10, "where_document": {"$contains": "SECRET-MARKER"}},
                    headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.mark.parametrize("swapped", ["file", "folder"])
def test_route_path_swapped_for_a_link_during_the_wait_is_not_read(served, monkeypatch, swapped):
    """Before: the root check ran before the lock wait and the open was not re-checked: the outside file
    was read and indexed. Now every file is checked against --ingest-root where it is opened."""
    client, root, outside = served
    (root / f"fine-{swapped}.txt").write_text(f"根目录里的普通文件（{swapped}）。", encoding="utf-8")
    if swapped == "file":
        (root / "a.txt").write_text("本来的文件。", encoding="utf-8")
        name, target = "a.txt", outside / "secret.txt"
    else:
        (root / "d").mkdir()
        (root / "d" / "secret.txt").write_text("本来的文件夹。", encoding="utf-8")
        name, target = "d", outside
    real_check = ingest_route._allowed_paths

    def check_then_swap(config, given):  # the route's check passes; the swap happens while it waits
        paths = real_check(config, given)
        _swap_for_link(root / name, target)
        return paths

    monkeypatch.setattr(ingest_route, "_allowed_paths", check_then_swap)
    r = client.post("/v1/ingest", json={"paths": [name, f"fine-{swapped}.txt"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    report = r.json()
    [skip] = report["files_skipped"]
    assert skip["path"].endswith("secret.txt" if swapped == "folder" else "a.txt")
    assert "outside the folders this ingest is confined to" in skip["reason"] and "not read" in skip["reason"]
    assert report["chunks_added"] == 1  # the fine file, nothing else
    assert _secret_hits(client) == []


@pytest.mark.parametrize("raw", ["a\x00b.txt", "x" * 5000, "sub/" + "y" * 300])
def test_route_unusable_paths_are_400_naming_the_field(served, raw):
    """Before: a NUL byte or a 5,000-character path gave a plain-text 500."""
    client, root, _ = served
    (root / "sub").mkdir(exist_ok=True)
    (root / "ok.txt").write_text("可以读的文件。", encoding="utf-8")
    r = client.post("/v1/ingest", json={"paths": ["ok.txt", raw]}, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "paths" and error["code"] == "invalid_path" and "paths[1]" in error["message"]
    assert len(error["message"]) < 600


def test_walked_file_swapped_after_the_walk_is_refused_at_open(tmp_path, monkeypatch):
    """The walk saw a plain file; it is swapped for a link out of the folder before the open (CLI policy)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "own.txt").write_text("自己的文件。", encoding="utf-8")
    (root / "late.txt").write_text("后来被换掉的文件。", encoding="utf-8")
    real_walk = files.iter_files

    def walk_then_swap(*args, **kwargs):
        for path, walked in real_walk(*args, **kwargs):
            if path.name == "late.txt":
                _swap_for_link(path, outside / "secret.txt")
            yield path, walked

    monkeypatch.setattr(files, "iter_files", walk_then_swap)
    result = load_paths([root])
    assert [d.text for d in result.documents] == ["自己的文件。"]
    [skip] = result.skipped
    assert skip.path.endswith("/late.txt")
    assert "outside the ingested folders" in skip.reason and "follow_symlinks=True" in skip.reason


def test_confine_to_refuses_what_lies_outside_once_opened(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    root = tmp_path / "root"
    root.mkdir()
    (root / "own.txt").write_text("自己的文件。", encoding="utf-8")
    (root / "alias.txt").symlink_to(root / "own.txt")  # a link inside the root is fine
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (outside / "other.txt").write_text(SECRET + "（另一个）", encoding="utf-8")
    result = load_paths([root / "alias.txt", root / "leak.txt", outside / "other.txt"], confine_to=[root])
    assert [d.text for d in result.documents] == ["自己的文件。"]
    assert sorted(Path(s.path).name for s in result.skipped) == ["leak.txt", "other.txt"]
    assert all("confined to" in s.reason for s in result.skipped)


def test_streamed_file_swapped_before_its_stream_is_read_is_refused(tmp_path, monkeypatch):
    """A large text file is read again when its stream is consumed: that open is checked too."""
    monkeypatch.setattr(textfile, "STREAM_THRESHOLD_BYTES", 1024)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET * 200, encoding="utf-8")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "big.txt").write_text(ZH * 100, encoding="utf-8")
    [doc] = list(FileLoader([root]))
    assert isinstance(doc, StreamedDocument)
    _swap_for_link(root / "big.txt", outside / "secret.txt")
    with pytest.raises(OSError, match="outside the ingested folders"):
        "".join(doc.segments())


# ---------------------------------------------------------------- row: a .docx that expands to 1 GB

_CT = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
       b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
       b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
       b'"/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
       b'document.main+xml"/></Types>')
_RELS = (b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
         b'2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
         b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
_HEAD = (b'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
         b'wordprocessingml/2006/main"><w:body>')
_PARA = b"<w:p><w:r><w:t>bomb bomb bomb bomb bomb bomb bomb bomb</w:t></w:r></w:p>"
_TAIL = b"</w:body></w:document>"


def _deflated(data: bytes, final: bool) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def docx_bomb(mib: int, declared: int | None = None, method: int = 8) -> bytes:
    """A valid .docx whose word/document.xml is ``mib`` MiB of paragraphs (about 3.6 KB per MiB on disk).

    Built by hand so that it costs nothing to make: one MiB block deflated after a full flush is
    repeated ``mib`` times. ``declared``: the size the zip headers give (a lie when not None).
    """
    block = _PARA * ((1 << 20) // len(_PARA))
    data = _deflated(_HEAD, False) + _deflated(block, False) * mib + _deflated(_TAIL, True)
    crc = zlib.crc32(_HEAD)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(_TAIL, crc)
    size = len(_HEAD) + len(block) * mib + len(_TAIL)
    members = [("[Content_Types].xml", 0, _CT, zlib.crc32(_CT), len(_CT)), ("_rels/.rels", 0, _RELS,
               zlib.crc32(_RELS), len(_RELS)), ("word/document.xml", method, data, crc, declared or size)]
    out, central = bytearray(), bytearray()
    for name, how, raw, member_crc, member_size in members:
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, how, 0, 0x21, member_crc, len(raw), member_size,
                           len(encoded), 0) + encoded + raw
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, how, 0, 0x21, member_crc, len(raw),
                               member_size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def test_docx_bomb_is_skipped_from_its_zip_directory_never_parsed(tmp_path, monkeypatch):
    """Before: a 3 MB .docx expanding to 1 GB took 7.27 GB (killed). Now the ratio in its zip directory
    refuses it before anything is decompressed; python-docx is never called."""
    docx = pytest.importorskip("docx")

    def never(*args, **kwargs):
        raise AssertionError("python-docx was handed a zip bomb")

    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_bomb(64))
    monkeypatch.setattr(docx, "Document", never)
    result = load_paths([path])
    assert result.documents == []
    [skip] = result.skipped
    assert "word/document.xml expands" in skip.reason and "over the limit of 100 times" in skip.reason
    assert "zip bomb" in skip.reason


def test_the_bomb_is_a_real_docx_refused_for_its_ratio_only(tmp_path, monkeypatch):
    """The hand-made file parses: with the ratio limit lifted, the same shape loads."""
    pytest.importorskip("docx")
    path = tmp_path / "bomb.docx"
    path.write_bytes(docx_bomb(2))
    assert "over the limit of 100 times" in load_paths([path]).skipped[0].reason
    monkeypatch.setattr(archive, "MAX_EXPANSION_RATIO", 10_000)
    [doc] = load_paths([path]).documents
    assert doc.text.startswith("bomb bomb") and len(doc.text) > 1_000_000


def test_docx_expanding_past_max_file_bytes_is_skipped_naming_the_limit(tmp_path):
    """Before: --max-file-size looked at the compressed size only."""
    docx = pytest.importorskip("docx")
    document = docx.Document()
    for i in range(400):
        document.add_paragraph(f"第{i}段：" + ZH)
    path = tmp_path / "long.docx"
    document.save(str(path))
    size = path.stat().st_size
    result = load_paths([path], max_file_bytes=size + 1000)  # the file fits; what it expands to does not
    [skip] = result.skipped
    assert "once unzipped, over the limit of" in skip.reason and f"{size + 1000:,} bytes" in skip.reason
    assert "max_file_bytes" in skip.reason
    [doc] = load_paths([path]).documents
    assert doc.text.startswith("第0段：" + ZH)


def test_streaming_check_stops_at_the_limit_if_the_directory_lied(monkeypatch):
    """With the directory checks switched off, the streaming count alone stops the bomb at the limit."""
    import io
    import zipfile

    data = docx_bomb(64)
    monkeypatch.setattr(archive, "_check_directory", lambda infos, limit: None)
    read: list[int] = []
    real_read = zipfile.ZipExtFile.read

    def read_piece(self, n=-1):
        piece = real_read(self, n)
        read.append(len(piece))
        return piece

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read_piece)
    with pytest.raises(_Skip, match=r"expands 10\d times"):
        archive.check_zip(data, limit=None)
    compressed = zipfile.ZipFile(io.BytesIO(data)).getinfo("word/document.xml").compress_size
    assert max(read) <= archive.READ_STEP_BYTES
    assert sum(read) <= archive.MAX_EXPANSION_RATIO * compressed + archive.READ_STEP_BYTES
    read.clear()
    with pytest.raises(_Skip, match="more than 3,000,000 bytes"):
        archive.check_zip(data, limit=3_000_000)
    assert sum(read) <= 3_000_000 + archive.READ_STEP_BYTES


def test_unbounded_zip_methods_are_refused(tmp_path):
    path = tmp_path / "bz.docx"
    path.write_bytes(docx_bomb(1, method=12))  # bzip2: zipfile decompresses it in unbounded pieces
    [skip] = load_paths([path]).skipped
    assert "zip method 12" in skip.reason


def test_docx_with_a_lying_header_stays_in_bounded_memory(tmp_path):
    """A directory that says 1,000 bytes for 256 MiB of XML. Before: python-docx's read decompressed all of
    it at once (+513 MiB peak, then a CRC error). Now it is read in 64 KiB pieces and refused as forged."""
    pytest.importorskip("docx")
    path = tmp_path / "lie.docx"
    path.write_bytes(docx_bomb(256, declared=1000))
    script = (
        "import json, resource, sys\n"
        "from m3e_rag.ingest.loaders import load_paths\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "result = load_paths([sys.argv[1]])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'grew_kib': after - before, 'skipped': [s.reason for s in result.skipped],\n"
        "                  'documents': len(result.documents)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["documents"] == 0
    assert ["damaged or forged zip" in r for r in measured["skipped"]] == [True]
    assert measured["grew_kib"] < 64 * 1024, measured  # generous: the whole member is 256 MiB


# ---------------------------------------------------------------- row: a file rewritten during its ingest


def _rewrite_on_flush(monkeypatch, path: Path, versions: Iterator[str], before: bool) -> None:
    """Rewrite ``path`` in place with the next version at each step's commit (before or after it)."""
    real_flush = IngestRun._flush

    def flush(self: IngestRun) -> None:
        if not before:
            real_flush(self)
        text = next(versions, None)
        if text is not None:
            with open(path, "r+b") as fh:  # in place: same inode
                fh.truncate(0)
                fh.write(text.encode("utf-8"))
        if before:
            real_flush(self)

    monkeypatch.setattr(IngestRun, "_flush", flush)


def _stored(rag: RAGPipeline, path: Path) -> dict[str, str]:
    return {r.id: r.text for r in rag.store.get(where={"source": path.resolve().as_posix()})}


def test_file_rewritten_between_read_and_commit_is_read_again(tmp_path, tiny_model_path, monkeypatch):
    """Before: rc 0, no warning, the old text stored. Now the change is seen before the commit and the
    file is read again: what is stored is the new text, and a note says so."""
    path = tmp_path / "docs" / "a.txt"
    path.parent.mkdir()
    path.write_text("旧的内容。" * 3, encoding="utf-8")
    rag = _pipeline(tmp_path, tiny_model_path)
    _rewrite_on_flush(monkeypatch, path, iter(["新的内容，长度也不同。"]), before=True)
    report = rag.ingest(path.parent)
    assert list(_stored(rag, path).values()) == ["新的内容，长度也不同。"]
    assert [n.reason for n in report.notes] == [
        "changed while it was being read: read again from the start, stored as of the second reading"
    ]
    assert report.files_skipped == []


def test_file_that_keeps_changing_is_reported_and_its_old_chunks_kept(tmp_path, tiny_model_path, monkeypatch):
    """A file rewritten at every step: nothing of a mix is stored; the chunks it had before stay."""
    monkeypatch.setattr(ingestor_module, "INGEST_STEP_CHUNKS", 4)
    path = tmp_path / "docs" / "a.txt"
    path.parent.mkdir()
    path.write_text("第一版。" + ZH * 8, encoding="utf-8")
    rag = _pipeline(tmp_path, tiny_model_path)
    rag.ingest(path.parent)
    first = _stored(rag, path)
    assert len(first) > 1
    path.write_text("第二版。" + (ZH + EN) * 8, encoding="utf-8")
    _rewrite_on_flush(monkeypatch, path, (f"第{i}版。" + (EN + ZH) * (8 + i) for i in range(3, 100)), before=False)
    report = rag.ingest(path.parent)
    [skip] = report.files_skipped
    assert "changed while it was being read, and again while it was read a second time" in skip.reason
    assert _stored(rag, path) == first  # the old chunks, exactly; what this run added was removed
    assert report.chunks_added > 0 and report.chunks_removed == report.chunks_added


def test_large_file_rewritten_mid_stream_stores_the_second_reading_whole(tmp_path, tiny_model_path, monkeypatch):
    """A streamed file whose first steps were already committed when it changed: the second reading
    replaces them all (no chunk of the first version left, none of the second missing)."""
    monkeypatch.setattr(textfile, "STREAM_THRESHOLD_BYTES", 2048)
    monkeypatch.setattr(textfile, "BLOCK_BYTES", 1000)
    monkeypatch.setattr(ingestor_module, "INGEST_STEP_CHUNKS", 4)
    path = tmp_path / "docs" / "big.txt"
    path.parent.mkdir()
    path.write_text("旧版。" + ZH * 30, encoding="utf-8")
    new = "新版。" + (EN + ZH) * 25
    rag = _pipeline(tmp_path, tiny_model_path)
    _rewrite_on_flush(monkeypatch, path, iter([new]), before=False)  # after the first step's commit
    report = rag.ingest(path.parent)
    assert [n.reason for n in report.notes] == [
        "changed while it was being read: read again from the start, stored as of the second reading"
    ]
    records = rag.store.get(where={"source": path.resolve().as_posix()})
    assert records and all(new[r.metadata["start"]:r.metadata["end"]] == r.text for r in records)
    assert sorted(r.metadata["chunk_index"] for r in records) == list(range(len(records)))
    assert report.chunks_removed > 0  # the first reading's committed chunks went as stale


# ---------------------------------------------------------------- row: terminal escapes printed raw

EVIL_NAME = "evil\x1b]0;pwned\x07.txt"
EVIL_TEXT = "\x1b[2J终端被清屏了 terminal cleared \u202eevil\u202c"


def test_cli_escapes_control_characters_in_names_and_text(tmp_path, tiny_model_path, monkeypatch, capsys):
    """Before: file names and text went to the terminal raw (an OSC retitles it, CSI 2J clears it)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / EVIL_NAME).write_text(EVIL_TEXT, encoding="utf-8")
    (folder / "\x1b[2Jempty.txt").write_bytes(b"")
    monkeypatch.setenv("M3E_MODEL", str(tiny_model_path))
    index = str(tmp_path / "idx")
    assert main(["ingest", str(folder), "--index", index]) == 0
    assert main(["search", "terminal cleared", "--index", index, "-k", "1"]) == 0
    out, err = capsys.readouterr()
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in out and raw not in err
    assert "skipped " in out and "\\x1b[2Jempty.txt: empty file" in out
    assert "evil\\x1b]0;pwned\\x07.txt" in out and "\\x1b[2J终端被清屏了" in out

    assert main(["search", "terminal cleared", "--index", index, "-k", "1", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and "\u202e" not in out
    [hit] = json.loads(out)
    assert hit["metadata"]["file_name"] == EVIL_NAME and hit["text"].startswith("\x1b[2J")  # the data is kept


def test_escape_text_and_print_json_cover_c1_bidi_and_surrogates(capsys):
    assert escape_text("a\x9b31mb\u2066c\udcffd\te") == "a\\x9b31mb\\u2066c\\udcffd\\te"
    assert escape_text("line\nnext") == "line\\nnext" and escape_text("line\nnext", newlines=True) == "line\nnext"
    data = {"name": "x\x1b\x9b\u202e\u2028\udcff.txt"}
    print_json(data)
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x9b\u202e\u2028\udcff")
    assert json.loads(out) == data


def test_cli_prints_a_hit_without_a_source(tmp_path, tiny_model_path, capsys):
    from m3e_rag import RAGPipeline
    from m3e_rag.cli import main

    index = tmp_path / "idx"
    RAGPipeline(index, model_name=str(tiny_model_path)).add_texts(["熊猫吃竹子"], metadatas=[{"lang": "zh"}])
    assert main(["search", "熊猫", "--index", str(index), "--mode", "sparse", "-k", "1"]) == 0
    assert "(no source)" in capsys.readouterr().out
