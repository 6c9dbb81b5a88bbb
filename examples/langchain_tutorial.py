"""LangChain 中文教程写法：HuggingFaceEmbeddings + Chroma 的代码，换成 M3E 两个类名即可运行。

The way a Chinese LangChain tutorial writes it (HuggingFaceEmbeddings-style and Chroma-style
arguments), with m3e-rag's classes: split with the Chinese-aware splitter, store with
``from_documents(persist_directory=..., collection_name=...)``, search with a metadata filter, in
hybrid mode (M3E + BM25), and through a retriever.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model import pick_model, run  # noqa: E402
from langchain_core.documents import Document  # noqa: E402

from langchain_m3e import M3EEmbeddings, M3ETextSplitter, M3EVectorStore  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def load_documents() -> list[Document]:
    """读取示例文档（UTF-8）；教程里这一步通常是 TextLoader / DirectoryLoader。"""
    docs = []
    for name, topic in [("green_tea.txt", "茶"), ("great_wall.md", "历史"), ("python_language.txt", "编程")]:
        text = (DATA / name).read_text(encoding="utf-8-sig")
        docs.append(Document(page_content=text, metadata={"source": name, "topic": topic}))
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persist-directory", default=str(Path(__file__).resolve().parent / ".index-tutorial"))
    args = parser.parse_args(argv)

    # 1. 向量模型：与 HuggingFaceEmbeddings 相同的参数
    embeddings = M3EEmbeddings(
        model_name=pick_model(),  # 例如 "moka-ai/m3e-base"
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )

    # 2. 切分：按中文句子切分，长度以模型的 token 计
    splitter = M3ETextSplitter(chunk_size=128, chunk_overlap=16, embeddings=embeddings, add_start_index=True)
    chunks = splitter.split_documents(load_documents())
    print(f"切分得到 {len(chunks)} 个片段")

    # 3. 向量库：与 Chroma.from_documents 相同的参数（反复运行本教程时先删除旧库）
    shutil.rmtree(args.persist_directory, ignore_errors=True)
    vectordb = M3EVectorStore.from_documents(
        chunks,
        embeddings,
        persist_directory=args.persist_directory,
        collection_name="tutorial_docs",
    )

    # 4. 检索：元数据过滤 + 混合检索（M3E 向量 + BM25 关键词）
    question = "绿茶怎么泡？"
    for doc, score in vectordb.similarity_search_with_relevance_scores(question, k=2, filter={"topic": "茶"},
                                                                       mode="hybrid"):
        excerpt = " ".join(doc.page_content.split())[:30]
        print(f"[{score:.3f}] {doc.metadata['source']}@{doc.metadata['start_index']}: {excerpt}")

    # 5. 作为 retriever 接入链（LCEL）
    retriever = vectordb.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 8, "mode": "hybrid"})
    for doc in retriever.invoke("长城有多长？"):
        print(f"retriever: {doc.metadata['source']}: {' '.join(doc.page_content.split())[:30]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
