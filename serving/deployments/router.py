"""The router: the single HTTP ingress. Routes by `model`, splits alias traffic, and calls the
model's client (serving/deployments/clients.py), which knows how to reach it: in this process (the
default, one hop from HAProxy, as in `vllm serve`) or through a deployment handle."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from serving.api.errors import ModelNotFound, Unavailable, ValidationFailed
from serving.api.protocol import DecodeRequest, EmbeddingRequest, ModelCard, ModelList, RerankRequest, TokenizeRequest
from serving.api.timing import RequestClock
from serving.config import AppConfig
from serving.deployments.clients import LocalModels, ModelClient, RemoteModel, start_local_models
from serving.engines.truncation import Truncation
from serving.routing import ModelRequiredError, ModelTable, UnknownModelError
from serving.tenants import Tenant

logger = logging.getLogger(__name__)


@serve.deployment
@serve.ingress()
class Router:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any], sources: dict[str, dict[str, Any]],
                 local: dict[str, dict[str, Any]] | None = None):
        from serving.metrics import RequestMetrics

        self.config = AppConfig.model_validate(config)
        self.metrics = RequestMetrics()
        self.local = LocalModels(start_local_models(local or {}), self.config)  # the models placed in this replica
        # model name -> how to reach it: in this process, or through its deployment's handle
        self.clients: dict[str, ModelClient] = {
            name: RemoteModel(name, handle, self.config, self.metrics.retry) for name, handle in handles.items()}
        self.clients |= self.local.clients
        self.sources = sources  # model name -> {"source": ..., "fallback": bool}
        self.table = ModelTable(self.config)
        self._created = int(time.time())

    async def check_health(self) -> None:  # Ray Serve replaces the replica if an engine of its own is dead
        await self.local.check_health()

    def __del__(self):  # graceful replica shutdown: no engine process outlives the replica
        if hasattr(self, "local"):
            self.local.shutdown()

    def __serve_build_asgi_app__(self):
        from serving.api.routes import build_api

        return build_api(self)

    def record(self, clock: RequestClock) -> None:
        if self.config.router.request_metrics:
            self.metrics.record(clock)

    async def embed(self, request: EmbeddingRequest, routing_key: str, clock: RequestClock,
                    tenant: Tenant) -> tuple[str, np.ndarray, int]:
        name = resolve_model(self.table, request.model, "embed", routing_key)
        if request.user:  # OpenAI's end-user id: kept for abuse tracing, not used for routing
            logger.info("embeddings request %s for user %r -> %s", routing_key, request.user, name)
        result = await clock.call_model("embed", self.clients[name].embed(
            request.inputs(), input_type=request.input_type, instruction=request.instruction,
            dimensions=request.dimensions, truncation=_truncation(request), normalize=request.use_activation is not False,
            priority=tenant.lane(request.priority), cache_scope=tenant.cache_scope))
        return name, result.embeddings, result.prompt_tokens

    async def rerank(self, request: RerankRequest, routing_key: str, clock: RequestClock,
                     tenant: Tenant) -> tuple[str, list[float], int]:
        name = resolve_model(self.table, request.model, "rerank", routing_key)
        result = await clock.call_model("rerank", self.clients[name].rerank(
            request.query, request.texts(), instruction=request.instruction,
            max_tokens_per_doc=request.max_tokens_per_doc or None,  # 0 means no limit, as in vLLM
            max_tokens_per_query=request.max_tokens_per_query or None,
            truncation=_truncation(request), raw_scores=request.use_activation is False,
            priority=tenant.lane(request.priority)))
        return name, result.scores, result.prompt_tokens

    async def tokenize(self, request: TokenizeRequest, routing_key: str) -> tuple[str, list]:
        name = resolve_any_model(self.table, request.model, routing_key)
        return name, await self.clients[name].tokenize(request.texts, add_special_tokens=request.add_special_tokens,
                                                       input_type=request.input_type)

    async def decode(self, request: DecodeRequest, routing_key: str) -> tuple[str, list[str]]:
        name = resolve_any_model(self.table, request.model, routing_key)
        return name, await self.clients[name].decode(request.ids, skip_special_tokens=request.skip_special_tokens)

    async def _model_info(self, name: str) -> dict[str, Any]:
        return await self.clients[name].info()

    async def models(self) -> ModelList:
        cards = []
        for m in self.config.models:
            try:
                info = await asyncio.wait_for(self._model_info(m.name), self.config.router.health_timeout_s)
            except Exception:  # listing must not fail because one deployment is still starting
                info = {}
            cards.append(ModelCard(id=m.name, created=self._created, kind=m.kind,
                                   source=self.sources.get(m.name, {}).get("source", m.engine.model),
                                   fallback=self.sources.get(m.name, {}).get("fallback", False),
                                   max_dimensions=info.get("max_dimensions"), max_model_len=info.get("max_model_len"),
                                   dtype=info.get("dtype"), max_num_batched_tokens=info.get("max_num_batched_tokens"),
                                   max_num_seqs=info.get("max_num_seqs")))
        for alias, targets in self.config.aliases.items():
            total = sum(t.weight for t in targets)
            cards.append(ModelCard(id=alias, created=self._created, kind=self.table.kind_of(alias),
                                   targets={t.model: t.weight / total for t in targets}))
        return ModelList(data=cards)

    async def readiness(self) -> dict[str, str]:
        async def probe(name: str) -> str:
            try:
                await asyncio.wait_for(self.clients[name].ready(), self.config.router.health_timeout_s)
                return "ready"
            except Exception as exc:
                return f"unavailable: {type(exc).__name__}"

        names = [m.name for m in self.config.models]
        return dict(zip(names, await asyncio.gather(*(probe(n) for n in names))))

    async def metrics_text(self) -> str:
        """This node's Prometheus exposition from Ray's metrics agent, filtered to our series."""
        import httpx
        import ray

        from serving.metrics import filter_exposition

        node_id = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(url)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Unavailable(f"metrics agent not reachable: {type(exc).__name__}") from None
        return filter_exposition(response.text)


def resolve_model(table: ModelTable, name: str | None, kind: str, routing_key: str) -> str:
    """The deployment for a request's `model`, with the table's lookup errors as API errors."""
    try:
        return table.resolve(name, kind, routing_key)
    except UnknownModelError as exc:
        raise ModelNotFound(str(exc)) from None
    except ModelRequiredError as exc:
        raise ValidationFailed(str(exc)) from None


def resolve_any_model(table: ModelTable, name: str | None, routing_key: str) -> str:
    """The deployment for a request any kind of model serves (tokenize, decode)."""
    try:
        return table.resolve_any(name, routing_key)
    except UnknownModelError as exc:
        raise ModelNotFound(str(exc)) from None


def _truncation(request: EmbeddingRequest | RerankRequest) -> Truncation:
    return Truncation(request.truncate_prompt_tokens, request.truncation_side, request.truncate)
