"""PDF (pypdf, the ``pdf`` extra): one document per page with text, ``page`` 1-based in the metadata.

The file is read once into memory (what pypdf does with a path too) from the checked open file.
Compressed streams inside a PDF are bounded by pypdf itself (from pypdf 6: 75 MB per stream by
default, ``pypdf.Configuration``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from m3e_rag.errors import MissingExtraError
from m3e_rag.ingest.loaders._base import FileJob, Yielded
from m3e_rag.ingest.loaders._common import _Skip
from m3e_rag.types import Document

__all__ = ["load_pdf"]


def load_pdf(job: FileJob) -> Iterator[Yielded]:
    """Yield one document per page that has extractable text."""
    try:
        from pypdf import PdfReader
    except ImportError:
        raise _Skip(str(MissingExtraError("pypdf", "pdf", "Reading PDF files"))) from None
    reader = PdfReader(io.BytesIO(job.read_bytes()))
    if reader.is_encrypted:
        try:
            unlocked = bool(reader.decrypt(""))
        except Exception:  # noqa: BLE001 - pypdf raises several types (and needs extras for AES)
            unlocked = False
        if not unlocked:
            raise _Skip("encrypted PDF (password protected); decrypt it first")
    found = False
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        if text.strip():
            found = True
            yield Document(text=text, source=job.source, metadata={**job.base, "page": number})
    if not found:
        raise _Skip("no extractable text in the PDF (a scanned PDF needs OCR first)")
