"""DOCX (python-docx): paragraphs and table rows (cells tab-separated) joined by newlines.

The file is read once into memory and checked by :func:`~m3e_rag.ingest.loaders.archive.check_zip`
(what it expands to, member by member, against ``max_file_bytes`` and the expansion ratio) before
python-docx parses those same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from m3e_rag.errors import MissingExtraError
from m3e_rag.ingest.loaders._base import FileJob, Yielded
from m3e_rag.ingest.loaders._common import _Skip
from m3e_rag.ingest.loaders.archive import check_zip
from m3e_rag.types import Document, Metadata

__all__ = ["load_docx"]


def load_docx(job: FileJob) -> Iterator[Yielded]:
    """Yield the document's text, its core-properties title in the metadata."""
    try:
        import docx
    except ImportError:
        raise _Skip(str(MissingExtraError("python-docx", "docx", "Reading Word (.docx) files"))) from None
    data = job.read_bytes()
    check_zip(data, job.limit)
    document = docx.Document(io.BytesIO(data))
    del data
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
    meta: Metadata = dict(job.base)
    title = getattr(document.core_properties, "title", None)
    if isinstance(title, str) and title.strip():
        meta["title"] = title.strip()
    yield Document(text=text, source=job.source, metadata=meta)
