"""M3ETextSplitter (the engine's Chinese-aware chunker as a TextSplitter) and ingest of LangChain Documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from langchain_m3e import M3EEmbeddings, M3ETextSplitter, M3EVectorStore
from m3e_rag.errors import InputError
from m3e_rag.pipeline import RAGPipeline

# Repeated sentences: a start index found by searching the text (LangChain's default) can land on
# the wrong copy; the chunker knows each chunk's exact offset.
TEXT = (
    "大熊猫主要吃竹子。大熊猫主要吃竹子。它们每天要吃十几公斤的竹子，还会吃少量的肉！\n\n"
    "熊猫宝宝出生时只有一百克左右。Giant pandas eat bamboo for most of the day. They sleep a lot.\n"
    "大熊猫主要吃竹子。"
)


@pytest.fixture(scope="module")
def emb(tiny_model_path: Path) -> M3EEmbeddings:
    return M3EEmbeddings(model_name=str(tiny_model_path), model_kwargs={"device": "cpu"})


def test_splits_within_the_token_budget_with_exact_start_indexes(emb: M3EEmbeddings) -> None:
    splitter = M3ETextSplitter(chunk_size=12, chunk_overlap=4, embeddings=emb, add_start_index=True)
    assert isinstance(splitter, TextSplitter)
    docs = splitter.create_documents([TEXT], metadatas=[{"title": "熊猫"}])
    assert len(docs) > 3
    tokenizer = emb.encoder.tokenizer
    for doc in docs:
        start = doc.metadata["start_index"]
        assert TEXT[start : start + len(doc.page_content)] == doc.page_content
        assert doc.metadata["title"] == "熊猫"
        assert len(tokenizer(doc.page_content, add_special_tokens=False)["input_ids"]) <= 12
    assert [d.page_content for d in docs] == splitter.split_text(TEXT)
    starts = [d.metadata["start_index"] for d in docs if d.page_content == "大熊猫主要吃竹子。"]
    assert starts[:2] == [0, 9] and starts[-1] == TEXT.rindex("大熊猫主要吃竹子。")
    again = splitter.split_documents([Document(page_content=TEXT, metadata={"source": "a.txt"})])
    assert [d.page_content for d in again] == [d.page_content for d in docs]
    assert all(d.metadata["source"] == "a.txt" for d in again)


def test_the_model_window_and_character_options_are_refused(emb: M3EEmbeddings) -> None:
    with pytest.raises(InputError, match=r"chunk_size=600 tokens does not fit the model.*chunk_size<=510"):
        M3ETextSplitter(chunk_size=600, chunk_overlap=0, embeddings=emb).split_text("熊猫。")
    with pytest.raises(InputError, match="length_function.*model's own tokens"):
        M3ETextSplitter(embeddings=emb, length_function=lambda s: len(s) // 2)
    with pytest.raises(InputError, match="keep_separator"):
        M3ETextSplitter(embeddings=emb, keep_separator="end")
    with pytest.raises(InputError, match="overlap_tokens must be"):
        M3ETextSplitter(chunk_size=16, chunk_overlap=8, embeddings=emb).split_text("熊猫。")
    with pytest.raises(InputError, match="give one of model_name, embeddings and encoder"):
        M3ETextSplitter(model_name="m3e-base", embeddings=emb)


def test_ingest_takes_langchain_documents(emb: M3EEmbeddings, tmp_path: Path) -> None:
    docs = [
        Document(page_content=TEXT, metadata={"source": "panda.txt", "topic": "panda"}),
        Document(page_content="长城是古代中国的防御工程。", id="wall-1", metadata={"topic": "wall"}),
    ]
    store = M3EVectorStore(embedding_function=emb, persist_directory=str(tmp_path / "db"), chunk_tokens=16,
                           overlap_tokens=4)
    report = store.ingest(documents=docs)
    assert report.documents == 2 and report.chunks_added > 2
    sources = {m["source"] for m in store.get()["metadatas"]}
    assert sources == {"panda.txt", "wall-1"}
    assert store.get(where={"topic": "wall"})["documents"] == ["长城是古代中国的防御工程。"]
    again = store.ingest(documents=docs)  # same sources: nothing is duplicated
    assert again.chunks_added == 0 and len(store.get()["ids"]) == report.chunks_added
    # The engine takes them too (the pipeline converts by shape; it imports no framework).
    rag = RAGPipeline(tmp_path / "rag", encoder=emb.encoder, chunk_tokens=16, overlap_tokens=4)
    assert rag.ingest(documents=docs[1:]).chunks_added == 1
    with pytest.raises(InputError, match=r"documents\[0\] is a int"):
        rag.ingest(documents=[3])  # type: ignore[list-item]
