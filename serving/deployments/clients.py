"""One client per way of reaching a model, so the router never asks where a model runs.

- `LocalModel`: a model placed in this ingress replica (`placement: ingress`), called in process,
  one hop from HAProxy, as in `vllm serve`. It holds the model's in-flight bound and this replica's
  "leaving" state (`LocalModels`: an engine of the replica died).
- `RemoteModel`: a model deployment of its own (`placement: deployment`), reached through a Ray
  Serve handle. It merges small embed calls (the most urgent lane first), chunks large ones over
  replicas, and sends a call again once if its replica or engine died.

Both speak `ModelClient`, and both turn engine and Ray failures into the API's error types.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from serving.api.errors import ApiError, Overloaded, RequestTooLarge, Unavailable, ValidationFailed
from serving.config import AppConfig, EmbedDeploymentConfig, RouterConfig, ScalingConfig
from serving.deployments.lifecycle import ANSWER_FLUSH_S, ENGINE_REPLICA_OPTIONS, exit_replica
from serving.deployments.model_servers import MODELS
from serving.engines.embed import EmbedResult
from serving.engines.errors import EngineDiedError, EngineInputError, EngineUnavailableError, InputTooLongError
from serving.engines.timing import StageTimes
from serving.merging import CallMerger, QueueFull
from serving.routing import chunks

logger = logging.getLogger(__name__)


class ModelClient(Protocol):
    """What the router calls on a model, wherever it runs. Errors are `ApiError`s."""

    async def embed(self, inputs: list, **options) -> EmbedResult: ...
    async def rerank(self, query: str, documents: list[str], **options) -> Any: ...  # a RerankResult
    async def tokenize(self, texts: list[str], **options) -> list: ...
    async def decode(self, ids: list[list[int]], **options) -> list[str]: ...
    async def info(self) -> dict[str, Any]: ...
    async def ready(self) -> None: ...


# --- in this process -----------------------------------------------------------------------------

def start_local_models(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One engine per model placed in the ingress, started in turn; if one cannot start, the ones
    already running are stopped before the error (one line naming the model) propagates."""
    models: dict[str, Any] = {}
    try:
        for name, config in configs.items():
            models[name] = MODELS[config["kind"]](config)
    except BaseException:
        for model in models.values():
            model.shutdown()
        raise
    return models


class LocalModels:
    """The models placed in this ingress replica, health-checked and stopped together. When an
    engine dies the replica leaves: it takes no more requests (503, which HAProxy resends to another
    replica), lets the calls running on its other engines finish, then exits so that Ray replaces
    it, long before the periodic health check would have noticed."""

    def __init__(self, models: dict[str, Any], app: AppConfig):
        self.models = models
        self.clients = {name: LocalModel(name, model, app.model(name).scaling, self) for name, model in models.items()}
        self.leaving = False

    async def check_health(self) -> None:
        if self.leaving:
            raise EngineDiedError("an engine of this replica died")
        for model in self.models.values():
            await model.check_health()

    def leave(self, model: str) -> None:
        if self.leaving:
            return
        self.leaving = True
        logger.error("the engine of model %r died: this replica takes no more requests", model)
        self._exit_task = asyncio.get_running_loop().create_task(self._exit_when_drained())

    async def _exit_when_drained(self) -> None:
        deadline = time.monotonic() + ENGINE_REPLICA_OPTIONS["graceful_shutdown_timeout_s"]
        while any(c.limit.in_flight for c in self.clients.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The answers of the last calls are still being written: an answer cut off after its headers
        # is one HAProxy can no longer send again.
        await asyncio.sleep(ANSWER_FLUSH_S)
        exit_replica("an engine of this ingress replica died", self.shutdown)

    def shutdown(self) -> None:
        for model in self.models.values():
            model.shutdown()


class LocalModel:
    """A model of this replica, called within its in-flight bound."""

    def __init__(self, name: str, model: Any, scaling: ScalingConfig, replica: LocalModels):
        self.name, self.model, self.replica = name, model, replica
        self.limit = InFlightLimit(scaling)

    async def embed(self, inputs: list, **options) -> EmbedResult:
        return await self._call(lambda: self.model.embed(inputs, **options), options.get("priority", 0))

    async def rerank(self, query: str, documents: list[str], **options):
        return await self._call(lambda: self.model.rerank(query, documents, **options), options.get("priority", 0))

    async def tokenize(self, texts: list[str], **options) -> list:
        return await self._call(lambda: self.model.tokenize(texts, **options))

    async def decode(self, ids: list[list[int]], **options) -> list[str]:
        return await self._call(lambda: self.model.decode(ids, **options))

    async def info(self) -> dict[str, Any]:
        return self.model.info()

    async def ready(self) -> None:
        await self.model.ready()

    async def _call(self, call, priority: int = 0):
        if self.replica.leaving:  # 503: HAProxy sends the request again, to another replica
            raise Unavailable("model unavailable: this replica is leaving (an engine of it died)")
        with self.limit.slot(priority):
            try:
                return await call()
            except Exception as exc:
                if isinstance(exc, EngineDiedError):
                    self.replica.leave(self.name)
                raise api_error(exc) from None


class InFlightLimit:
    """The queue bound of a model placed in the ingress, as its own deployment's replica would have
    it: beyond `max_ongoing_requests` + `max_queued_requests` calls in flight (vLLM queues what its
    batch cannot take), the next gets 429 with Retry-After. `max_queued_requests` -1: no bound.
    Calls less urgent than priority 0 stop short of the bound by `urgent_reserve` of it."""

    def __init__(self, scaling: ScalingConfig):
        queued = scaling.max_queued_requests
        self.bound = scaling.max_ongoing_requests + queued if queued >= 0 else -1
        self.lesser_bound = self.bound - math.floor(self.bound * scaling.urgent_reserve) if self.bound >= 0 else -1
        self.retry_after = str(max(1, math.ceil(scaling.retry_after_s)))
        self.in_flight = 0

    @contextmanager
    def slot(self, priority: int = 0) -> Iterator[None]:
        bound = self.bound if priority <= 0 else self.lesser_bound
        if 0 <= bound <= self.in_flight:
            raise Overloaded("model is at capacity; retry later", headers={"Retry-After": self.retry_after})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


# --- through a handle ----------------------------------------------------------------------------

class RemoteModel:
    """A model deployment reached through its handle. ``on_retry(model, reason)`` counts resends."""

    def __init__(self, name: str, handle: Any, app: AppConfig, on_retry: Callable[[str, str], None]):
        model = app.model(name)
        self.name, self.handle = name, handle
        self.chunk_size = app.limits.embed_chunk_size
        self.retry_after = str(max(1, math.ceil(model.scaling.retry_after_s)))
        self.on_retry = functools.partial(on_retry, name)
        self._info: dict[str, Any] | None = None
        self.merger = None
        if model.kind == "embed" and app.router.merged_embed_calls_per_replica:
            self.merger = CallMerger(handle.embed_many.remote, max_in_flight=merged_calls_in_flight(model, app.router),
                                     max_batch=self.chunk_size, max_pending=model.scaling.max_queued_requests,
                                     urgent_reserve=model.scaling.urgent_reserve)

    async def embed(self, inputs: list, **options) -> EmbedResult:
        if self.merger is not None and len(inputs) < self.chunk_size:
            return await self._merged_embed(inputs, options)
        # Each chunk is its own handle call, so Ray's request router spreads them over replicas; a
        # chunk whose replica died is sent once more, alone.
        results = await gather([lambda start=start, part=part: self.handle.embed.remote(part, first_index=start,
                                                                                         **options)
                                for start, part in chunks(inputs, self.chunk_size)], on_retry=self.on_retry)
        return EmbedResult(np.concatenate([r.embeddings for r in results]), sum(r.prompt_tokens for r in results),
                           sum((r.times for r in results), StageTimes()))

    async def _merged_embed(self, inputs: list, options: dict[str, Any]) -> EmbedResult:
        """A small request shares a handle call with its concurrent neighbours."""
        try:
            return await self.merger.submit((inputs, options), size=len(inputs), priority=options.get("priority", 0))
        except QueueFull:
            raise Overloaded("model is at capacity; retry later", headers={"Retry-After": self.retry_after}) from None
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:
                raise api_error(exc) from None
        # The merged call died with its replica: this request alone, once more.
        self.on_retry(reason)
        [result] = await gather([lambda: self.handle.embed.remote(inputs, **options)], resend=False)
        return result

    async def rerank(self, query: str, documents: list[str], **options):
        # One call per request: its documents share a prefix that is cached on that replica.
        return await self._call("rerank", query, documents, **options)

    async def tokenize(self, texts: list[str], **options) -> list:
        return await self._call("tokenize", texts, **options)

    async def decode(self, ids: list[list[int]], **options) -> list[str]:
        return await self._call("decode", ids, **options)

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.handle.info.remote()
        return self._info

    async def ready(self) -> None:
        await self.handle.ready.remote()

    async def _call(self, method: str, *args, **kwargs):
        [result] = await gather([lambda: getattr(self.handle, method).remote(*args, **kwargs)], on_retry=self.on_retry)
        return result


def merged_calls_in_flight(model: EmbedDeploymentConfig, router: RouterConfig) -> int:
    """How many merged embed calls one router replica keeps running against a model deployment."""
    scaling = model.scaling
    if scaling.autoscaling:  # replicas must still see their target load, or they would never scale up
        per_replica = max(router.merged_embed_calls_per_replica, math.ceil(scaling.target_ongoing_requests))
        return per_replica * scaling.max_replicas
    return router.merged_embed_calls_per_replica * scaling.num_replicas


async def gather(senders: list[Callable[[], Any]], on_retry: Callable[[str], None] | None = None,
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
        raise api_error(exc) from None


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


# --- errors --------------------------------------------------------------------------------------

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


def api_error(exc: Exception) -> ApiError:
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    if isinstance(exc, ApiError):
        return exc
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
