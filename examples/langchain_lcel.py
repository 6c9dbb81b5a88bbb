"""An LCEL chain: M3ERetriever (hybrid) | prompt | LLM, over the sample documents.

A fake LLM stands in for your chat model (swap in ChatOpenAI, ChatTongyi, ...): it echoes the
prompt it receives, so you can see the retrieved context a real model would answer from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _model import pick_model, run  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompt_values import PromptValue  # noqa: E402
from langchain_core.prompts import PromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402

from langchain_m3e import M3EEmbeddings, M3ERetriever, M3EVectorStore  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
PROMPT = PromptTemplate.from_template("根据以下资料回答问题。\n\n资料：\n{context}\n\n问题：{question}\n回答：")


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"- {' '.join(d.page_content.split())}" for d in docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", default=str(Path(__file__).resolve().parent / ".index-lcel"))
    parser.add_argument("question", nargs="?", default="大熊猫每天吃多少竹子？")
    args = parser.parse_args(argv)

    store = M3EVectorStore(M3EEmbeddings(model_name=pick_model()), index=args.index)
    store.ingest(DATA)
    retriever = M3ERetriever(vectorstore=store, k=2, mode="hybrid")

    def fake_llm(prompt: PromptValue) -> str:
        return "(offline example: a real LLM would answer from this prompt)\n" + prompt.to_string()

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | PROMPT
        | RunnableLambda(fake_llm)
        | StrOutputParser()
    )
    answer = chain.invoke(args.question)
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
