"""Builds the Ray Serve application from an AppConfig.

`serve run serving.deployments.app:app_builder config=configs/cpu.yaml` and
`qwen3-serve serve --config ...` both go through `build_app`.
"""

from __future__ import annotations

from typing import Any

from serving.config import AppConfig, EmbedDeploymentConfig, RerankDeploymentConfig, RouterConfig, ScalingConfig
from serving.deployments.lifecycle import ENGINE_REPLICA_OPTIONS

APP_NAME = "qwen3"
ROUTER_PROBE_HEADROOM = 16


def replica_options(model: EmbedDeploymentConfig | RerankDeploymentConfig,
                    cluster_has_gpus: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Ray Serve deployment options, engine field overrides) for one model deployment.

    GPU, TP=1: the replica actor reserves the GPU itself.
    GPU, TP=N>1: a STRICT_PACK placement group, one bundle for the replica actor and one GPU
    bundle per shard; vLLM's Ray executor places one worker in each shard bundle.
    CPU: the replica reserves CPUs; TP shards are vLLM worker processes inside it.
    """
    tp = model.engine.tensor_parallel_size
    res = model.resources
    accelerator = accelerator_of(model, cluster_has_gpus)
    scaling = model.scaling
    options: dict[str, Any] = {
        "name": deployment_name(model.name),
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "max_queued_requests": scaling.max_queued_requests,
        "backpressure_config": {"status_code": 429, "retry_after_s": scaling.retry_after_s},
        "max_constructor_retry_count": scaling.max_constructor_retry_count,
        **ENGINE_REPLICA_OPTIONS,
    }
    if scaling.autoscaling:
        options["autoscaling_config"] = autoscaling_config(scaling)
    else:
        options["num_replicas"] = scaling.num_replicas
    engine_overrides: dict[str, Any] = {}
    if accelerator == "gpu" and tp > 1:
        options["ray_actor_options"] = {"num_cpus": res.replica_cpus, "num_gpus": 0}
        options["placement_group_bundles"] = [{"CPU": res.replica_cpus}] + [
            {"CPU": res.cpus_per_shard, "GPU": res.gpus_per_shard} for _ in range(tp)]
        options["placement_group_strategy"] = "STRICT_PACK"
        engine_overrides["distributed_executor_backend"] = model.engine.distributed_executor_backend or "ray"
    elif accelerator == "gpu":
        options["ray_actor_options"] = {"num_cpus": res.replica_cpus, "num_gpus": res.gpus_per_shard}
    else:
        options["ray_actor_options"] = {"num_cpus": res.cpus_per_shard * tp}
        engine_overrides["distributed_executor_backend"] = _cpu_executor(model)
    return options, engine_overrides


def ingress_options(config: AppConfig, cluster_has_gpus: bool = False) -> tuple[dict[str, Any], dict[str, dict]]:
    """(Ray Serve options of the ingress deployment, engine field overrides per model placed in it).

    Each ingress replica reserves what its engines need: on CPU the sum of the models'
    `cpus_per_shard` x TP; on GPU a device, or a share of one, that its models share (the largest
    `gpus_per_shard`, plus `replica_cpus` each). vLLM's `gpu_memory_utilization` is a fraction of the
    whole device per engine, so the models' must add up to at most the replica's share: with
    `gpus_per_shard: 0.5` two ingress replicas, each a front-end process with its own engines, share
    one GPU. A model with TP>1 on GPUs needs a placement group of its own: `placement: deployment`.
    """
    router = config.router
    local = [m for m in config.models if m.placement == "ingress"]
    cpus, gpus, gpu_share, overrides = 0.0, 0.0, 0.0, {}
    for model in local:
        if accelerator_of(model, cluster_has_gpus) == "gpu":
            if model.engine.tensor_parallel_size > 1:
                raise ValueError(f"model {model.name!r}: tensor_parallel_size {model.engine.tensor_parallel_size} "
                                 "on GPUs needs a placement group of its own; give it `placement: deployment`")
            cpus += model.resources.replica_cpus
            gpus = max(gpus, model.resources.gpus_per_shard)
            gpu_share += model.engine.gpu_memory_utilization
            overrides[model.name] = {}
        else:
            cpus += model.resources.cpus_per_shard * model.engine.tensor_parallel_size
            overrides[model.name] = {"distributed_executor_backend": _cpu_executor(model)}
    if gpu_share > gpus + 1e-9:
        raise ValueError(f"the models placed in the ingress share the {gpus:g} GPU each replica reserves, but their "
                         f"gpu_memory_utilization add up to {gpu_share:g}; lower them to a sum of at most {gpus:g}, "
                         "or place some as `deployment`")
    options: dict[str, Any] = {
        "name": "router",
        # The router's own limit (429 in the API's shape) must trip before Ray's; the headroom also
        # keeps /health and /ready answering when it is full.
        "max_ongoing_requests": router.max_ongoing_requests + ROUTER_PROBE_HEADROOM,
        "ray_actor_options": {"num_cpus": cpus} | ({"num_gpus": gpus} if gpus else {}),
    }
    if router.autoscaling:
        options["autoscaling_config"] = autoscaling_config(router)
    else:
        options["num_replicas"] = router.num_replicas
    if local:  # replicas that hold engines: health-checked, drained and failed like the model deployments
        options |= ENGINE_REPLICA_OPTIONS | {
            "max_constructor_retry_count": min(m.scaling.max_constructor_retry_count for m in local)}
    # A draining ingress replica first stays reachable while HAProxy drops it (`http.drain_s`), then
    # finishes what it holds and stops its engines: its grace period covers both, or Ray kills it
    # with requests and engines still running.
    drain_s = config.http.drain_s if config.http.ingress == "haproxy" else 0
    options["graceful_shutdown_timeout_s"] = drain_s + ENGINE_REPLICA_OPTIONS["graceful_shutdown_timeout_s"]
    return options, overrides


def autoscaling_config(scaling: ScalingConfig | RouterConfig) -> dict[str, Any]:
    """Ray Serve's autoscaling_config from a model's or the router's scaling fields."""
    fields = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s")
    return {name: getattr(scaling, name) for name in fields}


def accelerator_of(model: EmbedDeploymentConfig | RerankDeploymentConfig, cluster_has_gpus: bool) -> str:
    res = model.resources
    return res.accelerator if res.accelerator != "auto" else ("gpu" if cluster_has_gpus else "cpu")


def _cpu_executor(model: EmbedDeploymentConfig | RerankDeploymentConfig) -> str | None:
    """On CPU, TP shards are vLLM worker processes next to the engine."""
    return model.engine.distributed_executor_backend or ("mp" if model.engine.tensor_parallel_size > 1 else None)


def build_app(config: AppConfig, sources: dict[str, dict[str, Any]] | None = None):
    """The bound application: the router as the HTTP ingress, holding the engines of the models
    placed in it, and one deployment per model placed on its own."""
    from serving.deployments.model_servers import EmbedServer, RerankServer
    from serving.deployments.router import Router

    servers = {"embed": EmbedServer, "rerank": RerankServer}
    handles, local = {}, {}
    has_gpus = _cluster_has_gpus()
    router_options, local_overrides = ingress_options(config, has_gpus)
    for model in config.models:
        if model.placement == "ingress":
            local[model.name] = _with_engine(model, local_overrides[model.name])
        else:
            options, overrides = replica_options(model, has_gpus)
            handles[model.name] = servers[model.kind].options(**options).bind(_with_engine(model, overrides))
    return Router.options(**router_options).bind(config.dump_with_keys(), handles, sources or {}, local)


def _with_engine(model: EmbedDeploymentConfig | RerankDeploymentConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model's config as its engine's owner receives it: engine fields overridden, as JSON."""
    return model.model_copy(update={"engine": model.engine.model_copy(update=overrides)}).model_dump(mode="json")


def app_builder(args: dict[str, Any]):
    """Entry point for Ray's own tools. `config` is a YAML file path
    (`serve run serving.deployments.app:app_builder config=FILE`) or the config mapping itself
    (a Serve config file's `args: {config: {models: ...}}`, as the Helm chart renders it).
    Either way it is the same AppConfig, and the environment overrides it."""
    from serving.models.sources import resolve_sources

    source = args.get("config")
    if isinstance(source, dict):
        config = AppConfig.load(None, **source)
    elif source is None or isinstance(source, str):
        config = AppConfig.load(source)
    else:
        raise TypeError(f"app_builder: `config` must be a file path or a mapping, got {type(source).__name__}")
    config, sources = resolve_sources(config)
    return build_app(config, sources)


def _cluster_has_gpus() -> bool:
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def deployment_name(model_name: str) -> str:
    """Ray deployment names cannot hold every character a model id can (hub ids have '/')."""
    return "".join(c if c.isalnum() or c in "-_." else "--" for c in model_name)
