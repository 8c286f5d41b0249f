"""OpenAI embeddings and Cohere v1 / Jina / vLLM rerank: their schemas are the internal requests
(`serving/api/protocol.py`), so the adapters only build responses."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serving.api.pipeline import Embedded, Pipeline, Scored, encode_base64, new_id
from serving.api.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    Usage,
)


def embedding_response(result: Embedded, body: EmbeddingRequest) -> EmbeddingResponse:
    def encode(vector):
        if body.encoding_format == "base64":
            return encode_base64(vector, body.embed_dtype, body.endianness)
        return vector.tolist()

    data = [EmbeddingData(index=i, embedding=encode(v)) for i, v in enumerate(result.vectors)]
    return EmbeddingResponse(data=data, model=result.model,
                             usage=Usage(prompt_tokens=result.tokens, total_tokens=result.tokens))


def rerank_response(body: RerankRequest, result: Scored) -> RerankResponse:
    results = [RerankResult(index=i, relevance_score=result.scores[i],
                            document=RerankDocument(text=result.texts[i]) if body.return_documents else None)
               for i in body.top(result.scores)]
    return RerankResponse(id=new_id("rerank"), model=result.model, results=results,
                          usage=Usage(prompt_tokens=result.tokens, total_tokens=result.tokens))


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
        return embedding_response(await pipeline.embed(body, request), body)

    @api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
        return rerank_response(body, await pipeline.rerank(body, request))

    return api
