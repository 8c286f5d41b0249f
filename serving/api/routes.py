"""HTTP routes. Each handler reads as a pipeline: authorise -> validate -> route -> engine -> response.

The routes know an `ApiService` (the router deployment), never Ray or vLLM directly.
"""

from __future__ import annotations

import base64
import hmac
import time
import uuid
from typing import Protocol

import numpy as np
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.api.errors import RequestTooLarge, Unauthorized, install_error_handlers
from serving.api.middleware import BodySizeLimit, ConcurrencyLimit
from serving.api.protocol import (
    EmbeddingData, EmbeddingRequest, EmbeddingResponse, ErrorResponse, ModelList, ReadyResponse, RerankDocument,
    RerankRequest, RerankResponse, RerankResult, Usage,
)
from serving.config import AppConfig, LimitsConfig


class ApiService(Protocol):
    config: AppConfig

    async def embed(self, request: EmbeddingRequest, routing_key: str) -> tuple[str, np.ndarray, int]: ...
    async def rerank(self, request: RerankRequest, routing_key: str) -> tuple[str, list[float], int]: ...
    async def models(self) -> ModelList: ...
    async def readiness(self) -> dict[str, str]: ...
    async def metrics_text(self) -> str: ...
    def track(self, endpoint: str): ...


PROBES = frozenset({"/health", "/ready", "/metrics"})  # never auth'd, never turned away when busy


def _errors(*statuses: int) -> dict:
    """OpenAPI `responses` for the error statuses a route can return, all in the one error shape."""
    meaning = {400: "Body is not valid JSON", 401: "Missing or wrong API key", 404: "Unknown model",
               413: "Over a request limit", 422: "Invalid field values", 429: "At capacity; see Retry-After",
               503: "No healthy replica for the model"}
    return {s: {"model": ErrorResponse, "description": meaning[s]} for s in statuses}


def build_api(service: ApiService) -> FastAPI:
    config = service.config
    app = FastAPI(title="Qwen3 embedding & rerank API", version="1")
    install_error_handlers(app)
    # Outermost first: the body limit applies before a request counts towards the concurrency limit.
    app.add_middleware(ConcurrencyLimit, max_ongoing=config.router.max_ongoing_requests,
                       retry_after_s=config.router.retry_after_s, exempt_paths=PROBES)
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.body_limit_bytes)
    keys = [k.get_secret_value() for k in config.api_keys]
    authorise = _bearer_auth(keys)
    auth_errors = (401,) if keys else ()
    post_errors = _errors(400, *auth_errors, 404, 413, 422, 429, 503)
    known_models = {m.name for m in config.models} | set(config.aliases)

    def metric_label(model: str) -> str:
        return model if model in known_models else "unknown"  # clients must not grow label sets

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=[Depends(authorise)],
              responses=post_errors)
    async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
        with service.track("embeddings") as record:
            record["model"] = metric_label(body.model)
            inputs = body.inputs()
            check_embed_limits(inputs, config.limits)
            model, vectors, tokens = await service.embed(body, _routing_key(request))
            record["tokens"] = tokens
            return EmbeddingResponse(
                data=[EmbeddingData(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)],
                model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
        with service.track("rerank") as record:
            record["model"] = metric_label(body.model)
            texts = body.texts()
            check_rerank_limits(body.query, texts, body.instruction, config.limits)
            model, scores, tokens = await service.rerank(body, _routing_key(request))
            record["tokens"] = tokens
            order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n]
            results = [RerankResult(index=i, relevance_score=scores[i],
                                    document=RerankDocument(text=texts[i]) if body.return_documents else None)
                       for i in order]
            return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", model=model, results=results,
                                  usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    for path in ("/v1/rerank", "/rerank"):
        app.add_api_route(path, rerank, methods=["POST"], response_model=RerankResponse,
                          response_model_exclude_none=True, dependencies=[Depends(authorise)], responses=post_errors)

    @app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True,
             dependencies=[Depends(authorise)], responses=_errors(*auth_errors, 413, 429))
    async def models() -> ModelList:
        return await service.models()

    @app.get("/health", responses=_errors(413))
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse,
                                                                      "description": "A model is not ready"},
                                                                **_errors(413)})
    async def ready() -> Response:
        states = await service.readiness()
        ok = all(s == "ready" for s in states.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "models": states},
                            status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **_errors(413, 503)})
    async def metrics() -> Response:
        return PlainTextResponse(await service.metrics_text(), media_type="text/plain; version=0.0.4")

    return app


def check_embed_limits(inputs: list, limits: LimitsConfig) -> None:
    if len(inputs) > limits.max_inputs_per_request:
        raise RequestTooLarge(f"{len(inputs)} inputs; at most {limits.max_inputs_per_request} per request")
    for i, item in enumerate(inputs):
        if isinstance(item, str) and len(item) > limits.max_input_chars:
            raise RequestTooLarge(f"input[{i}] has {len(item)} characters; at most {limits.max_input_chars}")
        if isinstance(item, list) and len(item) > limits.max_input_tokens:
            raise RequestTooLarge(f"input[{i}] has {len(item)} tokens; at most {limits.max_input_tokens}")
    _check_total_chars(sum(len(item) for item in inputs if isinstance(item, str)), limits)


def check_rerank_limits(query: str, documents: list[str], instruction: str | None, limits: LimitsConfig) -> None:
    if len(documents) > limits.max_documents_per_request:
        raise RequestTooLarge(f"{len(documents)} documents; at most {limits.max_documents_per_request} per request")
    for field, text in (("query", query), ("instruction", instruction or "")):
        if len(text) > limits.max_query_chars:
            raise RequestTooLarge(f"`{field}` has {len(text)} characters; at most {limits.max_query_chars}")
    for i, doc in enumerate(documents):
        if len(doc) > limits.max_input_chars:
            raise RequestTooLarge(f"documents[{i}] has {len(doc)} characters; at most {limits.max_input_chars}")
    _check_total_chars(len(query) + len(instruction or "") + sum(len(d) for d in documents), limits)


def _check_total_chars(total: int, limits: LimitsConfig) -> None:
    if total > limits.max_request_chars:
        raise RequestTooLarge(f"the request's texts have {total} characters; at most {limits.max_request_chars}")


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector.tolist()


def _routing_key(request: Request) -> str:
    """Alias traffic is split on this key: the caller's X-Request-Id if any, else a fresh id."""
    return request.headers.get("x-request-id") or f"{time.time_ns()}-{uuid.uuid4().hex}"


def _bearer_auth(keys: list[str]):
    encoded = [k.encode() for k in keys]
    if not encoded:
        async def open_access() -> None:
            return None

        return open_access
    # Declares the bearer scheme in /openapi.json; the check itself is ours, to answer in our error shape.
    bearer = HTTPBearer(auto_error=False, description="One of the configured `api_keys`.")

    async def authorise(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        supplied = credentials.credentials.strip().encode(errors="surrogateescape") if credentials else b""
        # Compare against every key in constant time; never log the supplied value.
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(key, supplied)
        if not matched:
            raise Unauthorized("missing or invalid API key; send `Authorization: Bearer <key>`")

    return authorise


