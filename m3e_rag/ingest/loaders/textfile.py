"""Plain text and Markdown (and any unknown extension that decodes as text): the text as is.

A file up to :data:`STREAM_THRESHOLD_BYTES` is read whole into a :class:`~m3e_rag.types.Document`;
a larger one becomes a :class:`~m3e_rag.ingest.loaders.StreamedDocument` whose text is decoded block by
block (codec detected on its first MiB), so memory stays bounded by the block, not the file.
"""

from __future__ import annotations

import codecs
import errno
from collections.abc import Callable, Iterator
from typing import BinaryIO

from m3e_rag.ingest.loaders._base import FileJob, Yielded, read_text
from m3e_rag.ingest.loaders._common import SkippedFile, StreamedDocument, _Skip
from m3e_rag.ingest.loaders.detect import detect_head
from m3e_rag.types import Document, Metadata

__all__ = ["load_text", "STREAM_THRESHOLD_BYTES", "BLOCK_BYTES"]

#: Text files larger than this are streamed instead of read whole.
STREAM_THRESHOLD_BYTES = 8 * 1024 * 1024
#: Bytes read (and decoded) per step of a streamed file; also the sample that picks its codec.
BLOCK_BYTES = 1024 * 1024


def load_text(job: FileJob) -> Iterator[Yielded]:
    """Yield the file's text as one document (streamed when the file is large)."""
    if job.size <= STREAM_THRESHOLD_BYTES:
        text, _, whole_meta = read_text(job)
        yield Document(text=text, source=job.source, metadata=whole_meta)
        return
    job.fh.seek(0)
    head = job.fh.read(BLOCK_BYTES)
    if not head.strip():
        raise _Skip("empty file (its first MiB is blank)")
    codec, bom = detect_head(head)
    meta: Metadata = {**job.base, "encoding": codec if not bom or codec != "utf-8" else "utf-8-sig"}
    reopen = job.reopen
    sink = job.sink
    source = job.source

    def segments() -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(codec)(errors="replace")
        replaced = 0
        with _open_again(reopen) as fh:
            fh.seek(bom)
            while True:
                block = fh.read(BLOCK_BYTES)
                text = decoder.decode(block, final=not block)
                if text:
                    replaced += text.count("\ufffd")
                    yield text
                if not block:
                    break
        if replaced:
            sink.notes.append(
                SkippedFile(source, f"decoded as {codec}; {replaced} U+FFFD replacement character(s) in the text")
            )

    yield StreamedDocument(source=job.source, metadata=meta, segments=segments, size_bytes=job.size)


def _open_again(reopen: Callable[[], BinaryIO]) -> BinaryIO:
    """Open the file again with the loader's checks; a refusal is a read error of the stream."""
    try:
        return reopen()
    except _Skip as exc:
        raise OSError(errno.EACCES, str(exc)) from None
