"""The LlamaIndex starter tutorial, with m3e-rag's parts in place of HuggingFaceEmbedding + ChromaVectorStore.

What changes from the usual tutorial: ``M3EReader`` instead of ``SimpleDirectoryReader`` (the GBK
file in examples/data decodes), ``M3EEmbedding`` instead of ``HuggingFaceEmbedding`` (same
arguments), ``M3ENodeParser`` instead of ``SentenceSplitter`` (chunks budgeted in the model's own
tokens, cut at Chinese sentence ends), and ``M3EVectorStore`` instead of ``ChromaVectorStore``
(the same index ``m3e-rag search`` reads, with hybrid BM25 search). MockLLM stands in for your LLM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model import pick_model, run  # noqa: E402
from llama_index.core import Settings, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters  # noqa: E402
from llama_index.embeddings.m3e import M3EEmbedding  # noqa: E402
from llama_index.node_parser.m3e import M3ENodeParser  # noqa: E402
from llama_index.readers.m3e import M3EReader  # noqa: E402
from llama_index.vector_stores.m3e import M3EVectorStore  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def show(title: str, nodes: list) -> None:  # type: ignore[type-arg]
    print(title)
    for n in nodes:
        text = " ".join(n.node.get_content().split())[:60]
        print(f"  [{n.score:.3f}] {Path(n.node.metadata.get('file_path', '?')).name}: {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persist-dir", default=str(Path(__file__).resolve().parent / ".index-llamaindex-tutorial"))
    args = parser.parse_args(argv)

    # 1. Models, as you would write HuggingFaceEmbedding(model_name=..., embed_batch_size=..., normalize=...)
    Settings.llm = MockLLM()  # swap in your LLM
    Settings.embed_model = M3EEmbedding(model_name=pick_model(), embed_batch_size=32, normalize=True)
    Settings.transformations = [M3ENodeParser(embed_model=Settings.embed_model, chunk_size=256, chunk_overlap=32)]

    # 2. A persistent store: build it once, reopen it afterwards (the same folder m3e-rag's CLI reads).
    #    embed_model= shares the embedding's model with the store (without it, the store would pick its own).
    vector_store = M3EVectorStore(persist_dir=args.persist_dir, collection_name="quickstart",
                                  embed_model=Settings.embed_model)
    if vector_store.pipeline.store.count() == 0:
        documents = M3EReader().load_data(DATA)  # GBK / Big5 / UTF-8 files all decode
        storage_context = StorageContext.from_defaults(vector_store=vector_store)
        index = VectorStoreIndex.from_documents(documents, storage_context=storage_context)
        print(f"Indexed {len(documents)} documents")
    else:
        index = VectorStoreIndex.from_vector_store(vector_store)
        print("Reopened the index")

    # 3. A query engine
    response = index.as_query_engine(similarity_top_k=2).query("大熊猫吃什么？")
    show("Q: 大熊猫吃什么？", response.source_nodes)

    # 4. Metadata filters: only Markdown files
    only_md = MetadataFilters(filters=[MetadataFilter(key="file_type", value="md", operator=FilterOperator.EQ)])
    show("Q: 建于哪一年？ (file_type == md)", index.as_retriever(similarity_top_k=3, filters=only_md).retrieve(
        "建于哪一年？"))

    # 5. Hybrid search: M3E vectors + BM25 keywords, fused by rank
    hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2)
    show("Q: Gustave Eiffel 1889 (hybrid)", hybrid.retrieve("Gustave Eiffel 1889"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
