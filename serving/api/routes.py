"""The HTTP app: middleware, auth, the dialects' routes (`serving/api/dialects/`), and the model
listing and probes. Each handler reads as a pipeline: authorise -> validate -> convert -> route ->
engine -> convert back.

The routes know an `ApiService` (the router deployment), never Ray or vLLM directly.
"""

from __future__ import annotations

import functools

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.api.dialects import cohere, infinity, native, tei, vllm
from serving.api.errors import Unauthorized, install_error_handlers
from serving.api.middleware import BodySizeLimit, ConcurrencyLimit, TenantGate
from serving.api.pipeline import ApiService, Pipeline
from serving.api.protocol import ErrorResponse, ModelList, ReadyResponse
from serving.api.timing import RequestTimer, clock_of
from serving.api.tracing import record_spans, tracer_from_env
from serving.tenants import TENANT_KEY, Tenants

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
    # Each added middleware wraps the ones before it: the clock starts first, then the tenant's quotas
    # apply before the body is read, and the body limit before a request counts towards the
    # concurrency limit.
    tenants = Tenants.from_config(config)
    app.add_middleware(ConcurrencyLimit, max_ongoing=config.router.max_ongoing_requests,
                       retry_after_s=config.router.retry_after_s, exempt_paths=PROBES)
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.body_limit_bytes)
    app.add_middleware(TenantGate, tenants=tenants, exempt_paths=PROBES)
    tracer = tracer_from_env()
    app.add_middleware(RequestTimer, on_response=service.record,
                       on_sent=functools.partial(record_spans, tracer) if tracer is not None else None)
    authorise = _bearer_auth(tenants)
    auth_errors = (401,) if tenants.auth else ()
    post_statuses = (400, *auth_errors, 404, 413, 422, 429, 503)
    post_errors = _errors(*post_statuses)
    pipeline = Pipeline(service)
    for dialect in (native, cohere, tei, vllm, infinity):
        app.include_router(dialect.router(pipeline), dependencies=[Depends(authorise)], responses=post_errors)
    # Each model's TEI base URL, /tei/{model}/...: its routes document their errors in TEI's shape. The
    # public probes come last, as their bare /tei/{model} would match the other routes' paths.
    app.include_router(tei.base_router(pipeline, post_statuses), dependencies=[Depends(authorise)])
    app.include_router(tei.base_probes(pipeline))

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


def _bearer_auth(tenants: Tenants):
    """The dependency every API route runs: 401 unless `TenantGate` found the caller's tenant by its
    bearer key (it left it in the scope, for the pipeline)."""
    if not tenants.auth:
        async def open_access() -> None:
            pass

        return open_access
    # Declares the bearer scheme in /openapi.json; the check itself is the gate's, answered in our error shape.
    bearer = HTTPBearer(auto_error=False, description="An API key of one of the configured tenants.")

    async def authorise(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if TENANT_KEY not in request.scope:
            raise Unauthorized("missing or invalid API key; send `Authorization: Bearer <key>`")

    return authorise
