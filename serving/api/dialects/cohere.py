"""Cohere's API: v2 `POST /v2/rerank` and `POST /v2/embed` (`cohere.ClientV2`), v1 `POST /v1/embed`
(`cohere.Client`).

Cohere v1 rerank is the native `/v1/rerank`. Cohere's `priority` (lower runs first) may make a request less
urgent than its tenant's lane, never more (`serving/tenants.py`).
`rank_fields` and `max_chunks_per_doc` are accepted and change nothing: documents here are plain
strings (no fields to pick), and `max_tokens_per_doc` bounds each document instead of chunking it.
`embedding_types` `int8`, `uint8`, `binary` and `ubinary` are computed from the float vectors by
`serving/quantization.py`, with the serving model's calibration ranges.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictInt, model_validator

from serving.api.pipeline import Embedded, Pipeline, encode_base64, new_id, to_internal
from serving.api.protocol import (
    MODEL_DESCRIPTION,
    PRIORITY,
    EmbeddingRequest,
    ModelName,
    NonEmptyStr,
    RerankDocument,
    RerankRequest,
    _Request,
)

# --- schemas

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]  # Cohere's `EmbeddingType`
EmbeddingTypes = Annotated[list[EmbeddingType], Field(min_length=1, max_length=6)]
EMBEDDING_TYPES_DESCRIPTION = (
    "`float` lists, `base64` (little-endian float32), `int8` / `uint8` (one integer per dimension, scaled by the "
    "model's calibration ranges), `binary` / `ubinary` (sign bits packed eight dimensions per int8 / uint8).")


class V2RerankRequest(_Request):
    model: ModelName = Field(None, description=MODEL_DESCRIPTION)
    query: NonEmptyStr
    documents: Annotated[list[NonEmptyStr], Field(min_length=1)]
    top_n: StrictInt | None = Field(None, ge=1, description="Return only the best n results.")
    max_tokens_per_doc: StrictInt | None = Field(None, ge=1, description="Truncate each document to this many tokens.")
    return_documents: bool = Field(False, description="Echo each document as `{\"text\"}` in its result.")
    rank_fields: list[NonEmptyStr] | None = Field(None, description="Accepted, no effect: documents are strings.")
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1, description="Accepted, no effect: documents are not "
                                                                         "chunked (`max_tokens_per_doc` cuts them).")
    priority: StrictInt = Field(0, ge=0, le=1_000_000, description=PRIORITY)


class V2RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class ApiVersion(BaseModel):
    version: str = "2"


class BilledUnits(BaseModel):
    search_units: int | None = None
    input_tokens: int | None = None


class V2Meta(BaseModel):
    api_version: ApiVersion = Field(default_factory=ApiVersion)
    billed_units: BilledUnits


class V2RerankResponse(BaseModel):
    id: str
    results: list[V2RerankResult]
    meta: V2Meta


class V2EmbedRequest(_Request):
    model: ModelName = Field(None, description=MODEL_DESCRIPTION)
    texts: Annotated[list[NonEmptyStr], Field(min_length=1)]
    input_type: Literal["search_query", "search_document"] = Field(
        "search_document", description="`search_query` applies the model's query instruction; "
                                       "`search_document` embeds as is.")
    embedding_types: EmbeddingTypes = Field(["float"], description=EMBEDDING_TYPES_DESCRIPTION)
    output_dimension: StrictInt | None = Field(None, description="MRL output size, 32..model hidden size.")
    max_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000, description="Keep at most this many tokens per text "
                                                                               "(at most the model's max_model_len).")
    truncate: Literal["NONE", "START", "END"] = Field(
        "END", description="Over-long texts: `END` cuts the end (keeping the EOS), `START` the start, `NONE` "
                           "rejects them with 413.")
    priority: StrictInt = Field(0, ge=0, le=1_000_000, description=PRIORITY)

    @model_validator(mode="after")
    def _max_tokens_truncates(self) -> V2EmbedRequest:
        if self.max_tokens is not None and self.truncate == "NONE":
            raise ValueError("`max_tokens` cuts texts, which `truncate: NONE` forbids; send START or END")
        return self


class EmbeddingsByType(BaseModel):
    float_: list[list[float]] | None = Field(None, alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class V1EmbedRequest(_Request):
    texts: Annotated[list[NonEmptyStr], Field(min_length=1)]
    model: ModelName = Field(None, description=MODEL_DESCRIPTION)
    input_type: Literal["search_query", "search_document", "classification", "clustering"] = Field(
        "search_document", description="`search_query` applies the model's query instruction; the others embed "
                                       "the text as is.")
    embedding_types: EmbeddingTypes | None = Field(
        None, description="Unset: `embeddings` is a list of float vectors (`embeddings_floats`); set: by type, "
                          + EMBEDDING_TYPES_DESCRIPTION)
    truncate: Literal["NONE", "START", "END"] = Field(
        "END", description="Over-long texts: `END` cuts the end (keeping the EOS), `START` the start, `NONE` "
                           "rejects them with 413.")


class V1Meta(BaseModel):
    api_version: ApiVersion = Field(default_factory=lambda: ApiVersion(version="1"))
    billed_units: BilledUnits


class V1FloatsEmbedResponse(BaseModel):
    response_type: Literal["embeddings_floats"] = "embeddings_floats"
    id: str
    embeddings: list[list[float]]
    texts: list[str]
    meta: V1Meta


class V1ByTypeEmbedResponse(BaseModel):
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    id: str
    embeddings: EmbeddingsByType
    texts: list[str]
    meta: V1Meta


class V2EmbedResponse(BaseModel):
    id: str
    embeddings: EmbeddingsByType
    texts: list[str]
    meta: V2Meta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


# --- adapters


def rerank_request(body: V2RerankRequest) -> RerankRequest:
    return to_internal(RerankRequest, model=body.model, query=body.query, documents=body.documents,
                       top_n=body.top_n, max_tokens_per_doc=body.max_tokens_per_doc,
                       return_documents=body.return_documents, priority=body.priority)


def v1_embed_request(body: V1EmbedRequest) -> EmbeddingRequest:
    return to_internal(
        EmbeddingRequest,
        model=body.model, input=body.texts, input_type="query" if body.input_type == "search_query" else "document",
        truncation_side="left" if body.truncate == "START" else None,
        truncate=False if body.truncate == "NONE" else None)


def embeddings_by_type(pipeline: Pipeline, result: Embedded, types: list[str],
                       dimensions: int | None = None) -> EmbeddingsByType:
    by_type = {t: pipeline.quantize(result, t, dimensions).tolist() for t in set(types) - {"base64"}}
    if "base64" in types:
        by_type["base64"] = [encode_base64(v) for v in result.vectors]
    return EmbeddingsByType.model_validate(by_type)


def embed_request(body: V2EmbedRequest) -> EmbeddingRequest:
    # Cohere's `truncate` names the end it cuts; vLLM's `truncation_side` names it too ("left": the start).
    return to_internal(
        EmbeddingRequest,
        model=body.model, input=body.texts, dimensions=body.output_dimension,
        input_type="query" if body.input_type == "search_query" else "document",
        truncate_prompt_tokens=body.max_tokens, truncation_side="left" if body.truncate == "START" else None,
        truncate=False if body.truncate == "NONE" else None, priority=body.priority)


# --- routes


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()

    @api.post("/v2/rerank", response_model=V2RerankResponse, response_model_exclude_none=True)
    async def rerank_v2(body: V2RerankRequest, request: Request) -> V2RerankResponse:
        internal = rerank_request(body)
        result = await pipeline.rerank(internal, request, endpoint="cohere_v2_rerank")
        return V2RerankResponse(
            id=new_id("rerank"),
            results=[V2RerankResult(index=i, relevance_score=result.scores[i],
                                    document=RerankDocument(text=result.texts[i]) if body.return_documents else None)
                     for i in internal.top(result.scores)],
            meta=V2Meta(billed_units=BilledUnits(search_units=1)))

    @api.post("/v2/embed", response_model=V2EmbedResponse, response_model_exclude_none=True,
              response_model_by_alias=True)
    async def embed_v2(body: V2EmbedRequest, request: Request) -> V2EmbedResponse:
        result = await pipeline.embed(embed_request(body), request, endpoint="cohere_v2_embed")
        embeddings = embeddings_by_type(pipeline, result, body.embedding_types, body.output_dimension)
        return V2EmbedResponse(id=new_id("embed"), embeddings=embeddings, texts=body.texts,
                               meta=V2Meta(billed_units=BilledUnits(input_tokens=result.tokens)))

    @api.post("/v1/embed", response_model=V1FloatsEmbedResponse | V1ByTypeEmbedResponse,
              response_model_exclude_none=True, response_model_by_alias=True)
    async def embed_v1(body: V1EmbedRequest, request: Request) -> V1FloatsEmbedResponse | V1ByTypeEmbedResponse:
        result = await pipeline.embed(v1_embed_request(body), request, endpoint="cohere_v1_embed")
        meta = V1Meta(billed_units=BilledUnits(input_tokens=result.tokens))
        if body.embedding_types is None:
            return V1FloatsEmbedResponse(id=new_id("embed"), embeddings=result.vectors.tolist(), texts=body.texts,
                                         meta=meta)
        return V1ByTypeEmbedResponse(id=new_id("embed"), texts=body.texts, meta=meta,
                                     embeddings=embeddings_by_type(pipeline, result, body.embedding_types))

    return api
