"""The router: the single HTTP ingress. Routes by `model`, splits alias traffic, and turns engine
and Ray errors into API errors.

Models placed in the ingress (the default) run in its own process: a request goes from HAProxy to
this replica's HTTP server and on to the engine, one hop, as in `vllm serve`. Models placed in
deployments of their own are reached through handles: small requests share calls, large
embedding requests are chunked across replicas and reassembled."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from ray import serve

from serving.api.errors import ApiError, ModelNotFound, Overloaded, RequestTooLarge, Unavailable, ValidationFailed
from serving.api.protocol import DecodeRequest, EmbeddingRequest, ModelCard, ModelList, RerankRequest, TokenizeRequest
from serving.config import AppConfig, EmbedDeploymentConfig, RouterConfig, ScalingConfig
from serving.engines.errors import EngineDiedError, EngineInputError, EngineUnavailableError, InputTooLongError
from serving.engines.truncation import Truncation
from serving.merging import CallMerger, QueueFull
from serving.routing import ModelRequiredError, ModelTable, UnknownModelError, chunks

logger = logging.getLogger(__name__)
ANSWER_FLUSH_S = 0.5  # a leaving replica's wait, after its last engine call, before it exits


@serve.deployment
@serve.ingress()
class Router:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any], sources: dict[str, dict[str, Any]],
                 local: dict[str, dict[str, Any]] | None = None):
        from serving.metrics import RequestMetrics

        self.config = AppConfig.model_validate(config)
        self.local = start_local_models(local or {})  # model name -> EmbedModel / RerankModel in this process
        self._limits = {name: InFlightLimit(self.config.model(name).scaling) for name in self.local}
        self._leaving = False  # an engine of this replica died: it answers 503 (resent elsewhere) until it exits
        self.handles = handles  # deployment name -> DeploymentHandle
        self.sources = sources  # deployment name -> {"source": ..., "fallback": bool}
        self.table = ModelTable(self.config)
        self.metrics = RequestMetrics()
        self._info: dict[str, dict[str, Any]] = {}
        self._created = int(time.time())
        self._models = {m.name: m for m in self.config.models}
        self._mergers = {m.name: CallMerger(self.handles[m.name].embed_many.remote,
                                            max_in_flight=merged_calls_in_flight(m, self.config.router),
                                            max_batch=self.config.limits.embed_chunk_size,
                                            max_pending=m.scaling.max_queued_requests)
                         for m in self.config.models
                         if m.kind == "embed" and m.name in self.handles
                         and self.config.router.merged_embed_calls_per_replica}

    async def check_health(self) -> None:  # Ray Serve replaces the replica if an engine of its own is dead
        if self._leaving:
            raise EngineDiedError("an engine of this replica died")
        for model in self.local.values():
            await model.check_health()

    def __del__(self):  # graceful replica shutdown: no engine process outlives the replica
        if hasattr(self, "local"):
            self._shutdown_engines()

    def __serve_build_asgi_app__(self):
        from serving.api.routes import build_api

        return build_api(self)

    def track(self, endpoint: str):
        return self.metrics.track(endpoint)

    def _resolve(self, name: str | None, kind: str, routing_key: str) -> str:
        return resolve_model(self.table, name, kind, routing_key)

    async def embed(self, request: EmbeddingRequest, routing_key: str) -> tuple[str, np.ndarray, int]:
        name = self._resolve(request.model, "embed", routing_key)
        if request.user:  # OpenAI's end-user id: kept for abuse tracing, not used for routing
            logger.info("embeddings request %s for user %r -> %s", routing_key, request.user, name)
        inputs = request.inputs()
        options = {"input_type": request.input_type, "instruction": request.instruction,
                   "dimensions": request.dimensions, "truncation": _truncation(request),
                   "normalize": request.use_activation is not False}
        if name in self.local:
            result = await self._call_local(name, lambda model: model.embed(inputs, **options))
            return name, result.embeddings, result.prompt_tokens
        if name in self._mergers and len(inputs) < self.config.limits.embed_chunk_size:
            # Small requests share handle calls with their concurrent neighbours.
            try:
                result = await self._mergers[name].submit((inputs, options), size=len(inputs))
            except QueueFull:
                retry = self._models[name].scaling.retry_after_s
                raise Overloaded("model is at capacity; retry later",
                                 headers={"Retry-After": str(max(1, math.ceil(retry)))}) from None
            except Exception as exc:
                reason = retry_reason(exc)
                if reason is None:
                    raise _api_error(exc) from None
                # The merged call died with its replica: this request alone, once more.
                self.metrics.retry(name, reason)
                [result] = await _gather([lambda: self.handles[name].embed.remote(inputs, **options)], resend=False)
            return name, result.embeddings, result.prompt_tokens
        handle = self.handles[name].embed
        # Each chunk is its own handle call, so Ray's request router spreads them over replicas; a
        # chunk whose replica died is sent once more, alone.
        results = await _gather([lambda start=start, part=part: handle.remote(part, first_index=start, **options)
                                 for start, part in chunks(inputs, self.config.limits.embed_chunk_size)],
                                on_retry=functools.partial(self.metrics.retry, name))
        vectors = np.concatenate([r.embeddings for r in results])
        return name, vectors, sum(r.prompt_tokens for r in results)

    async def rerank(self, request: RerankRequest, routing_key: str) -> tuple[str, list[float], int]:
        name = self._resolve(request.model, "rerank", routing_key)
        args = (request.query, request.texts())
        options = {"instruction": request.instruction,
                   "max_tokens_per_doc": request.max_tokens_per_doc or None,  # 0 means no limit, as in vLLM
                   "max_tokens_per_query": request.max_tokens_per_query or None,
                   "truncation": _truncation(request), "raw_scores": request.use_activation is False}
        if name in self.local:
            result = await self._call_local(name, lambda model: model.rerank(*args, **options))
        else:  # one call per request: its documents share a prefix that is cached on that replica
            [result] = await _gather([lambda: self.handles[name].rerank.remote(*args, **options)],
                                     on_retry=functools.partial(self.metrics.retry, name))
        return name, result.scores, result.prompt_tokens

    async def tokenize(self, request: TokenizeRequest, routing_key: str) -> tuple[str, list]:
        name = resolve_any_model(self.table, request.model, routing_key)
        options = {"add_special_tokens": request.add_special_tokens, "input_type": request.input_type}
        return name, await self._call_model(name, "tokenize", request.texts, **options)

    async def decode(self, request: DecodeRequest, routing_key: str) -> tuple[str, list[str]]:
        name = resolve_any_model(self.table, request.model, routing_key)
        return name, await self._call_model(name, "decode", request.ids,
                                            skip_special_tokens=request.skip_special_tokens)

    async def _call_model(self, name: str, method: str, *args, **kwargs):
        """One call of a model's method, wherever the model runs."""
        if name in self.local:
            return await self._call_local(name, lambda model: getattr(model, method)(*args, **kwargs))
        [result] = await _gather([lambda: getattr(self.handles[name], method).remote(*args, **kwargs)],
                                 on_retry=functools.partial(self.metrics.retry, name))
        return result

    async def _call_local(self, name: str, call):
        """``call(model)`` on a model of this replica, within its in-flight limit, errors as API errors."""
        if self._leaving:  # 503: HAProxy sends the request again, to another replica
            raise Unavailable("model unavailable: this replica is leaving (an engine of it died)")
        with self._limits[name].slot():
            try:
                return await call(self.local[name])
            except Exception as exc:
                if isinstance(exc, EngineDiedError):
                    self._leave(name)
                raise _api_error(exc) from None

    def _leave(self, model: str) -> None:
        """An engine of this replica died: take no more requests, let the ones running on the other
        engines finish, then exit so that Ray replaces the replica. The process is gone long before
        the periodic health check would have noticed, and HAProxy resends what reaches it meanwhile."""
        if self._leaving:
            return
        self._leaving = True
        logger.error("the engine of model %r died: this replica takes no more requests", model)
        self._exit_task = asyncio.get_running_loop().create_task(self._exit_when_drained())

    async def _exit_when_drained(self) -> None:
        from serving.deployments.app import ENGINE_REPLICA_OPTIONS
        from serving.deployments.model_servers import exit_replica

        deadline = time.monotonic() + ENGINE_REPLICA_OPTIONS["graceful_shutdown_timeout_s"]
        while any(limit.in_flight for limit in self._limits.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The answers of the last calls are still being written: an answer cut off after its headers
        # is one HAProxy can no longer send again.
        await asyncio.sleep(ANSWER_FLUSH_S)
        exit_replica("an engine of this ingress replica died", self._shutdown_engines)

    def _shutdown_engines(self) -> None:
        for model in self.local.values():
            model.shutdown()

    async def _model_info(self, name: str) -> dict[str, Any]:
        if name in self.local:
            return self.local[name].info()
        if name not in self._info:
            self._info[name] = await self.handles[name].info.remote()
        return self._info[name]

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
            check = self.local[name].ready() if name in self.local else self.handles[name].ready.remote()
            try:
                await asyncio.wait_for(check, self.config.router.health_timeout_s)
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


class InFlightLimit:
    """The queue bound of a model placed in the ingress, as its own deployment's replica would have
    it: beyond `max_ongoing_requests` + `max_queued_requests` calls in flight (vLLM queues what its
    batch cannot take), the next gets 429 with Retry-After. `max_queued_requests` -1: no bound."""

    def __init__(self, scaling: ScalingConfig):
        queued = scaling.max_queued_requests
        self.bound = scaling.max_ongoing_requests + queued if queued >= 0 else -1
        self.retry_after = str(max(1, math.ceil(scaling.retry_after_s)))
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if 0 <= self.bound <= self.in_flight:
            raise Overloaded("model is at capacity; retry later", headers={"Retry-After": self.retry_after})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def start_local_models(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One engine per model placed in the ingress, started in turn; if one cannot start, the ones
    already running are stopped before the error (one line naming the model) propagates."""
    from serving.deployments.model_servers import MODELS

    models: dict[str, Any] = {}
    try:
        for name, config in configs.items():
            models[name] = MODELS[config["kind"]](config)
    except BaseException:
        for model in models.values():
            model.shutdown()
        raise
    return models


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


def merged_calls_in_flight(model: EmbedDeploymentConfig, router: RouterConfig) -> int:
    """How many merged embed calls one router replica keeps running against a model deployment."""
    scaling = model.scaling
    if scaling.autoscaling:  # replicas must still see their target load, or they would never scale up
        per_replica = max(router.merged_embed_calls_per_replica, math.ceil(scaling.target_ongoing_requests))
        return per_replica * scaling.max_replicas
    return router.merged_embed_calls_per_replica * scaling.num_replicas


def _truncation(request: EmbeddingRequest | RerankRequest) -> Truncation:
    return Truncation(request.truncate_prompt_tokens, request.truncation_side, request.truncate)


async def _gather(senders: list[Callable[[], Any]], on_retry: Callable[[str], None] | None = None,
                  resend: bool = True) -> list:
    """Make each handle call (``send()``) and await them all, mapping engine and Ray failures onto
    the API's error types.

    A call whose replica or engine died is sent once more (Ray's router has dropped the dead
    replica by then, so it goes to another one), within the request's own time; ``on_retry`` gets
    the reason. ``resend=False``: the call is itself the resend (of a merged call that died).
    Errors that are the request's own (invalid, too long, backpressure) are not resent.
    The first failure that stays (or the caller going away) cancels the calls still running: their
    results could no longer be used, and a replica would otherwise spend engine time on them.
    """
    calls = [_Call(send, on_retry, resend) for send in senders]
    tasks = [asyncio.ensure_future(call.result()) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException as exc:
        for call, task in zip(calls, tasks):
            if not task.done():  # a finished DeploymentResponse re-raises its own error from cancel()
                task.cancel()
                call.cancel()
        if not isinstance(exc, Exception):
            raise
        raise _api_error(exc) from None


class _Call:
    """One handle call, sent again once if its replica died."""

    def __init__(self, send: Callable[[], Any], on_retry: Callable[[str], None] | None, resend: bool = True):
        self.send, self.on_retry, self.resend, self.response = send, on_retry, resend, None

    async def result(self):
        self.response = self.send()
        try:
            return await self.response
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None or not self.resend:
                raise
        if self.on_retry:
            self.on_retry(reason)
        self.response = self.send()
        return await self.response

    def cancel(self) -> None:
        try:
            self.response.cancel()  # Ray Serve: drop it from the queue, or ray.cancel it on its replica
        except Exception:
            logger.debug("could not cancel a handle call", exc_info=True)


def retry_reason(exc: BaseException) -> str | None:
    """Why a failed handle call may be sent again ("replica_died", "replica_unavailable",
    "engine_died"), or None when the failure is the request's own or would happen again."""
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
    from ray.serve.exceptions import ReplicaUnavailableError

    cause = exc.cause if isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None else exc
    if isinstance(cause, (ActorUnavailableError, ReplicaUnavailableError)):
        return "replica_unavailable"
    if isinstance(cause, RayActorError):
        return "replica_died"
    if isinstance(cause, EngineDiedError):
        return "engine_died"
    return None


def _api_error(exc: Exception) -> ApiError:
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    cause = exc.cause if isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None else exc
    if isinstance(cause, InputTooLongError):
        return RequestTooLarge(str(cause))
    if isinstance(cause, EngineInputError):
        return ValidationFailed(str(cause))
    if isinstance(cause, BackPressureError):
        retry = cause.retry_after_s
        return Overloaded("model is at capacity; retry later",
                          headers={"Retry-After": str(max(1, int(-(-retry // 1))))} if retry else None)
    if isinstance(cause, (EngineUnavailableError, RayActorError, DeploymentUnavailableError, ReplicaUnavailableError)):
        return Unavailable(f"model unavailable: {type(cause).__name__}")
    logger.error("unexpected error from a model deployment: %r", cause)
    return ApiError("internal error; the server logged the details")
