"""The models: one vLLM engine each, as plain classes the ingress holds in process
(`placement: ingress`), and as Ray Serve deployments of their own (`placement: deployment`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from serving.config import EmbedDeploymentConfig, RerankDeploymentConfig
from serving.deployments.lifecycle import exit_replica
from serving.engines.errors import EngineDiedError
from serving.engines.truncation import DEFAULT, Truncation
from serving.metrics import EngineMetrics

logger = logging.getLogger(__name__)


class _EngineModel:
    """Health and shutdown shared by the models."""

    engine: Any = None  # stays None if __init__ failed
    exit_with_engine = False  # a replica of its own leaves as soon as its engine dies

    async def _run(self, call):
        """Await an engine call. If the engine died and this model is a replica of its own, the
        replica exits before answering: its callers get ActorDiedError, which makes Ray's router drop
        it at once and the ingress send the call again to another replica."""
        try:
            return await call
        except EngineDiedError:
            self._engine_died()
            raise

    def _engine_died(self) -> None:
        if self.exit_with_engine:
            exit_replica(f"the engine of model {self.config.name!r} died", self.shutdown)

    async def check_health(self) -> None:  # Ray Serve restarts the replica if this raises
        await self.engine.check_health()

    async def ready(self) -> bool:  # the router's /ready: a live check through the request path
        await self.engine.check_health()
        return True

    async def tokenize(self, texts: list[str], *, add_special_tokens: bool = True, input_type: str = "document"):
        """The model's own tokenizer, no engine call (TEI's `/tokenize`)."""
        return self.engine.tokenize(texts, add_special_tokens=add_special_tokens, input_type=input_type)

    async def decode(self, sequences: list[list[int]], *, skip_special_tokens: bool = True) -> list[str]:
        return self.engine.decode(sequences, skip_special_tokens=skip_special_tokens)

    @staticmethod
    def engine_config(deployment):
        """The engine config, named after the deployment so start-up errors say which model failed,
        with this replica's own cores when the config gives each replica of a node its own."""
        from serving.engines.startup import cores_for_replica

        engine = deployment.engine
        update = {} if engine.served_model_name else {"served_model_name": deployment.name}
        if isinstance(engine.cpu_omp_threads_bind, list):
            update["cpu_omp_threads_bind"] = cores_for_replica(engine.cpu_omp_threads_bind, _local_rank())
        return engine.model_copy(update=update) if update else engine

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def __del__(self):  # Serve calls this on graceful replica shutdown
        self.shutdown()


class EmbedModel(_EngineModel):
    def __init__(self, config: dict[str, Any]):
        from serving.engines.cache import EmbeddingCache
        from serving.engines.embed import EmbedEngine

        self.config = EmbedDeploymentConfig.model_validate(config)
        cache = EmbeddingCache(self.config.cache.max_bytes) if self.config.cache.max_bytes else None
        self.engine = EmbedEngine(self.engine_config(self.config),
                                  on_step=EngineMetrics(self.config.name, cache=cache).record,
                                  cache=cache, cache_all=self.config.cache.inputs == "all")

    async def embed(self, inputs: list, *, input_type: str = "document", instruction: str | None = None,
                    dimensions: int | None = None, first_index: int = 0, truncation: Truncation = DEFAULT,
                    normalize: bool = True, priority: int = 0, cache_scope: str | None = None):
        return await self._run(self.engine.embed(inputs, input_type=input_type, instruction=instruction,
                                                 dimensions=dimensions, first_index=first_index,
                                                 truncation=truncation, normalize=normalize, priority=priority,
                                                 cache_scope=cache_scope))

    async def embed_many(self, requests: list[tuple[list, dict[str, Any]]]) -> list[Any]:
        """Several callers' requests in one call (the router merges concurrent small ones): each
        request's own result or its own error, in order. All reach the engine together."""
        results = await asyncio.gather(*(self.engine.embed(inputs, **options) for inputs, options in requests),
                                       return_exceptions=True)
        if any(isinstance(result, EngineDiedError) for result in results):
            self._engine_died()
        return results

    def info(self) -> dict[str, Any]:
        return {"kind": "embed", "max_dimensions": self.engine.inputs.max_dimensions,
                "max_model_len": self.engine.inputs.max_model_len, **self.engine.scheduler_limits()}


class RerankModel(_EngineModel):
    def __init__(self, config: dict[str, Any]):
        from serving.engines.rerank import RerankEngine

        self.config = RerankDeploymentConfig.model_validate(config)
        self.engine = RerankEngine(self.engine_config(self.config), on_step=EngineMetrics(self.config.name).record)

    async def rerank(self, query: str, documents: list[str], *, instruction: str | None = None,
                     max_tokens_per_doc: int | None = None, max_tokens_per_query: int | None = None,
                     truncation: Truncation = DEFAULT, raw_scores: bool = False, priority: int = 0):
        return await self._run(self.engine.rerank(query, documents, instruction=instruction,
                                                  max_tokens_per_doc=max_tokens_per_doc,
                                                  max_tokens_per_query=max_tokens_per_query,
                                                  truncation=truncation, raw_scores=raw_scores, priority=priority))

    def info(self) -> dict[str, Any]:
        return {"kind": "rerank", "max_model_len": self.engine.prompts.max_model_len, **self.engine.scheduler_limits()}


MODELS = {"embed": EmbedModel, "rerank": RerankModel}


# The same classes as deployments of their own (`placement: deployment`), leaving with their engine.
@serve.deployment(name="EmbedServer")
class EmbedServer(EmbedModel):
    exit_with_engine = True


@serve.deployment(name="RerankServer")
class RerankServer(RerankModel):
    exit_with_engine = True


def _local_rank() -> int:
    """This replica's rank among the deployment's replicas on its node (0 outside Ray Serve)."""
    try:
        rank = serve.get_replica_context().rank
    except Exception:  # not inside a replica
        return 0
    return getattr(rank, "local_rank", rank) or 0
