"""Tests for m3e_rag.ingest.loaders: formats, encodings, skips, walking and filters."""

from __future__ import annotations

import codecs
import json
import os
import sys
from pathlib import Path

import pytest

from m3e_rag.errors import InputError
from m3e_rag.ingest.loaders import LoadResult, SkippedFile, decode_bytes, load_paths, load_texts
from m3e_rag.types import Document

SIMPLIFIED = [
    "我们今天去公园散步，天气很好。",
    "这本书非常有意思，推荐你读一读。",
    "欢迎使用本系统，如有问题请联系管理员。",
    "数据库连接失败，请稍后重试。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "请把会议记录发给我，谢谢！",
    "人工智能正在改变我们的生活方式。",
    "版本 2.0 发布了，支持 Python 3.12 和 Windows 系统。",
    "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？",
    "价格：人民币三百元整（含税）。",
]
TRADITIONAL = [
    "我們今天去公園散步，天氣很好。",
    "這本書非常有意思，推薦你讀一讀。",
    "歡迎使用本系統，如有問題請聯絡管理員。",
    "資料庫連線失敗，請稍後重試。",
    "臺北是臺灣最大的城市，人口眾多。",
    "請把會議記錄寄給我，謝謝！",
    "人工智慧正在改變我們的生活方式。",
]


def posix(path: Path) -> str:
    """The form loaders use for sources: absolute, POSIX, symlinks not resolved."""
    return Path(os.path.abspath(path)).as_posix()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def load_one(path: Path, **kwargs) -> Document:
    result = load_paths([path], **kwargs)
    assert result.skipped == [], result.skipped
    assert len(result.documents) == 1
    return result.documents[0]


def assert_scalar_metadata(docs: list[Document]) -> None:
    for doc in docs:
        for key, value in doc.metadata.items():
            assert isinstance(key, str)
            assert value is not None
            assert isinstance(value, (str, int, float, bool)), (key, value)


# ---------------------------------------------------------------------- encodings


@pytest.mark.parametrize("text", SIMPLIFIED)
@pytest.mark.parametrize("encoding", ["gbk", "gb2312", "gb18030"])
def test_short_gbk_files_decode_as_gb18030(tmp_path, text, encoding):
    data = text.encode(encoding)
    assert len(data) <= 100
    doc = load_one(write(tmp_path / "a.txt", data))
    assert doc.text == text
    assert doc.metadata["encoding"] == "gb18030"


@pytest.mark.parametrize("text", TRADITIONAL)
def test_short_big5_files(tmp_path, text):
    doc = load_one(write(tmp_path / "a.txt", text.encode("big5")))
    assert doc.text == text
    assert doc.metadata["encoding"] in {"big5", "cp950"}


@pytest.mark.parametrize("text", TRADITIONAL)
def test_traditional_chinese_in_gb18030(tmp_path, text):
    doc = load_one(write(tmp_path / "a.txt", text.encode("gb18030")))
    assert doc.text == text
    assert doc.metadata["encoding"] == "gb18030"


def test_gb18030_only_characters(tmp_path):
    text = "生僻字𠀀和表情😀，以及欧元符号€都在这里。"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    doc = load_one(write(tmp_path / "a.txt", text.encode("gb18030")))
    assert doc.text == text
    assert doc.metadata["encoding"] == "gb18030"


def test_longer_gbk_file_with_english(tmp_path):
    text = "\n".join(SIMPLIFIED * 20) + "\nThe end. 结束。\n"
    doc = load_one(write(tmp_path / "long.md", text.encode("gbk")))
    assert doc.text == text
    assert doc.metadata["encoding"] == "gb18030"
    assert doc.metadata["file_type"] == "md"


@pytest.mark.parametrize(
    ("bom", "codec", "expected"),
    [
        (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32-le"),
    ],
)
def test_bom_files(tmp_path, bom, codec, expected):
    text = "带BOM的文件。Hello, world!\n第二行。"
    doc = load_one(write(tmp_path / "bom.txt", bom + text.encode(codec)))
    assert doc.text == text  # the BOM itself is not part of the text
    assert doc.metadata["encoding"] == expected


def test_utf8_without_bom(tmp_path):
    text = "普通的 UTF-8 文本，含 emoji 😀 和 café。"
    doc = load_one(write(tmp_path / "u.txt", text))
    assert doc.text == text
    assert doc.metadata["encoding"] == "utf-8"


def test_utf8_with_a_stray_bad_byte_stays_utf8(tmp_path):
    good = "这是一个很长的 UTF-8 文件，" * 20
    data = good.encode("utf-8") + b"\xff" + "结尾。".encode()
    doc = load_one(write(tmp_path / "u.txt", data))
    assert doc.metadata["encoding"] == "utf-8"
    assert doc.text.startswith(good) and doc.text.endswith("结尾。")


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        ("Café au lait, naïve résumé. Ça va très bien!", "cp1252", "cp1252"),
        ("price 5€ only", "cp1252", "cp1252"),
        ("Привет, как дела? Всё хорошо, спасибо.", "cp1251", "cp1251"),
    ],
)
def test_western_and_other_code_pages(tmp_path, text, codec, expected):
    doc = load_one(write(tmp_path / "w.txt", text.encode(codec)))
    assert doc.text == text
    assert doc.metadata["encoding"] == expected


def test_decode_bytes_public_helper():
    assert decode_bytes("中文内容测试一下。".encode("gbk")) == ("中文内容测试一下。", "gb18030")
    assert decode_bytes(b"plain ascii") == ("plain ascii", "utf-8")
    with pytest.raises(InputError, match="binary"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


# ---------------------------------------------------------------------- skips


def test_binary_and_empty_files_are_skipped(tmp_path):
    write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    write(tmp_path / "data.bin", bytes(range(256)) * 8)
    write(tmp_path / "fake.txt", b"abc\x00def" * 10)
    write(tmp_path / "empty.txt", b"")
    write(tmp_path / "blank.md", "  \n\t\n\u3000\n")
    write(tmp_path / "ok.txt", "有效内容。")
    result = load_paths([tmp_path])
    assert isinstance(result, LoadResult)
    assert [d.metadata["file_name"] for d in result.documents] == ["ok.txt"]
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(reasons) == {"image.png", "data.bin", "fake.txt", "empty.txt", "blank.md"}
    for name in ("image.png", "data.bin", "fake.txt"):
        assert "binary file" in reasons[name]
    assert reasons["empty.txt"].startswith("empty file")
    assert reasons["blank.md"].startswith("empty file")
    assert result.files_seen == 6
    assert all(isinstance(s, SkippedFile) for s in result.skipped)


def test_undecodable_file_without_nul_is_binary(tmp_path):
    data = bytes(b for b in range(1, 256) if b not in b"\t\n\r\x0b\x0c ") * 20
    result = load_paths([write(tmp_path / "x.dat", data)])
    assert result.documents == []
    assert "binary file" in result.skipped[0].reason


def test_unknown_extension_read_as_text(tmp_path):
    doc = load_one(write(tmp_path / "server.log", "2024-01-01 启动成功\n2024-01-02 运行正常\n"))
    assert doc.metadata["file_type"] == "log"
    assert "启动成功" in doc.text


def test_unreadable_file_is_skipped_with_the_os_error(tmp_path, monkeypatch):
    secret = write(tmp_path / "secret.txt", "秘密")
    write(tmp_path / "public.txt", "公开")
    real = os.open

    def os_open(path, flags, *args):  # chmod is not enforced for root: refuse the open itself
        if os.fspath(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", os_open)
    result = load_paths([tmp_path])
    assert [d.text for d in result.documents] == ["公开"]
    assert result.skipped == [SkippedFile(posix(secret), "cannot read file: Permission denied")]


def test_missing_path_raises_input_error(tmp_path):
    write(tmp_path / "a.txt", "内容")
    missing = tmp_path / "no" / "such.txt"
    with pytest.raises(InputError) as info:
        load_paths([tmp_path / "a.txt", missing])
    assert str(missing) in str(info.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        load_paths([123])  # type: ignore[list-item]
    with pytest.raises(InputError):
        load_paths([tmp_path], text_field="")


def test_corrupt_pdf_and_docx_are_skipped(tmp_path):
    write(tmp_path / "broken.pdf", b"%PDF-1.4\nthis is not really a pdf")
    write(tmp_path / "broken.docx", b"PK\x03\x04 not a zip really")
    write(tmp_path / "good.txt", "好的")
    result = load_paths([tmp_path])
    assert [d.text for d in result.documents] == ["好的"]
    assert {Path(s.path).name for s in result.skipped} == {"broken.pdf", "broken.docx"}
    assert all(s.reason for s in result.skipped)


# ---------------------------------------------------------------------- walking and filters


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "docs"
    write(root / "b.md", "b")
    write(root / "a.txt", "a")
    write(root / "sub" / "c.md", "c")
    write(root / "sub" / "deep" / "d.md", "d")
    write(root / "sub" / "e.txt", "e")
    write(root / "drafts" / "f.md", "f")
    write(root / ".hidden.md", "hidden")
    write(root / ".git" / "config.md", "git")
    write(root / "sub" / ".cache" / "g.md", "cache")
    return root


def names(result: LoadResult) -> list[str]:
    return [d.text for d in result.documents]


def test_walk_is_sorted_recursive_and_skips_hidden(tree):
    result = load_paths([tree])
    assert names(result) == ["a", "b", "f", "c", "e", "d"]
    assert result.files_seen == 6
    assert result.skipped == []


def test_walk_order_is_deterministic(tree):
    assert names(load_paths([tree])) == names(load_paths([str(tree)]))


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["*.md"], None, ["b", "f", "c", "d"]),
        (["**/*.md"], None, ["b", "f", "c", "d"]),
        (["sub/**/*.md"], None, ["c", "d"]),
        (["sub/*"], None, ["c", "e", "d"]),
        (["*.txt"], None, ["a", "e"]),
        (None, ["*.md"], ["a", "e"]),
        (None, ["drafts"], ["a", "b", "c", "e", "d"]),
        (None, ["drafts/**"], ["a", "b", "c", "e", "d"]),
        (None, ["**/deep/**"], ["a", "b", "f", "c", "e"]),
        (["*.md"], ["sub/**"], ["b", "f"]),
        ("*.md", "drafts", ["b", "c", "d"]),
    ],
)
def test_include_exclude_globs(tree, include, exclude, expected):
    result = load_paths([tree], include=include, exclude=exclude)
    assert names(result) == expected
    assert result.files_seen == len(expected)


def test_named_files_ignore_filters_and_are_not_duplicated(tree):
    result = load_paths([tree / "a.txt", tree, tree / "sub" / "c.md"], include=["*.md"])
    assert names(result) == ["a", "b", "f", "c", "d"]
    assert result.files_seen == 5


def test_single_path_argument_and_metadata(tree):
    result = load_paths(tree / "b.md")  # a bare path is accepted too
    (doc,) = result.documents
    expected = posix(tree / "b.md")
    assert doc.source == expected
    assert doc.metadata == {"source": expected, "file_name": "b.md", "file_type": "md", "encoding": "utf-8"}


def test_relative_paths_become_absolute_posix(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (doc,) = load_paths(["sub/c.md"]).documents
    assert doc.source == posix(tree / "sub" / "c.md")
    assert Path(doc.source).is_absolute()


# ---------------------------------------------------------------------- html


def test_html_visible_text_only(tmp_path):
    html = """<!DOCTYPE html>
<html><head><title>测试 页面</title>
<style>body { color: red; }</style>
<script>var secret = "不要显示";</script>
<meta charset="utf-8"></head>
<body>
  <h1>标题</h1>
  <p>第一段   文字，
     跨行。</p>
  <p>Fish &amp; chips &lt;3 &copy; 2024</p>
  <ul><li>项目一</li><li>项目二</li></ul>
  <noscript>请启用 JavaScript</noscript>
  <table><tr><td>A1</td><td>B1</td></tr></table>
  <pre>code  keeps
    spacing</pre>
  <div>结尾<br>新行</div>
  <script type="module">console.log("x")</script>
</body></html>"""
    doc = load_one(write(tmp_path / "page.html", html))
    text = doc.text
    assert doc.metadata["title"] == "测试 页面"
    assert doc.metadata["file_type"] == "html"
    for hidden in ("color: red", "secret", "不要显示", "console.log", "JavaScript", "测试 页面"):
        assert hidden not in text
    assert "标题\n\n第一段 文字， 跨行。\n\nFish & chips <3 © 2024" in text
    assert "项目一\n项目二" in text
    assert "A1\tB1" in text
    assert "code  keeps\n    spacing" in text
    assert text.endswith("结尾\n新行")


def test_html_in_gbk_with_meta_charset(tmp_path):
    html = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312"></head>'
    html += "<body><p>简体中文网页内容。</p></body></html>"
    doc = load_one(write(tmp_path / "gbk.htm", html.encode("gbk")))
    assert doc.text == "简体中文网页内容。"
    assert doc.metadata["encoding"] == "gb18030"


def test_html_without_visible_text_is_skipped(tmp_path):
    result = load_paths([write(tmp_path / "x.html", "<html><script>a()</script></html>")])
    assert result.documents == [] and "no visible text" in result.skipped[0].reason


# ---------------------------------------------------------------------- json, jsonl, csv


def test_json_list_of_records(tmp_path):
    records = [
        {"text": "第一条记录。", "id": 1},
        {"title": "no text"},
        {"text": "第三条。"},
        {"text": 5},
        "纯字符串记录",
    ]
    path = write(tmp_path / "data.json", json.dumps(records, ensure_ascii=False))
    result = load_paths([path])
    source = posix(path)
    assert [(d.text, d.metadata["record"]) for d in result.documents] == [
        ("第一条记录。", 0),
        ("第三条。", 2),
        ("纯字符串记录", 4),
    ]
    assert all(d.source == source for d in result.documents)
    assert [s.path for s in result.skipped] == [f"{source}#1", f"{source}#3"]
    assert "no 'text' field" in result.skipped[0].reason
    assert "not a string" in result.skipped[1].reason
    assert_scalar_metadata(result.documents)


def test_json_single_object_and_custom_field(tmp_path):
    path = write(tmp_path / "one.json", json.dumps({"body": "正文内容。", "text": 3}, ensure_ascii=False))
    doc = load_one(path, text_field="body")
    assert doc.text == "正文内容。"
    assert doc.metadata["record"] == 0
    result = load_paths([path])
    assert result.documents == [] and "not a string" in result.skipped[0].reason


def test_invalid_json_is_skipped(tmp_path):
    result = load_paths([write(tmp_path / "bad.json", "{not json")])
    assert result.documents == [] and "invalid JSON" in result.skipped[0].reason


def test_json_in_gbk(tmp_path):
    path = write(
        tmp_path / "gbk.json", json.dumps([{"text": "国标编码的记录"}], ensure_ascii=False).encode("gbk")
    )
    doc = load_one(path)
    assert doc.text == "国标编码的记录"
    assert doc.metadata["encoding"] == "gb18030"


def test_jsonl_records(tmp_path):
    lines = [
        json.dumps({"text": "第一行。"}, ensure_ascii=False),
        "",
        "{broken",
        json.dumps({"content": "第四行"}, ensure_ascii=False),
        json.dumps({"content": "第五行"}, ensure_ascii=False),
    ]
    path = write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    result = load_paths([path], text_field="content")
    source = posix(path)
    assert [(d.text, d.metadata["record"]) for d in result.documents] == [("第四行", 3), ("第五行", 4)]
    assert [s.path for s in result.skipped] == [f"{source}#0", f"{source}#2"]
    assert "invalid JSON on line 3" in result.skipped[1].reason


def test_csv_rows(tmp_path):
    path = write(tmp_path / "t.csv", 'id,content,tag\n1,"第一行，有逗号",a\n2,,b\n3,"多行\n文本",c\n')
    result = load_paths([path], text_column="content")
    assert [(d.text, d.metadata["row"]) for d in result.documents] == [
        ("第一行，有逗号", 0),
        ("多行\n文本", 2),
    ]
    assert result.skipped == [SkippedFile(f"{posix(path)}#1", "'content' is empty")]
    assert result.documents[0].metadata["file_type"] == "csv"
    missing = load_paths([path])
    assert missing.documents == [] and "no 'text' column" in missing.skipped[0].reason


def test_tsv_and_utf8_bom_csv(tmp_path):
    tsv = write(tmp_path / "t.tsv", "text\tother\n制表符分隔\tx\n")
    assert load_one(tsv).text == "制表符分隔"
    csv_bom = write(tmp_path / "excel.csv", codecs.BOM_UTF8 + "text,n\n来自 Excel,1\n".encode())
    doc = load_one(csv_bom)
    assert doc.text == "来自 Excel" and doc.metadata["encoding"] == "utf-8-sig"


# ---------------------------------------------------------------------- pdf and docx


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page (an empty string: blank page)."""
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        ("<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids) + f"] /Count {n} >>").encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(
            (
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_ids[i] + 1} 0 R >>"
            ).encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def test_pdf_one_document_per_page(tmp_path):
    pytest.importorskip("pypdf")
    path = write(tmp_path / "report.pdf", make_pdf(["Hello PDF page one.", "", "Third page text."]))
    result = load_paths([path])
    assert result.skipped == []
    source = posix(path)
    assert [(d.text.strip(), d.metadata["page"]) for d in result.documents] == [
        ("Hello PDF page one.", 1),
        ("Third page text.", 3),
    ]
    for doc in result.documents:
        assert doc.source == source
        assert doc.metadata["file_type"] == "pdf"
        assert "encoding" not in doc.metadata
    assert_scalar_metadata(result.documents)


def test_pdf_without_text_is_skipped(tmp_path):
    pytest.importorskip("pypdf")
    result = load_paths([write(tmp_path / "scan.pdf", make_pdf(["", ""]))])
    assert result.documents == [] and "no extractable text" in result.skipped[0].reason


def test_missing_pypdf_is_a_skip_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # makes `import pypdf` raise ImportError
    result = load_paths([write(tmp_path / "a.pdf", make_pdf(["text"])), write(tmp_path / "b.txt", "ok")])
    assert [d.text for d in result.documents] == ["ok"]
    (skip,) = result.skipped
    assert skip.path.endswith("/a.pdf")
    assert "pip install 'm3e-rag[pdf]'" in skip.reason


def test_docx_paragraphs_and_tables(tmp_path):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.core_properties.title = "季度报告"
    document.add_heading("第一章", level=1)
    document.add_paragraph("这是第一段。")
    document.add_paragraph("Second paragraph in English.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "名称"
    table.cell(0, 1).text = "数值"
    table.cell(1, 0).text = "收入"
    table.cell(1, 1).text = "100"
    document.add_paragraph("结尾段落。")
    path = tmp_path / "report.docx"
    document.save(str(path))
    doc = load_one(path)
    assert doc.text == "第一章\n这是第一段。\nSecond paragraph in English.\n名称\t数值\n收入\t100\n结尾段落。"
    assert doc.metadata["title"] == "季度报告"
    assert doc.metadata["file_type"] == "docx"
    assert doc.source == posix(path)
    assert_scalar_metadata([doc])


def test_missing_python_docx_is_a_skip_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "docx", None)
    result = load_paths([write(tmp_path / "a.docx", b"PK\x03\x04")])
    assert result.documents == []
    assert "pip install 'm3e-rag[docx]'" in result.skipped[0].reason


# ---------------------------------------------------------------------- all formats together


def test_every_document_has_scalar_metadata(tmp_path):
    write(tmp_path / "a.txt", "文本".encode("gbk") * 10)
    write(tmp_path / "b.html", "<p>网页</p>")
    write(tmp_path / "c.json", '[{"text": "记录"}]')
    write(tmp_path / "d.jsonl", '{"text": "行"}\n')
    write(tmp_path / "e.csv", "text\n单元格\n")
    result = load_paths([tmp_path])
    assert len(result.documents) == 5 and result.skipped == []
    assert_scalar_metadata(result.documents)
    for doc in result.documents:
        assert doc.metadata["source"] == doc.source
        assert doc.metadata["file_name"] == Path(doc.source).name


# ---------------------------------------------------------------------- load_texts


def test_load_texts_defaults():
    docs = load_texts(["你好", "world", "你好"])
    assert [d.text for d in docs] == ["你好", "world", "你好"]
    assert docs[0].source.startswith("text:") and len(docs[0].source) == len("text:") + 16
    assert docs[0].source == docs[2].source != docs[1].source  # stable: same text, same source
    assert load_texts(["你好"])[0].source == docs[0].source
    assert docs[1].metadata == {"source": docs[1].source}


def test_load_texts_sources_and_metadata():
    docs = load_texts(
        ["a", "b"],
        sources=["doc-a", "doc-b"],
        metadatas=[{"lang": "en", "n": 1, "score": 0.5, "ok": True, "gone": None}, None],
    )
    assert docs[0] == Document(
        "a", "doc-a", {"lang": "en", "n": 1, "score": 0.5, "ok": True, "source": "doc-a"}
    )
    assert docs[1].metadata == {"source": "doc-b"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"texts": "just one string"}, "list of strings"),
        ({"texts": ["a", 3]}, r"texts\[1\]"),
        ({"texts": ["a", "b"], "sources": ["one"]}, "one name per text"),
        ({"texts": ["a"], "sources": [""]}, r"sources\[0\]"),
        ({"texts": ["a"], "metadatas": [{}, {}]}, "one entry per text"),
        ({"texts": ["a"], "metadatas": [{"nested": {"x": 1}}]}, "str, int, float or bool"),
        ({"texts": ["a"], "metadatas": [{"list": [1, 2]}]}, "str, int, float or bool"),
    ],
)
def test_load_texts_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        load_texts(**kwargs)
