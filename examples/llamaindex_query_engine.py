"""A LlamaIndex query engine over the m3e-rag retriever, with MockLLM standing in for your LLM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model import pick_model, run  # noqa: E402
from llama_index.core import Settings  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.retrievers.m3e import M3ERetriever  # noqa: E402

from m3e_rag import RAGPipeline  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=str(Path(__file__).resolve().parent / ".index-llamaindex"))
    parser.add_argument("question", nargs="?", default="What is the Eiffel Tower made of?")
    args = parser.parse_args(argv)

    Settings.llm = MockLLM()  # swap in your LLM; MockLLM keeps this runnable offline
    rag = RAGPipeline(args.index, model_name=pick_model())
    rag.ingest(DATA)
    retriever = M3ERetriever(rag, similarity_top_k=2, mode="hybrid")
    engine = RetrieverQueryEngine.from_args(retriever, llm=Settings.llm)
    response = engine.query(args.question)
    print(f"Q: {args.question}")
    for node in response.source_nodes:
        print(f"  [{node.score:.3f}] {Path(str(node.node.metadata.get('source', '?'))).name}: "
              f"{' '.join(node.node.get_content().split())[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
