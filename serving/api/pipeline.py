"""The steps every route shares, whatever its dialect: clock -> check limits -> router -> result
(the tenant's quotas were checked before the body was read: `serving.api.middleware.TenantGate`).

A dialect's route converts its request to an `EmbeddingRequest` / `RerankRequest`, runs it through
here, and converts the result back. The `ApiService` (the router deployment) never learns which
dialect a request came in.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving.api.errors import ApiError, RequestTooLarge, ValidationFailed
from serving.api.protocol import DecodeRequest, EmbeddingRequest, ModelList, RerankRequest, TokenizeRequest
from serving.api.timing import RequestClock, clock_of
from serving.config import AppConfig, LimitsConfig
from serving.quantization import CalibrationError, Quantizer
from serving.tenants import TENANT_KEY, Tenant

RequestT = TypeVar("RequestT", bound=BaseModel)


class ApiService(Protocol):
    config: AppConfig

    # The model calls time themselves on the request's clock (`RequestClock.call_model`); the tenant
    # gives their lane and cache scope.
    async def embed(self, request: EmbeddingRequest, routing_key: str, clock: RequestClock,
                    tenant: Tenant) -> tuple[str, np.ndarray, int]: ...
    async def rerank(self, request: RerankRequest, routing_key: str, clock: RequestClock,
                     tenant: Tenant) -> tuple[str, list[float], int]: ...
    async def tokenize(self, request: TokenizeRequest, routing_key: str) -> tuple[str, list]: ...
    async def decode(self, request: DecodeRequest, routing_key: str) -> tuple[str, list[str]]: ...
    async def models(self) -> ModelList: ...
    async def readiness(self) -> dict[str, str]: ...
    async def metrics_text(self) -> str: ...
    def record(self, clock: RequestClock) -> None: ...  # the request's metrics, once it is answered


@dataclass(frozen=True)
class Embedded:
    model: str  # the deployment that served it
    vectors: np.ndarray  # (n_inputs, dimensions), input order
    tokens: int


@dataclass(frozen=True)
class Scored:
    model: str
    scores: list[float]  # input order
    tokens: int
    texts: list[str]  # the documents, input order


class Pipeline:
    def __init__(self, service: ApiService):
        self.service = service
        self.config = service.config
        self._known = {m.name for m in service.config.models} | set(service.config.aliases)
        # Calibration files are read once, when the app is built: a missing one fails the start, not a request.
        self._quantizers = {m.name: Quantizer.load(m.quantization.calibration)
                            for m in service.config.models if m.kind == "embed"}

    def _label(self, model: str | None) -> str:
        return model if model in self._known else "unknown"  # clients must not grow label sets

    async def embed(self, body: EmbeddingRequest, request: Request, endpoint: str = "embeddings") -> Embedded:
        clock = clock_of(request.scope)
        with clock.track(endpoint, self._label(body.model)):
            inputs = body.inputs()
            check_embed_limits(inputs, self.config.limits)
            tenant = tenant_of(request)
            clock.inputs, clock.chars, clock.dimensions = len(inputs), _chars(inputs), body.dimensions
            model, vectors, tokens = await self.service.embed(body, routing_key(request, body.request_id), clock,
                                                              tenant)
            tenant.charge_tokens(tokens)
            clock.model, clock.tokens = self._label(model), tokens
            return Embedded(model, vectors, tokens)

    def quantize(self, result: Embedded, embedding_type: str, dimensions: int | None) -> np.ndarray:
        """The result's vectors as `embedding_type` (`serving/quantization.py`), scaled with the ranges of
        the model that served them (an alias's requests may go to either of its models)."""
        quantizer = self._quantizers.get(result.model) or Quantizer()
        try:
            return quantizer.quantize(result.vectors, embedding_type, full_width=dimensions is None)
        except CalibrationError as exc:  # the server's config does not fit its model: not the client's error
            raise ApiError(f"model {result.model}: {exc}") from None

    async def rerank(self, body: RerankRequest, request: Request, endpoint: str = "rerank") -> Scored:
        [result] = await self.rerank_many([body], request, endpoint)
        return result

    async def rerank_many(self, bodies: list[RerankRequest], request: Request, endpoint: str) -> list[Scored]:
        """Several rerank requests (one per query) as one API request: one metrics record, concurrent calls."""
        clock = clock_of(request.scope)
        with clock.track(endpoint, self._label(bodies[0].model)):
            for body in bodies:
                check_rerank_limits(body.query, body.texts(), body.instruction, self.config.limits)
            tenant = tenant_of(request)
            clock.inputs = sum(len(body.texts()) for body in bodies)
            clock.chars = sum(len(body.query) * len(body.texts()) + _chars(body.texts()) for body in bodies)
            key = routing_key(request, bodies[0].request_id)  # one key: an alias sends every part to one model
            answers = await asyncio.gather(*(self.service.rerank(body, key, clock, tenant) for body in bodies))
            clock.model, clock.tokens = self._label(answers[0][0]), sum(t for _, _, t in answers)
            tenant.charge_tokens(clock.tokens)
            return [Scored(model, scores, t, body.texts()) for body, (model, scores, t) in zip(bodies, answers)]

    async def tokenize(self, body: TokenizeRequest, request: Request, endpoint: str = "tokenize") -> list:
        """`serving.engines.base.Tokens` per text, in order."""
        clock = clock_of(request.scope)
        with clock.track(endpoint, self._label(body.model)):
            check_embed_limits(body.texts, self.config.limits)
            model, tokens = await self.service.tokenize(body, routing_key(request))
            clock.model = self._label(model)
            return tokens

    async def decode(self, body: DecodeRequest, request: Request, endpoint: str = "decode") -> list[str]:
        clock = clock_of(request.scope)
        with clock.track(endpoint, self._label(body.model)):
            check_embed_limits(body.ids, self.config.limits)
            model, texts = await self.service.decode(body, routing_key(request))
            clock.model = self._label(model)
            return texts


def tenant_of(request: Request) -> Tenant:
    """The caller's tenant, which `serving.api.middleware.TenantGate` found by its key and admitted
    past its quotas before the body was read."""
    return request.scope[TENANT_KEY]


def _chars(inputs: list) -> int:
    """Characters of the text inputs (TEI's `x-compute-characters`); token-id inputs have none."""
    return sum(len(item) for item in inputs if isinstance(item, str))


def to_internal(schema: type[RequestT], /, **fields) -> RequestT:
    """An internal request from a dialect's fields. A value the internal schema refuses is the
    client's error (422), not the server's."""
    try:
        return schema(**fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        raise ValidationFailed("; ".join(problems)) from None


def check_embed_limits(inputs: list, limits: LimitsConfig) -> None:
    if len(inputs) > limits.max_inputs_per_request:
        raise RequestTooLarge(f"{len(inputs)} inputs; at most {limits.max_inputs_per_request} per request")
    for i, item in enumerate(inputs):
        if isinstance(item, str) and len(item) > limits.max_input_chars:
            raise RequestTooLarge(f"input[{i}] has {len(item)} characters; at most {limits.max_input_chars}")
        if isinstance(item, list) and len(item) > limits.max_input_tokens:
            raise RequestTooLarge(f"input[{i}] has {len(item)} tokens; at most {limits.max_input_tokens}")
    check_total_chars(_chars(inputs), limits)


def check_rerank_limits(query: str, documents: list[str], instruction: str | None, limits: LimitsConfig) -> None:
    if len(documents) > limits.max_documents_per_request:
        raise RequestTooLarge(f"{len(documents)} documents; at most {limits.max_documents_per_request} per request")
    for field, text in (("query", query), ("instruction", instruction or "")):
        if len(text) > limits.max_query_chars:
            raise RequestTooLarge(f"`{field}` has {len(text)} characters; at most {limits.max_query_chars}")
    for i, doc in enumerate(documents):
        if len(doc) > limits.max_input_chars:
            raise RequestTooLarge(f"documents[{i}] has {len(doc)} characters; at most {limits.max_input_chars}")
    check_total_chars(len(query) + len(instruction or "") + sum(len(d) for d in documents), limits)


def check_total_chars(total: int, limits: LimitsConfig) -> None:
    if total > limits.max_request_chars:
        raise RequestTooLarge(f"the request's texts have {total} characters; at most {limits.max_request_chars}")


def encode_base64(vector: np.ndarray, dtype: str = "float32", endianness: str = "little") -> str:
    """The vector's bytes: little-endian float32 by default, as OpenAI and Cohere send them; vLLM's
    `embed_dtype` and `endianness` choose others."""
    order = {"little": "<", "big": ">", "native": "="}[endianness]
    values = np.asarray(vector, dtype=np.float32)
    if dtype == "bfloat16":
        # Round to nearest even, as torch's float32 -> bfloat16 conversion does.
        bits = values.view(np.uint32)
        raw = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(f"{order}u2")
    else:
        raw = values.astype(f"{order}{ {'float32': 'f4', 'float16': 'f2'}[dtype] }")
    return base64.b64encode(raw.tobytes()).decode()


def routing_key(request: Request, request_id: str | None = None) -> str:
    """Alias traffic is split on this key: the caller's X-Request-Id, else the body's vLLM `request_id`,
    else a fresh id."""
    return request.headers.get("x-request-id") or request_id or f"{time.time_ns()}-{uuid.uuid4().hex}"


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"
