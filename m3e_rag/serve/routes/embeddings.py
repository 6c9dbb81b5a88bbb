"""OpenAI's routes: ``POST /v1/embeddings`` and ``GET /v1/models``.

Vectors equal :meth:`~m3e_rag.encode.encoder.M3EEncoder.encode_documents` (or ``encode_queries``
with ``input_type="query"``); inputs must be text, since OpenAI's token ids mean nothing to the
model's own tokenizer. Every input is checked before it is queued (empty, token ids, invalid
Unicode such as a lone surrogate): a bad input fails its own request with a 400 naming
``input[i]``, never the requests whose texts would have shared its batch.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from m3e_rag.encode.inputs import check_unicode
from m3e_rag.errors import InputError
from m3e_rag.serve.http_errors import ApiError, json_response
from m3e_rag.serve.routes.deps import (
    ServiceDep,
    check_model,
    ready,
    run_guarded,
    submit,
    wait,
)
from m3e_rag.serve.routes.sparse import embed_with_sparse, sparse_item
from m3e_rag.serve.schemas import EmbeddingRequest, EmbeddingResponse

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingResponse}}, tags=["openai"])
async def embeddings(body: EmbeddingRequest, request: Request, service: ServiceDep) -> Response:
    """Embed texts (OpenAI's schema; vectors equal ``M3EEncoder.encode_documents``)."""
    svc = ready(service)
    check_model(svc, body.model)
    texts = _texts_of(body.input)
    if len(texts) > svc.config.max_inputs:
        raise ApiError(413, f"input has {len(texts)} items, over the limit of {svc.config.max_inputs} per "
                       "request; split it into several requests.", param="input", code="too_many_inputs")
    if body.dimensions is not None and body.dimensions != svc.dim:
        raise ApiError(400, f"dimensions={body.dimensions} is not available: this model's vectors have "
                       f"{svc.dim} dimensions and are not truncated; omit dimensions or pass {svc.dim}.",
                       param="dimensions", code="invalid_dimensions")

    if body.return_sparse and (svc.encoder is None or "sparse" not in svc.encoder.outputs):
        raise ApiError(400, f"return_sparse: the served model {svc.model_id} has no sparse head (its folder has no "
                       "sparse_linear.pt); serve a model that ships one, such as BGE-M3, or leave return_sparse out.",
                       param="return_sparse", code="sparse_not_available")

    async def work() -> Response:
        sparse: list[dict[str, float]] | None = None
        if body.return_sparse:
            result, sparse = await embed_with_sparse(request, svc, texts, body.input_type)
        else:
            result = await wait(request, submit(svc, request, texts, body.input_type), "input")
        vectors = result.vectors
        if body.encoding_format == "base64":
            little = vectors.astype("<f4", copy=False)
            data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(little[i].tobytes()).decode()}
                    for i in range(len(texts))]
        else:
            data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in range(len(texts))]
        for item, weights in zip(data, sparse or [], strict=False):
            item["sparse_embedding"] = sparse_item(weights)
        tokens = int(sum(result.tokens))
        svc.metrics.tokens.inc(tokens)
        return json_response({"object": "list", "data": data, "model": svc.model_id,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return await run_guarded(request, work)


@router.get("/v1/models", tags=["openai"])
async def models(service: ServiceDep) -> Response:
    """The served model (and reranker), OpenAI's list shape plus ``dimensions`` and ``max_tokens``."""
    svc = ready(service)
    data: list[dict[str, Any]] = [{"id": svc.model_id, "object": "model", "created": 0, "owned_by": "m3e-rag",
                                   "type": "embedding", "dimensions": svc.dim, "max_tokens": svc.window}]
    if svc.reranker_id is not None:
        data.append({"id": svc.reranker_id, "object": "model", "created": 0, "owned_by": "m3e-rag",
                     "type": "rerank"})
    return json_response({"object": "list", "data": data})


def _texts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [value]
    else:
        items = list(value)
    if not items:
        raise ApiError(400, "input is an empty list; send at least one text.", param="input", code="empty_input")
    if any(not isinstance(item, str) for item in items):
        raise ApiError(
            400,
            "input holds token ids, not text: this server tokenizes with the model's own tokenizer, so OpenAI "
            "(tiktoken) token ids mean nothing to it. Send strings. LangChain's OpenAIEmbeddings sends token ids "
            "unless you pass check_embedding_ctx_length=False: pass it.",
            param="input", code="token_ids_not_supported",
        )
    for i, text in enumerate(items):
        if not text.strip():
            raise ApiError(400, f"input[{i}] is {'an empty string' if not text else 'whitespace only'}; every "
                           "input must contain text: drop or replace it.", param="input", code="empty_input")
        try:
            check_unicode(text, f"input[{i}]")
        except InputError as exc:
            raise ApiError(400, str(exc), param="input", code="invalid_unicode") from exc
    return items
