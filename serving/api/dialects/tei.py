"""text-embeddings-inference's native API: `POST /embed`, `POST /rerank` with `query` + `texts`, and
`GET /info`, as TEI clients send them (they never send `model`: it is optional here).

`/rerank` also serves the native Cohere v1 / Jina / vLLM shape; the two are told apart by their
fields (`texts` is TEI's, `documents` the others'). Errors keep the API's one error shape.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Discriminator, Field, StrictInt, Tag

from serving.api.dialects import native
from serving.api.errors import ModelNotFound
from serving.api.pipeline import Pipeline, to_internal
from serving.api.protocol import (
    MODEL_DESCRIPTION,
    EmbeddingRequest,
    EmbedInput,
    ModelName,
    NonEmptyStr,
    RerankRequest,
    RerankResponse,
    _Request,
)

Direction = Literal["Right", "Left", "right", "left"]

# --- schemas


class TeiEmbedRequest(_Request):
    inputs: EmbedInput = Field(description="A string, a list of strings, a token list or a list of token lists.")
    model: ModelName = Field(None, description=f"Extension. {MODEL_DESCRIPTION}")
    truncate: bool | None = Field(
        None, description="true truncates over-long inputs to the model's limit, false rejects them (413); "
                          "unset: the model's `engine.truncate` (TEI's --auto-truncate).")
    truncation_direction: Direction = Field("Right", description="`Right` cuts the end (keeping the EOS), "
                                                                 "`Left` the start.")
    normalize: bool = Field(True, description="L2-normalise the vectors.")
    dimensions: StrictInt | None = Field(None, description="MRL output size, 32..model hidden size.")
    prompt_name: Literal["query", "document"] | None = Field(
        None, description="The model's sentence-transformers prompt: `query` applies the query instruction, "
                          "`document` none.")


class TeiRerankRequest(_Request):
    query: NonEmptyStr
    texts: Annotated[list[NonEmptyStr], Field(min_length=1)]
    model: ModelName = Field(None, description=f"Extension. {MODEL_DESCRIPTION}")
    truncate: bool | None = Field(None, description="false rejects over-long pairs (413); unset or true truncates.")
    truncation_direction: Literal["Right", "right"] = Field(
        "Right", description="Only `Right`: the pair is cut from its end, never the instruction.")
    raw_scores: bool = Field(False, description="Return logp(yes) - logp(no) instead of p(yes).")
    return_text: bool = Field(False, description="Echo each text in its result.")


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TeiInfo(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict[str, Any] = Field(description="`{\"embedding\": {\"pooling\": \"last_token\"}}` or "
                                                   "`{\"reranker\": {...}}`.")
    max_concurrent_requests: int
    max_input_length: int | None = Field(None, description="The model's max_model_len.")
    max_client_batch_size: int
    auto_truncate: bool
    version: str


# --- adapters


def embed_request(body: TeiEmbedRequest) -> EmbeddingRequest:
    left = body.truncation_direction.lower() == "left"
    return to_internal(
        EmbeddingRequest,
        model=body.model, input=body.inputs, dimensions=body.dimensions,
        input_type="query" if body.prompt_name == "query" else "document",
        truncate_prompt_tokens=-1 if body.truncate else None, truncation_side="left" if left else None,
        truncate=False if body.truncate is False else None, use_activation=body.normalize)


def rerank_request(body: TeiRerankRequest) -> RerankRequest:
    return to_internal(RerankRequest, model=body.model, query=body.query, documents=body.texts,
                       return_documents=False, truncate=False if body.truncate is False else None,
                       use_activation=not body.raw_scores)


def _rerank_shape(body: Any) -> str:
    return "tei" if isinstance(body, dict) and "texts" in body else "cohere/jina"


AnyRerankRequest = Annotated[
    Annotated[TeiRerankRequest, Tag("tei")] | Annotated[RerankRequest, Tag("cohere/jina")], Discriminator(_rerank_shape)]


# --- routes


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()
    config = pipeline.config

    @api.post("/embed", response_model=list[list[float]])
    async def embed(body: TeiEmbedRequest, request: Request) -> list[list[float]]:
        result = await pipeline.embed(embed_request(body), request, endpoint="tei_embed")
        return result.vectors.tolist()

    @api.post("/rerank", response_model=list[TeiRank] | RerankResponse, response_model_exclude_none=True)
    async def rerank(body: AnyRerankRequest, request: Request) -> list[TeiRank] | RerankResponse:
        if isinstance(body, RerankRequest):
            return native.rerank_response(body, await pipeline.rerank(body, request))
        result = await pipeline.rerank(rerank_request(body), request, endpoint="tei_rerank")
        order = sorted(range(len(result.scores)), key=lambda i: -result.scores[i])
        return [TeiRank(index=i, score=result.scores[i], text=body.texts[i] if body.return_text else None)
                for i in order]

    @api.get("/info", response_model=TeiInfo)
    async def info(model: Annotated[str | None, Query(
            max_length=256, description="Which model to describe; default: the first configured model.")] = None
                   ) -> TeiInfo:
        served = {m.name: m for m in config.models}
        name = model if model is not None else config.models[0].name
        if name not in served:
            raise ModelNotFound(f"model {name!r} is not served. Available: {sorted(served)}")
        m = served[name]
        card = next((c for c in (await pipeline.service.models()).data if c.id == name), None)
        is_embed = m.kind == "embed"
        return TeiInfo(
            model_id=card.source if card and card.source else m.engine.model,
            model_dtype=m.engine.dtype,
            model_type={"embedding": {"pooling": "last_token"}} if is_embed else {"reranker": {"id2label": {
                "0": "yes"}}},
            max_concurrent_requests=config.router.max_ongoing_requests,
            max_input_length=card.max_model_len if card else None,
            max_client_batch_size=(config.limits.max_inputs_per_request if is_embed
                                   else config.limits.max_documents_per_request),
            auto_truncate=m.engine.truncate if is_embed else True,
            version=_version())

    return api


def _version() -> str:
    try:
        return importlib.metadata.version("qwen3-serving")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
