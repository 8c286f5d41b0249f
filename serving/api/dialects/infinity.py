"""Infinity's API (michaelfeil/infinity): `/embeddings`, `/rerank` and `/models`, without `/v1`.

Infinity serves them under its `--url-prefix` (empty by default). Here `/rerank` is TEI's and Cohere's,
so Infinity's full set lives under the prefix `/infinity` (point an Infinity client at
`http://host:8000/infinity`); `POST /embeddings` and `GET /models` clash with nothing and are served
bare too. Infinity's rerank gives `document` as a plain string and returns no documents by default.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StrictInt

from serving.api.dialects import native
from serving.api.pipeline import Pipeline, new_id, to_internal
from serving.api.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ModelList,
    NonEmptyStr,
    RerankRequest,
    Usage,
    _Request,
)

PREFIX = "/infinity"
UNSPECIFIED = "default/not-specified"  # Infinity's default `model`: the server's (only) model
MODEL_DESCRIPTION = (f"Model or alias name; omitted or `{UNSPECIFIED}`: the only model of this kind (with several, "
                     "a 422 lists them).")

# --- schemas


class InfinityEmbeddingRequest(_Request):
    input: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
    model: NonEmptyStr = Field(UNSPECIFIED, description=MODEL_DESCRIPTION)
    encoding_format: Literal["float", "base64"] = Field("float", description="`base64`: little-endian float32.")
    user: Annotated[str, Field(max_length=256)] | None = None
    dimensions: StrictInt = Field(0, ge=0, description="MRL output size, 32..model hidden size; 0: the full size.")
    modality: Literal["text"] = Field("text", description="Only `text`: these models read text.")


class InfinityRerankRequest(_Request):
    query: NonEmptyStr
    documents: Annotated[list[NonEmptyStr], Field(min_length=1)]
    return_documents: bool = Field(False, description="Echo each document's text in its result.")
    raw_scores: bool = Field(False, description="Return logp(yes) - logp(no) instead of p(yes).")
    model: NonEmptyStr = Field(UNSPECIFIED, description=MODEL_DESCRIPTION)
    top_n: StrictInt | None = Field(None, gt=0, description="Return only the best n results.")


class InfinityRerankResult(BaseModel):
    relevance_score: float
    index: int
    document: str | None = None


class InfinityRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[InfinityRerankResult]
    model: str
    usage: Usage
    id: str
    created: int


class InfinityModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "qwen3-serving"
    created: int
    backend: str = "vllm"
    capabilities: list[str] = Field(description="`[\"embed\"]` or `[\"rerank\"]`.")
    stats: dict = Field(default_factory=dict)


class InfinityModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[InfinityModel]


# --- adapters


def _model(name: str) -> str | None:
    return None if name == UNSPECIFIED else name


def embed_request(body: InfinityEmbeddingRequest) -> EmbeddingRequest:
    return to_internal(EmbeddingRequest, model=_model(body.model), input=body.input, user=body.user,
                       dimensions=body.dimensions or None, encoding_format=body.encoding_format,
                       endianness="little")


def rerank_request(body: InfinityRerankRequest) -> RerankRequest:
    return to_internal(RerankRequest, model=_model(body.model), query=body.query, documents=body.documents,
                       top_n=body.top_n, return_documents=body.return_documents,
                       use_activation=False if body.raw_scores else None)


def model_list(models: ModelList) -> InfinityModelList:
    return InfinityModelList(data=[InfinityModel(id=m.id, created=m.created, capabilities=[m.kind])
                                   for m in models.data])


# --- routes


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()

    async def embeddings(body: InfinityEmbeddingRequest, request: Request) -> Response:
        internal = embed_request(body)
        result = await pipeline.embed(internal, request, endpoint="infinity_embeddings")
        return native.embedding_response(result, internal, id=new_id("infinity"), created=int(time.time()))

    async def rerank(body: InfinityRerankRequest, request: Request) -> InfinityRerankResponse:
        internal = rerank_request(body)
        result = await pipeline.rerank(internal, request, endpoint="infinity_rerank")
        return InfinityRerankResponse(
            results=[InfinityRerankResult(relevance_score=result.scores[i], index=i,
                                          document=result.texts[i] if body.return_documents else None)
                     for i in internal.top(result.scores)],
            model=result.model, usage=Usage(prompt_tokens=result.tokens, total_tokens=result.tokens),
            id=new_id("infinity"), created=int(time.time()))

    async def models() -> InfinityModelList:
        return model_list(await pipeline.service.models())

    for prefix in (PREFIX, ""):
        api.add_api_route(f"{prefix}/embeddings", embeddings, methods=["POST"], response_model=EmbeddingResponse)
        api.add_api_route(f"{prefix}/models", models, methods=["GET"], response_model=InfinityModelList)
    api.add_api_route(f"{PREFIX}/rerank", rerank, methods=["POST"], response_model=InfinityRerankResponse,
                      response_model_exclude_none=True)
    return api
