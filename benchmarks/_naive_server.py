"""The naive baseline of benchmarks/serve.py: one SentenceTransformer.encode call per request.

What the FastGPT m3e image does: a FastAPI ``async def`` route that calls ``model.encode`` on the
request's texts, on the event loop (no batching across requests, no worker thread).
Run: ``python benchmarks/_naive_server.py MODEL_DIR PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
app = FastAPI()


class Body(BaseModel):
    input: str | list[str]
    model: str = "m3e"


@app.post("/v1/embeddings")
async def embeddings(body: Body) -> dict:
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = model.encode(texts, normalize_embeddings=True)
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0}}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
