"""RAGPipeline end to end on an embedded Chroma folder: ingest, re-ingest, change, delete, search."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3e_rag import RAGPipeline
from m3e_rag.errors import InputError, ModelMismatchError
from m3e_rag.types import Document

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, folder)
    return folder


def test_ingest_is_incremental(tmp_path: Path, corpus: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path), chunk_tokens=64, overlap_tokens=8)
    first = rag.ingest(corpus)
    assert first.files_seen == 6 and first.documents == 6 and first.chunks_added > 6
    assert first.texts_embedded == first.chunks_added and first.chunks_unchanged == 0
    count = rag.store.count()
    assert count == first.chunks_added

    again = rag.ingest(corpus)
    assert (again.chunks_added, again.texts_embedded, again.chunks_removed) == (0, 0, 0)
    assert again.chunks_unchanged == count

    # Change one file: only its changed chunks are embedded, its stale chunks removed.
    wall = corpus / "great_wall.md"
    wall.write_text(wall.read_text(encoding="utf-8") + "\n\n长城上每隔一段距离就有一座烽火台。", encoding="utf-8")
    changed = rag.ingest(corpus)
    assert 1 <= changed.texts_embedded <= 3
    assert changed.chunks_added == changed.texts_embedded
    assert rag.store.count() == count + changed.chunks_added - changed.chunks_removed

    # Delete by source (as typed) removes exactly that file's chunks.
    before = rag.store.count()
    n = len(rag.store.get(where={"source": wall.resolve().as_posix()}, include_text=False))
    assert rag.delete(source=str(wall)) == n > 0
    assert rag.store.count() == before - n
    assert all(r.source != wall.resolve().as_posix() for r in rag.search("长城", k=20, mode="sparse"))


def test_chunks_carry_spans_and_metadata(tmp_path: Path, corpus: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path), chunk_tokens=48, overlap_tokens=0)
    rag.ingest(corpus)
    panda = (corpus / "giant_panda_gbk.txt").resolve()
    text = panda.read_bytes().decode("gb18030")
    stored = rag.store.get(where={"source": panda.as_posix()})
    assert len(stored) >= 2
    for rec in stored:
        meta = rec.metadata
        assert text[meta["start"] : meta["end"]] == rec.text
        assert meta["encoding"].lower().replace("-", "") in ("gb18030", "gbk")
        assert meta["n_tokens"] <= 48


def test_texts_and_documents_and_stats(tmp_path: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["第一段文字。", "Second text."], sources=["a", "b"], metadatas=[{"lang": "zh"}, {"lang": "en"}])
    rag.ingest(documents=[Document("第三段。", source="c", metadata={"lang": "zh"})])
    stats = rag.stats()
    assert stats["chunks"] == 3 and stats["sources"] == 3 and stats["dim"] == 64
    assert stats["model"] == str(tiny_model_path)
    hits = rag.search("文字", k=3, where={"lang": "en"})
    assert [h.source for h in hits] == ["b"]


def test_bad_input_is_refused_and_nothing_is_lost(tmp_path: Path, tiny_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["保留的内容。"], sources=["keep"])
    with pytest.raises(InputError, match="does not exist"):
        rag.ingest(tmp_path / "missing-folder")
    with pytest.raises(InputError, match="needs paths, texts or documents"):
        rag.ingest()
    with pytest.raises(InputError, match="query must be a non-empty string"):
        rag.search("  ")
    with pytest.raises(InputError, match="k must be a positive integer"):
        rag.search("内容", k=0)
    with pytest.raises(InputError, match="delete\\(\\) needs"):
        rag.delete()
    assert rag.store.count() == 1


def test_other_model_is_refused_and_index_untouched(tmp_path: Path, tiny_model_path: Path,
                                                     bilingual_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["大熊猫吃竹子。"], sources=["panda"])
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    other = RAGPipeline(tmp_path / "idx", model_name=str(bilingual_model_path))
    with pytest.raises(ModelMismatchError) as info:
        other.search("熊猫")
    msg = str(info.value)
    assert str(tiny_model_path) in msg and "64-d" in msg and "384-d" in msg and "rebuild" in msg
    SharedSystemClient.clear_system_cache()
    again = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    assert again.store.count() == 1 and again.search("熊猫", k=1)[0].source == "panda"


def test_modes_threshold_and_mmr(tmp_path: Path, bilingual_model_path: Path) -> None:
    rag = RAGPipeline(tmp_path / "idx", model_name=str(bilingual_model_path))
    rag.ingest(EXAMPLES)
    for mode in ("dense", "sparse", "hybrid"):
        top = rag.search("大熊猫吃什么？", k=2, mode=mode)
        assert top[0].source is not None and top[0].source.endswith("giant_panda_gbk.txt"), mode
    dense = rag.search("大熊猫吃什么？", k=6, mode="dense")
    cut = dense[2].score
    assert all(h.score >= cut for h in rag.search("大熊猫吃什么？", k=6, mode="dense", score_threshold=cut))
    assert len(rag.search("大熊猫吃什么？", k=6, mode="dense", score_threshold=cut)) == 3
    with pytest.raises(InputError, match="pass mode= with it"):  # the default mode is hybrid: say the scale
        rag.search("大熊猫吃什么？", k=6, score_threshold=cut)
    default = rag.search("大熊猫吃什么？", k=6)
    assert [h.id for h in default] == [h.id for h in rag.search("大熊猫吃什么？", k=6, mode="hybrid")]
    diverse = rag.search("大熊猫", k=3, mmr=True, fetch_k=6, lambda_mult=0.0)
    assert len({h.id for h in diverse}) == 3
    hybrid = rag.search("Eiffel 1889", k=1, mode="hybrid")[0]
    assert hybrid.source is not None and hybrid.source.endswith("eiffel_tower.md")
    assert "dense_score" in hybrid.metadata or "sparse_score" in hybrid.metadata


def test_reranker_hook_reorders(tmp_path: Path, tiny_model_path: Path) -> None:
    class ByLength:
        """A stand-in cross-encoder: longer passages score higher."""

        def predict(self, pairs: list[tuple[str, str]], **kwargs: object) -> list[float]:
            return [float(len(p)) for _, p in pairs]

    rag = RAGPipeline(tmp_path / "idx", model_name=str(tiny_model_path))
    rag.ingest(texts=["短。", "这是一段比较长的文字。", "中等长度的。"], sources=["s", "l", "m"])
    hits = rag.search("文字", k=3, reranker=ByLength())
    assert [h.source for h in hits] == ["l", "m", "s"]
    assert [h.score for h in hits] == [11.0, 6.0, 2.0]
    assert all("retrieval_score" in h.metadata for h in hits)
