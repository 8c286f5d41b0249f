"""text-embeddings-inference's native API as TEI clients send it (they never send `model`: it is
optional here): `POST /embed`, `POST /rerank` with `query` + `texts`, `POST /similarity`,
`POST /tokenize`, `POST /decode`, `GET /info`, and `POST /`.

`/rerank` also serves the native Cohere v1 / Jina / vLLM shape; the two are told apart by their
fields (`texts` is TEI's, `documents` the others'). TEI answers `POST /` with the route of the model it
serves; this server serves several, so `/` goes by the body: `texts` is rerank, `inputs` with
`source_sentence` is similarity (TEI's `/` with TASK=sentence-similarity), other `inputs` is embed,
and a body with neither is read as the first configured model's route (the model `/info` describes).
Errors keep the API's one error shape.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Discriminator, Field, StrictInt, Tag

from serving.api.dialects import native
from serving.api.errors import ModelNotFound
from serving.api.pipeline import Pipeline, to_internal
from serving.api.protocol import (
    MODEL_DESCRIPTION,
    DecodeRequest,
    EmbeddingRequest,
    EmbedInput,
    ModelName,
    NonEmptyStr,
    RerankRequest,
    RerankResponse,
    TokenizeRequest,
    TokenIds,
    _Request,
)

if TYPE_CHECKING:
    from serving.engines.base import Tokens

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


class SimilarityInput(_Request):
    source_sentence: NonEmptyStr = Field(description="The sentence the others are compared with.")
    sentences: Annotated[list[NonEmptyStr], Field(min_length=1)]


class SimilarityParameters(_Request):
    truncate: bool | None = Field(None, description="As on `/embed`.")
    truncation_direction: Direction = Field("Right", description="As on `/embed`.")
    prompt_name: Literal["query", "document"] | None = Field(None, description="As on `/embed`, for every sentence.")


class TeiSimilarityRequest(_Request):
    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None
    model: ModelName = Field(None, description=f"Extension. {MODEL_DESCRIPTION}")


class TeiTokenizeRequest(_Request):
    inputs: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
    add_special_tokens: bool = Field(True, description="Add what the tokenizer adds (the embedding models' EOS).")
    prompt_name: Literal["query", "document"] | None = Field(
        None, description="`query` tokenizes the query prompt built from each input (embedding models).")
    model: ModelName = Field(None, description="Extension. Whose tokenizer; default: the first configured model.")


class TeiDecodeRequest(_Request):
    ids: TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    skip_special_tokens: bool = True
    model: ModelName = Field(None, description="Extension. Whose tokenizer; default: the first configured model.")


class SimpleToken(BaseModel):
    id: int
    text: str = Field(description="The input's bytes start..stop, or the special token's own string.")
    special: bool
    start: int | None = Field(description="Byte offset in the (prompted) input; null for added special tokens.")
    stop: int | None


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


def embed_request_for_similarity(body: TeiSimilarityRequest) -> EmbeddingRequest:
    parameters = body.parameters or SimilarityParameters()
    return embed_request(TeiEmbedRequest(
        inputs=[body.inputs.source_sentence, *body.inputs.sentences], model=body.model,
        truncate=parameters.truncate, truncation_direction=parameters.truncation_direction,
        prompt_name=parameters.prompt_name))


def cosine_to_first(vectors: np.ndarray) -> list[float]:
    """Cosine of the first row with each other row, as TEI's `/similarity` answers."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return (unit[1:] @ unit[0]).astype(float).tolist()


def tokenize_request(body: TeiTokenizeRequest) -> TokenizeRequest:
    return to_internal(TokenizeRequest, model=body.model,
                       texts=[body.inputs] if isinstance(body.inputs, str) else body.inputs,
                       add_special_tokens=body.add_special_tokens,
                       input_type="query" if body.prompt_name == "query" else "document")


def simple_tokens(tokens: Tokens) -> list[SimpleToken]:
    """TEI's tokens: offsets in bytes of the text that was tokenized, not characters."""
    encoded = tokens.text.encode()
    byte_at = [0]
    for ch in tokens.text:
        byte_at.append(byte_at[-1] + len(ch.encode()))
    out = []
    for token_id, piece, span in zip(tokens.ids, tokens.pieces, tokens.spans):
        if span is None:
            out.append(SimpleToken(id=token_id, text=piece, special=True, start=None, stop=None))
        else:
            start, stop = byte_at[span[0]], byte_at[span[1]]
            out.append(SimpleToken(id=token_id, text=encoded[start:stop].decode(errors="replace"), special=False,
                                   start=start, stop=stop))
    return out


def decode_request(body: TeiDecodeRequest) -> DecodeRequest:
    ids = [body.ids] if isinstance(body.ids[0], int) else body.ids
    return to_internal(DecodeRequest, model=body.model, ids=ids, skip_special_tokens=body.skip_special_tokens)


def _rerank_shape(body: Any) -> str:
    return "tei" if isinstance(body, dict) and "texts" in body else "cohere/jina"


AnyRerankRequest = Annotated[
    Annotated[TeiRerankRequest, Tag("tei")] | Annotated[RerankRequest, Tag("cohere/jina")], Discriminator(_rerank_shape)]


def root_request(default: Literal["embed", "rerank"]):
    """`POST /`'s body: TEI rerank with `texts`, similarity with `inputs.source_sentence`, embed with
    other `inputs`; a body with neither field is read as the `default` route's (the first model's)."""

    def shape(body: Any) -> str:
        if not isinstance(body, dict):
            return default
        if "texts" in body:
            return "rerank"
        if "inputs" in body:
            return "similarity" if isinstance(body["inputs"], dict) else "embed"
        return default

    return Annotated[Annotated[TeiEmbedRequest, Tag("embed")] | Annotated[TeiRerankRequest, Tag("rerank")]
                     | Annotated[TeiSimilarityRequest, Tag("similarity")], Discriminator(shape)]


# --- routes


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()
    config = pipeline.config

    async def tei_embed(body: TeiEmbedRequest, request: Request) -> list[list[float]]:
        result = await pipeline.embed(embed_request(body), request, endpoint="tei_embed")
        return result.vectors.tolist()

    async def tei_rerank(body: TeiRerankRequest, request: Request) -> list[TeiRank]:
        result = await pipeline.rerank(rerank_request(body), request, endpoint="tei_rerank")
        order = sorted(range(len(result.scores)), key=lambda i: -result.scores[i])
        return [TeiRank(index=i, score=result.scores[i], text=body.texts[i] if body.return_text else None)
                for i in order]

    async def tei_similarity(body: TeiSimilarityRequest, request: Request) -> list[float]:
        result = await pipeline.embed(embed_request_for_similarity(body), request, endpoint="tei_similarity")
        return cosine_to_first(result.vectors)

    api.add_api_route("/embed", tei_embed, methods=["POST"], response_model=list[list[float]])

    @api.post("/rerank", response_model=list[TeiRank] | RerankResponse, response_model_exclude_none=True)
    async def rerank(body: AnyRerankRequest, request: Request) -> list[TeiRank] | RerankResponse:
        if isinstance(body, RerankRequest):
            return native.rerank_response(body, await pipeline.rerank(body, request))
        return await tei_rerank(body, request)

    api.add_api_route("/similarity", tei_similarity, methods=["POST"], response_model=list[float])

    RootRequest = root_request(default="rerank" if config.models[0].kind == "rerank" else "embed")

    async def root(body, request: Request) -> list[list[float]] | list[TeiRank] | list[float]:
        if isinstance(body, TeiRerankRequest):
            return await tei_rerank(body, request)
        if isinstance(body, TeiSimilarityRequest):
            return await tei_similarity(body, request)
        return await tei_embed(body, request)

    # The body's type depends on the config, and FastAPI resolves string annotations in module scope only.
    root.__annotations__["body"] = RootRequest
    api.add_api_route("/", root, methods=["POST"], response_model=list[list[float]] | list[TeiRank] | list[float],
                      response_model_exclude_none=True)

    @api.post("/tokenize", response_model=list[list[SimpleToken]])
    async def tokenize(body: TeiTokenizeRequest, request: Request) -> list[list[SimpleToken]]:
        tokenized = await pipeline.tokenize(tokenize_request(body), request, endpoint="tei_tokenize")
        return [simple_tokens(t) for t in tokenized]

    @api.post("/decode", response_model=list[str])
    async def decode(body: TeiDecodeRequest, request: Request) -> list[str]:
        return await pipeline.decode(decode_request(body), request, endpoint="tei_decode")

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
