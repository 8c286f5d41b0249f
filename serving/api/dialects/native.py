"""OpenAI embeddings and Cohere v1 / Jina / vLLM rerank: their schemas are the internal requests
(`serving/api/protocol.py`), so the adapters only build responses."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from serving.api.pipeline import Embedded, Pipeline, Scored, encode_base64, new_id
from serving.api.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    Usage,
)


def embedding_response(result: Embedded, body: EmbeddingRequest, vectors: np.ndarray | None = None,
                       **extra) -> Response:
    """The OpenAI response, serialised straight from the float32 array.

    Building it through the pydantic models would convert every element to a Python float and
    validate it twice (model, then FastAPI's `response_model`); orjson writes the array itself,
    each element as the shortest decimal that reads back as the same float32. `vectors`: the
    result's vectors as sent (quantized), if not its floats. `extra`: a dialect's further top-level
    fields.
    """
    vectors = np.asarray(result.vectors, dtype=np.float32) if vectors is None else vectors
    if body.encoding_format == "base64":
        embeddings: list = [encode_base64(v, body.embed_dtype, body.endianness) for v in vectors]
    else:
        embeddings = list(np.ascontiguousarray(vectors))
    content = {"object": "list",
               "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
               "model": result.model, "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
               **extra}
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def openai_embeddings(pipeline: Pipeline, body: EmbeddingRequest, request: Request,
                            endpoint: str = "embeddings") -> Response:
    """`POST /v1/embeddings` (also TEI's OpenAI-compatible route under a TEI base URL)."""
    result = await pipeline.embed(body, request, endpoint=endpoint)
    quantized = body.encoding_format not in ("float", "base64")
    return embedding_response(
        result, body, pipeline.quantize(result, body.encoding_format, body.dimensions) if quantized else None)


def rerank_response(body: RerankRequest, result: Scored) -> RerankResponse:
    results = [RerankResult(index=i, relevance_score=result.scores[i],
                            document=RerankDocument(text=result.texts[i]) if body.return_documents else None)
               for i in body.top(result.scores)]
    return RerankResponse(id=new_id("rerank"), model=result.model, results=results,
                          usage=Usage(prompt_tokens=result.tokens, total_tokens=result.tokens))


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()

    # The declared model documents the response; the handler returns it already serialised.
    @api.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await openai_embeddings(pipeline, body, request)

    @api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
        return rerank_response(body, await pipeline.rerank(body, request))

    return api
