"""text-embeddings-inference's native API as TEI clients send it (they never send `model`: it is
optional here): `POST /embed`, `POST /rerank` with `query` + `texts`, `POST /similarity`,
`POST /tokenize`, `POST /decode`, `GET /info`, and `POST /`.

`/rerank` also serves the native Cohere v1 / Jina / vLLM shape; the two are told apart by their
fields (`texts` is TEI's, `documents` the others'). TEI answers `POST /` with the route of the model it
serves; this server serves several, so `/` goes by the body: `texts` is rerank, `inputs` with
`source_sentence` is similarity (TEI's `/` with TASK=sentence-similarity), other `inputs` is embed,
and a body with neither is read as the first configured model's route (the model `/info` describes).
Errors keep the API's one error shape.

A TEI server serves one model, and TEI clients read `/info` and refuse to rerank when it names an
embedding model. So every served model also has a base URL of its own, `/tei/{model}` (the name may
contain `/`: `/tei/Qwen/Qwen3-Embedding-0.6B/embed`), under which TEI's routes behave as a TEI server
of that one model: the path fixes the model (a body's `model` is ignored, as TEI ignores it), `/info`
describes it, `POST /` is its kind's route, a route of the other kind is TEI's 424, `GET /health` is
the model's health, and errors come in TEI's shape `{"error", "error_type"}` (`{"message", "code",
"type"}` on its OpenAI-compatible `/v1/embeddings` and `/embeddings`), with the API's statuses.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Discriminator, Field, StrictInt, Tag
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.dialects import native
from serving.api.errors import ApiError, ModelKindMismatch, ModelNotFound, Unavailable, ValidationFailed, api_error
from serving.api.pipeline import Pipeline, to_internal
from serving.api.protocol import (
    MODEL_DESCRIPTION,
    DecodeRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbedInput,
    ErrorResponse,
    ModelName,
    NonEmptyStr,
    RerankRequest,
    RerankResponse,
    TokenIds,
    TokenizeRequest,
    _Request,
)

if TYPE_CHECKING:
    from serving.api.protocol import ModelCard
    from serving.config import AppConfig, EmbedDeploymentConfig, RerankDeploymentConfig
    from serving.engines.base import Tokens

BASE = "/tei/{model:path}"  # a served model's TEI base URL; `path`: model names may contain "/"

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


class EmbeddingModel(BaseModel):
    pooling: str = Field(description="`last_token`: Qwen3-Embedding pools the appended EOS.")


class ClassifierModel(BaseModel):
    id2label: dict[str, str] = Field(description="`{\"0\": \"yes\"}`: the score is p(yes).")
    label2id: dict[str, int]


class EmbeddingModelType(BaseModel):
    embedding: EmbeddingModel


class RerankerModelType(BaseModel):
    reranker: ClassifierModel


class TeiInfo(BaseModel):
    """TEI's `Info`, every field of it, as TEI sends them (null where TEI's is null too)."""

    model_id: str = Field(description="The checkpoint: hub id or path.")
    model_sha: str | None = Field(description="TEI: the `--revision` served. Null: no revision is pinned here.")
    model_dtype: str
    served_model_name: str = Field(description="The name clients send as `model`.")
    model_type: EmbeddingModelType | RerankerModelType
    max_concurrent_requests: int = Field(description="Requests one ingress replica takes before it answers 429 "
                                                     "(`router.max_ongoing_requests`).")
    max_input_length: int = Field(description="The engine's max_model_len.")
    max_batch_tokens: int = Field(description="The engine's token budget per step (vLLM's max_num_batched_tokens).")
    max_batch_requests: int | None = Field(description="The engine's sequences per step (vLLM's max_num_seqs).")
    max_client_batch_size: int = Field(description="Inputs (embed) or documents (rerank) per request.")
    auto_truncate: bool
    tokenization_workers: int = Field(description="Tokenizer threads per replica that holds the model: 1.")
    version: str
    sha: str | None = Field(description="TEI: the build's git commit. Null: the package records none.")
    docker_label: str | None = Field(description="TEI: its image's label. Null: not recorded.")


ErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]  # TEI's


class TeiErrorResponse(BaseModel):
    """TEI's error shape, under a TEI base URL."""

    error: str
    error_type: ErrorType


class TeiOpenAIErrorResponse(BaseModel):
    """TEI's error shape on its OpenAI-compatible routes, under a TEI base URL."""

    message: str
    code: int
    type: ErrorType


# The schemas under a TEI base URL, where the path pins the model: a body's `model` is accepted and ignored,
# as TEI ignores it.
IGNORED_MODEL = "Ignored: the base URL names the model."


class PinnedEmbedRequest(TeiEmbedRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


class PinnedRerankRequest(TeiRerankRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


class PinnedSimilarityRequest(TeiSimilarityRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


class PinnedTokenizeRequest(TeiTokenizeRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


class PinnedDecodeRequest(TeiDecodeRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


class PinnedOpenAIEmbeddingRequest(EmbeddingRequest):
    model: ModelName = Field(None, description=IGNORED_MODEL)


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


RootAnswer = list[list[float]] | list[TeiRank] | list[float]  # `POST /`: embed, rerank or similarity


def _body_shape(body: Any) -> str | None:
    """`POST /`'s route by the body: `texts` is rerank, `inputs` with `source_sentence` similarity, other
    `inputs` embed; None for a body with neither."""
    if isinstance(body, dict):
        if "texts" in body:
            return "rerank"
        if "inputs" in body:
            return "similarity" if isinstance(body["inputs"], dict) else "embed"
    return None


def root_request(default: Literal["embed", "rerank"]):
    """`POST /`'s body at the root; a body of neither shape is read as the `default` route's (the first
    model's)."""
    return Annotated[Annotated[TeiEmbedRequest, Tag("embed")] | Annotated[TeiRerankRequest, Tag("rerank")]
                     | Annotated[TeiSimilarityRequest, Tag("similarity")],
                     Discriminator(lambda body: _body_shape(body) or default)]


# `POST /` under a base URL: the body's shape picks the schema, the model's kind whether it is the right one.
PinnedRootRequest = Annotated[
    Annotated[PinnedEmbedRequest, Tag("embed")] | Annotated[PinnedRerankRequest, Tag("rerank")]
    | Annotated[PinnedSimilarityRequest, Tag("similarity")],
    Discriminator(_body_shape, custom_error_type="tei_body", custom_error_message=(
        "not a TEI body: send `inputs` (embed; similarity with `inputs.source_sentence`) or `query` and `texts` "
        "(rerank)"))]


def describe(m: EmbedDeploymentConfig | RerankDeploymentConfig, card: ModelCard | None,
             config: AppConfig) -> TeiInfo:
    """TEI's `/info` of one served model, from its config and what its running engine reported."""
    if card is None or card.max_model_len is None or card.max_num_batched_tokens is None:
        raise Unavailable(f"model {m.name!r} has not reported its engine's limits yet (starting?); retry later")
    if m.kind == "embed":
        model_type: EmbeddingModelType | RerankerModelType = EmbeddingModelType(
            embedding=EmbeddingModel(pooling="last_token"))
        max_client_batch_size = config.limits.max_inputs_per_request
        auto_truncate = m.engine.truncate
    else:
        yes = m.engine.yes_token  # TEI's one-label reranker: the label whose probability is the score
        model_type = RerankerModelType(reranker=ClassifierModel(id2label={"0": yes}, label2id={yes: 0}))
        max_client_batch_size = config.limits.max_documents_per_request
        auto_truncate = True  # a rerank request truncates unless it says `truncate: false`
    return TeiInfo(
        model_id=card.source or m.engine.model,
        model_sha=None,  # TEI's is the --revision it was given; a model here is a hub id or a path, no revision
        model_dtype=card.dtype or m.engine.dtype,  # what the engine runs (`auto` resolved)
        served_model_name=m.name,
        model_type=model_type,
        # The ingress replica's bound on HTTP requests in flight (its middleware answers 429 beyond it),
        # as TEI's --max-concurrent-requests bounds its router. A model's own queue bound may say 429 sooner.
        max_concurrent_requests=config.router.max_ongoing_requests,
        max_input_length=card.max_model_len,  # the engine's max_model_len
        # vLLM's scheduler budget as the running engine resolved it (config, else vLLM's default), as TEI's
        # --max-batch-tokens bounds one batch; max_num_seqs likewise bounds the sequences of one engine step.
        max_batch_tokens=card.max_num_batched_tokens,
        max_batch_requests=card.max_num_seqs,
        max_client_batch_size=max_client_batch_size,  # limits.max_inputs_per_request / max_documents_per_request
        auto_truncate=auto_truncate,
        tokenization_workers=1,  # the replica holding the model tokenizes on its event loop: one thread
        version=_version(),
        sha=None,  # TEI's build commit; the package records none
        docker_label=None,  # TEI's image label; none is recorded
    )


def of_kind(m: EmbedDeploymentConfig | RerankDeploymentConfig, kind: Literal["embed", "rerank"],
            config: AppConfig) -> None:
    """A base URL's route of the other kind is TEI's 424 (`Backend`: "model is not a re-ranker model")."""
    if m.kind != kind:
        what = {"embed": "an embedding model", "rerank": "a re-ranker model"}
        bases = [f"/tei/{other.name}" for other in config.models if other.kind == kind]
        raise ModelKindMismatch(f"model {m.name!r} is not {what[kind]} (it is {what[m.kind]}); base URLs of "
                                f"{kind} models: {bases}")


def pinned(body: _Request, m: EmbedDeploymentConfig | RerankDeploymentConfig) -> Any:
    """The body with the base URL's model: the path wins over any `model` in the body."""
    return body.model_copy(update={"model": m.name})


def error_type(status: int) -> str:
    """TEI's error type for a status: TEI's own pairing (Backend 424, Overloaded 429, Unhealthy 503,
    Validation 422) read backwards; every other client error is `Validation`, a server error `Backend`."""
    by_status = {424: "Backend", 429: "Overloaded", 503: "Unhealthy"}
    return by_status.get(status, "Validation" if status < 500 else "Backend")


# --- handlers, shared by the routes at the root and under a base URL


class Handlers:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    async def embed(self, body: TeiEmbedRequest, request: Request) -> list[list[float]]:
        result = await self.pipeline.embed(embed_request(body), request, endpoint="tei_embed")
        return result.vectors.tolist()

    async def rerank(self, body: TeiRerankRequest, request: Request) -> list[TeiRank]:
        result = await self.pipeline.rerank(rerank_request(body), request, endpoint="tei_rerank")
        order = sorted(range(len(result.scores)), key=lambda i: -result.scores[i])
        return [TeiRank(index=i, score=result.scores[i], text=body.texts[i] if body.return_text else None)
                for i in order]

    async def similarity(self, body: TeiSimilarityRequest, request: Request) -> list[float]:
        result = await self.pipeline.embed(embed_request_for_similarity(body), request, endpoint="tei_similarity")
        return cosine_to_first(result.vectors)

    async def tokenize(self, body: TeiTokenizeRequest, request: Request) -> list[list[SimpleToken]]:
        tokenized = await self.pipeline.tokenize(tokenize_request(body), request, endpoint="tei_tokenize")
        return [simple_tokens(t) for t in tokenized]

    async def decode(self, body: TeiDecodeRequest, request: Request) -> list[str]:
        return await self.pipeline.decode(decode_request(body), request, endpoint="tei_decode")

    async def info(self, name: str) -> TeiInfo:
        card = next((c for c in (await self.pipeline.service.models()).data if c.id == name), None)
        return describe(self.pipeline.config.model(name), card, self.pipeline.config)


# --- routes at the root


def router(pipeline: Pipeline) -> APIRouter:
    api = APIRouter()
    config = pipeline.config
    tei = Handlers(pipeline)

    api.add_api_route("/embed", tei.embed, methods=["POST"], response_model=list[list[float]], name="tei_embed")

    @api.post("/rerank", response_model=list[TeiRank] | RerankResponse, response_model_exclude_none=True)
    async def rerank(body: AnyRerankRequest, request: Request) -> list[TeiRank] | RerankResponse:
        if isinstance(body, RerankRequest):
            return native.rerank_response(body, await pipeline.rerank(body, request))
        return await tei.rerank(body, request)

    api.add_api_route("/similarity", tei.similarity, methods=["POST"], response_model=list[float],
                      name="tei_similarity")

    RootRequest = root_request(default="rerank" if config.models[0].kind == "rerank" else "embed")

    async def root(body, request: Request) -> RootAnswer:
        if isinstance(body, TeiRerankRequest):
            return await tei.rerank(body, request)
        if isinstance(body, TeiSimilarityRequest):
            return await tei.similarity(body, request)
        return await tei.embed(body, request)

    # The body's type depends on the config, and FastAPI resolves string annotations in module scope only.
    root.__annotations__["body"] = RootRequest
    api.add_api_route("/", root, methods=["POST"], response_model=RootAnswer, response_model_exclude_none=True)

    api.add_api_route("/tokenize", tei.tokenize, methods=["POST"], response_model=list[list[SimpleToken]])
    api.add_api_route("/decode", tei.decode, methods=["POST"], response_model=list[str])

    @api.get("/info", response_model=TeiInfo)
    async def info(model: Annotated[str | None, Query(
            max_length=256, description="Which model to describe; default: the first configured model.")] = None
                   ) -> TeiInfo:
        name = model if model is not None else config.models[0].name
        if name not in {m.name for m in config.models}:
            raise ModelNotFound(f"model {name!r} is not served. Available: {sorted(m.name for m in config.models)}")
        return await tei.info(name)

    return api


# --- routes under a model's base URL, `/tei/{model}`


class TeiRoute(APIRoute):
    """A route under a TEI base URL: the API's errors, with their statuses and headers, in TEI's shape."""

    @staticmethod
    def render(error: ApiError) -> dict[str, Any]:
        return {"error": error.message, "error_type": error_type(error.status_code)}

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answer_in_tei_shape(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, RequestValidationError, StarletteHTTPException) as exc:
                error = api_error(request, exc)
                return JSONResponse(self.render(error), status_code=error.status_code, headers=error.headers)

        return answer_in_tei_shape


class TeiOpenAIRoute(TeiRoute):
    """TEI's OpenAI-compatible routes answer errors flat: `{"message", "code", "type"}`."""

    @staticmethod
    def render(error: ApiError) -> dict[str, Any]:
        return {"message": error.message, "code": error.status_code, "type": error_type(error.status_code)}


def error_responses(statuses: tuple[int, ...], shape: type[BaseModel] = TeiErrorResponse) -> dict:
    """OpenAPI `responses` of routes under a base URL. 404 (no such route), 413 (body over the limit) and 429
    (the ingress at capacity) may also come from before the route, in the API's own shape."""
    meaning = {400: "Body is not valid JSON", 401: "Missing or wrong API key", 404: "The path names no served model",
               413: "Over a request limit", 422: "Invalid field values", 424: "The model is of the other kind",
               429: "At capacity; see Retry-After", 503: "The model is not ready"}
    return {s: {"model": shape | ErrorResponse if s in (404, 413, 429) else shape, "description": meaning[s]}
            for s in statuses}


def served_model(config: AppConfig) -> Callable:
    """The dependency that reads a base URL's model from the path: its config, or 404."""
    models = {m.name: m for m in config.models}

    async def model_of_path(model: str = Path(description="A served model's name (`models[].name`).",
                                              json_schema_extra={"enum": list(models)})):
        if model not in models:
            raise ModelNotFound(f"model {model!r} is not served. TEI base URLs: {[f'/tei/{n}' for n in models]}")
        return models[model]

    return model_of_path


def base_router(pipeline: Pipeline, error_statuses: tuple[int, ...]) -> APIRouter:
    """TEI's routes of each served model under its base URL, `/tei/{model}`. `error_statuses`: what any of
    them may answer (401 only when keys are configured); the routes of one kind of model add 424."""
    config = pipeline.config
    tei = Handlers(pipeline)
    model_of = Depends(served_model(config))
    api = APIRouter(route_class=TeiRoute)
    errors, kind_errors = error_responses(error_statuses), error_responses((*error_statuses, 424))

    async def info(m=model_of) -> TeiInfo:
        return await tei.info(m.name)

    async def embed(body: PinnedEmbedRequest, request: Request, m=model_of) -> list[list[float]]:
        of_kind(m, "embed", config)
        return await tei.embed(pinned(body, m), request)

    async def rerank(body: PinnedRerankRequest, request: Request, m=model_of) -> list[TeiRank]:
        of_kind(m, "rerank", config)
        return await tei.rerank(pinned(body, m), request)

    async def similarity(body: PinnedSimilarityRequest, request: Request, m=model_of) -> list[float]:
        of_kind(m, "embed", config)
        return await tei.similarity(pinned(body, m), request)

    async def tokenize(body: PinnedTokenizeRequest, request: Request, m=model_of) -> list[list[SimpleToken]]:
        return await tei.tokenize(pinned(body, m), request)

    async def decode(body: PinnedDecodeRequest, request: Request, m=model_of) -> list[str]:
        return await tei.decode(pinned(body, m), request)

    async def openai_embeddings(body: PinnedOpenAIEmbeddingRequest, request: Request, m=model_of) -> Response:
        of_kind(m, "embed", config)
        return await native.openai_embeddings(pipeline, pinned(body, m), request, endpoint="tei_openai_embeddings")

    async def root(body: PinnedRootRequest, request: Request, m=model_of) -> RootAnswer:
        # TEI's `POST /` is its model's route: a body of the other kind does not parse there (422).
        if isinstance(body, PinnedRerankRequest) != (m.kind == "rerank"):
            kind, wanted = (("reranker", "rerank body (`query`, `texts`)") if m.kind == "rerank"
                            else ("embedding model", "embed body (`inputs`)"))
            raise ValidationFailed(f"`POST /` of {kind} {m.name!r} takes a TEI {wanted}")
        if isinstance(body, PinnedRerankRequest):
            return await tei.rerank(pinned(body, m), request)
        if isinstance(body, PinnedSimilarityRequest):
            return await tei.similarity(pinned(body, m), request)
        return await tei.embed(pinned(body, m), request)

    api.add_api_route(f"{BASE}/info", info, methods=["GET"], response_model=TeiInfo, responses=errors)
    api.add_api_route(f"{BASE}/embed", embed, methods=["POST"], response_model=list[list[float]],
                      responses=kind_errors)
    api.add_api_route(f"{BASE}/rerank", rerank, methods=["POST"], response_model=list[TeiRank],
                      response_model_exclude_none=True, responses=kind_errors)
    api.add_api_route(f"{BASE}/similarity", similarity, methods=["POST"], response_model=list[float],
                      responses=kind_errors)
    api.add_api_route(f"{BASE}/tokenize", tokenize, methods=["POST"], response_model=list[list[SimpleToken]],
                      responses=errors)
    api.add_api_route(f"{BASE}/decode", decode, methods=["POST"], response_model=list[str], responses=errors)
    for path in ("/v1/embeddings", "/embeddings"):
        api.add_api_route(f"{BASE}{path}", openai_embeddings, methods=["POST"], response_model=EmbeddingResponse,
                          responses=error_responses((*error_statuses, 424), TeiOpenAIErrorResponse),
                          route_class_override=TeiOpenAIRoute)
    # Last: a bare `{model:path}` matches every path under /tei/, so the routes above must be tried first.
    for path in (f"{BASE}/", BASE):
        api.add_api_route(path, root, methods=["POST"], response_model=RootAnswer, response_model_exclude_none=True,
                          responses=kind_errors)
    return api


def base_probes(pipeline: Pipeline) -> APIRouter:
    """TEI's health probes of each model under its base URL (`GET /health`, `GET /`), public as TEI's are.
    Include it after `base_router`: its bare `/tei/{model}` matches every path under /tei/ too."""
    api = APIRouter(route_class=TeiRoute)
    model_of = Depends(served_model(pipeline.config))

    async def health(m=model_of) -> Response:
        state = (await pipeline.service.readiness()).get(m.name)
        if state != "ready":
            raise Unavailable(f"model {m.name!r} is not ready: {state or 'no answer'}")
        return Response()  # TEI's health is an empty 200

    for path in (f"{BASE}/health", f"{BASE}/", BASE):
        api.add_api_route(path, health, methods=["GET"], response_class=Response,
                          responses={200: {"description": "The model is ready (an empty body, as TEI's)"},
                                     **error_responses((404, 413, 429, 503))})
    return api


def _version() -> str:
    try:
        return importlib.metadata.version("qwen3-serving")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
