"""Typed configuration. This module is the only place defaults live.

Model quirks (hf_overrides, prompt strings, yes/no tokens) are config fields, so a YAML file in
``configs/`` can describe any Qwen3 embedding/reranker checkpoint without code branches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving import prompts
from serving.quantization import EmbeddingType


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Strict):
    """vLLM engine settings shared by the embed and rerank engines."""

    model: str = Field(description="Hub id or local path of the checkpoint.")
    served_model_name: str | None = Field(None, description="Name clients use; defaults to `model`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights/activation dtype. `auto`: on GPUs the checkpoint's (bf16 for Qwen3); on "
                            "CPUs bf16 where the CPU has it natively (AVX512-BF16, AMX, Arm BF16), else float32.")
    max_model_len: int | None = Field(
        None, ge=16, description="Max tokens per sequence, prompt included. None = the checkpoint's own limit "
                                 "(max_position_embeddings); a larger value is an error at start-up.")
    tensor_parallel_size: int = Field(1, ge=1, description="Shards per replica (GPUs, or CPU NUMA/core groups).")
    hf_overrides: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to the HF config.")
    enforce_eager: bool = Field(False, description="Skip torch.compile / CUDA graphs (faster start, slower run).")
    block_size: int | None = Field(None, ge=1, description="KV-cache block size in tokens; None = platform default.")
    max_num_seqs: int | None = Field(None, ge=1, description="Max sequences per engine step; None = vLLM default.")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Token budget per engine step.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="GPU only: fraction of GPU memory vLLM may use (ignored on CPU, where the "
                                     "KV cache has an explicit size).")
    cpu_kvcache_space_gib: float | None = Field(
        None, gt=0, description="CPU only: KV cache size in GiB. None = room for one max_model_len sequence, "
                                "at least 1 GiB. The VLLM_CPU_KVCACHE_SPACE environment variable overrides it.")
    cpu_omp_threads_bind: str | list[str] | None = Field(
        None, description='CPU backend only: VLLM_CPU_OMP_THREADS_BIND, e.g. "0-1" (TP=1) or "0|1" (TP=2). A list '
                          'gives each replica of a node its own cores: the replica with local rank r takes entry '
                          'r modulo its length (["0", "1"]: two replicas, one core each).')
    cpu_malloc: Literal["auto", "tcmalloc", "system"] = Field(
        "auto", description="CPU only: the allocator of the engine's processes. `auto`: tcmalloc when it is "
                            "installed (Debian/Ubuntu package libtcmalloc-minimal4), as vLLM's CPU guide "
                            "recommends: in a 30-minute soak the embed worker's memory stopped growing with it "
                            "and kept growing without. `tcmalloc`: required (start-up fails without it). "
                            "`system`: glibc malloc.")
    cpu_omp_spin_count: int | None = Field(
        10_000, ge=0, description="CPU only: GOMP_SPINCOUNT of the engine's processes, how long an idle OpenMP "
                                  "thread of the model spins before it sleeps. libgomp's default (300,000) keeps a "
                                  "core spinning for milliseconds after every engine step, taken from the front "
                                  "end on the same cores: short-query throughput was 154-250 req/s with it and "
                                  "240-247 with 10,000 (2 cores, tiny model), with no loss on a 0.6B model. "
                                  "None: libgomp's default. A GOMP_SPINCOUNT in the environment wins.")
    seed: int = Field(0, description="Engine seed.")
    scheduling_policy: Literal["priority", "fcfs"] = Field(
        "priority", description="vLLM's scheduler order. `priority`: the lowest request priority first (a "
                                "tenant's, see `tenants`), then arrival; with every request at one priority it is "
                                "first come, first served. `fcfs`: arrival only, priorities ignored.")
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None, description="How vLLM runs TP shards: `mp` (processes in the replica) or `ray` (placement-group "
                          "bundles). None lets the deployment shape decide; on CPU with one shard, the model "
                          "then runs in vLLM's engine-core process (`mp`: in a worker process of its own).")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class EmbedModelConfig(EngineConfig):
    """A Qwen3-Embedding model: last-token pooling on the appended EOS, L2-normalised, MRL dimensions."""

    model: str = Field("Qwen/Qwen3-Embedding-0.6B", description="Hub id or local path of the checkpoint.")
    # vLLM rejects `dimensions` unless the config declares matryoshka support; Qwen3's configs don't.
    hf_overrides: dict[str, Any] = Field(
        default_factory=lambda: {"is_matryoshka": True}, description="Overrides applied to the HF config.")
    default_instruction: str = Field(
        prompts.DEFAULT_EMBED_INSTRUCTION, min_length=1, description="Task used for queries that name none.")
    query_template: str = Field(
        prompts.EMBED_QUERY_TEMPLATE, description="Query format; must contain {instruction} and {query}.")
    min_dimensions: int = Field(32, ge=1, description="Smallest MRL output dimension allowed.")
    truncate: bool = Field(
        True, description="Inputs longer than max_model_len are truncated (keeping the EOS) if true, rejected if false.")
    urgent_step_ms: float | None = Field(
        50, gt=0, description="With `scheduling_policy: priority`: while two lanes (request priorities) share the "
                              "engine and the more urgent one sent a request in the last minute, a step with "
                              "urgent input holds only that input, and every other step is sized from the "
                              "engine's measured tokens/s to take about this long, so an urgent input waits about "
                              "this much for the step under way. With one lane it changes nothing. None: vLLM's "
                              "scheduler (an urgent input can wait two full steps).")

    @model_validator(mode="after")
    def _check_template(self) -> EmbedModelConfig:
        for key in ("{instruction}", "{query}"):
            if key not in self.query_template:
                raise ValueError(f"query_template must contain {key}; got {self.query_template!r}")
        return self


class RerankModelConfig(EngineConfig):
    """A Qwen3-Reranker model scored as p(yes) / (p(yes) + p(no)) on one generated token."""

    model: str = Field("Qwen/Qwen3-Reranker-0.6B", description="Hub id or local path of the checkpoint.")
    enable_prefix_caching: bool = Field(
        True, description="Reuse the KV cache of the shared system+instruction+query prefix across documents.")
    default_instruction: str = Field(
        prompts.DEFAULT_RERANK_INSTRUCTION, min_length=1, description="Instruction used when a request names none.")
    prefix: str = Field(prompts.RERANK_PREFIX, description="System prompt and user-turn opener.")
    pair_template: str = Field(
        prompts.RERANK_PAIR_TEMPLATE, description="Must contain {instruction}, {query} and {document}.")
    suffix: str = Field(prompts.RERANK_SUFFIX, description="Assistant turn opener with the empty think block.")
    yes_token: str = Field(prompts.RERANK_YES_TOKEN, description="Token whose probability is the relevance.")
    no_token: str = Field(prompts.RERANK_NO_TOKEN, description="Token for 'not relevant'.")

    @model_validator(mode="after")
    def _check_template(self) -> RerankModelConfig:
        for key in ("{instruction}", "{query}", "{document}"):
            if key not in self.pair_template:
                raise ValueError(f"pair_template must contain {key}; got {self.pair_template!r}")
        return self


# --- The whole app: models, routing, limits, auth. Loaded from YAML, overridable from the environment.


class ScalingConfig(_Strict):
    """Replicas of one model deployment and its backpressure bounds."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count when autoscaling is off.")
    autoscaling: bool = Field(False, description="Scale between min_replicas and max_replicas on load.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling floor.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling ceiling.")
    target_ongoing_requests: float = Field(8, gt=0, description="Autoscaling target of in-flight requests per replica.")
    upscale_delay_s: float = Field(30.0, ge=0, description="Autoscaling: how long load must stay above target "
                                                           "before a replica is added (Ray's default).")
    downscale_delay_s: float = Field(600.0, ge=0, description="Autoscaling: how long load must stay below target "
                                                              "before a replica is removed (Ray's default).")
    max_ongoing_requests: int = Field(32, ge=1, description="In-flight requests per replica before queueing.")
    max_queued_requests: int = Field(
        512, ge=-1, description="Requests queued at the caller beyond which new ones get 429; -1 = unbounded.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with 429 responses.")
    urgent_reserve: float = Field(
        0.1, ge=0, lt=1, description="Share of a model's in-flight bound (max_ongoing_requests + max_queued_requests) "
                                     "that only priority-0 requests may fill, so a flood of less urgent work is "
                                     "refused before it crowds out the most urgent lane. Models in the ingress, and "
                                     "the router's queue of merged embed calls for a model behind a handle.")
    max_constructor_retry_count: int = Field(
        1, ge=1, description="Start-up failures in a row after which a deployment is marked failed instead of "
                             "retried (Ray caps it at 3 per replica). 1: a model that cannot load fails at once.")

    @model_validator(mode="after")
    def _check_range(self) -> ScalingConfig:
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class ResourceConfig(_Strict):
    """What one replica reserves. With GPUs, each tensor-parallel shard gets its own GPU bundle."""

    accelerator: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="`gpu` reserves GPUs per shard; `cpu` none; `auto` picks gpu if the cluster has GPUs.")
    gpus_per_shard: float = Field(1.0, gt=0, description="GPUs per tensor-parallel shard (gpu only).")
    cpus_per_shard: float = Field(1.0, gt=0, description="CPUs reserved per shard (the whole replica on cpu).")
    replica_cpus: float = Field(1.0, gt=0, description="CPUs for the replica actor itself.")


class _ModelDeployment(_Strict):
    name: str = Field(min_length=1, description="Model name clients send in `model`; also the deployment name.")
    placement: Literal["ingress", "deployment"] = Field(
        "ingress", description="`ingress`: the engine lives in every replica of the HTTP ingress, so a request "
                               "takes one hop, as in `vllm serve`; the ingress's replicas (router.num_replicas or "
                               "router autoscaling) scale it, and a large request is served by the replica that "
                               "took it. `deployment`: a Ray Serve deployment of its own, reached from the ingress "
                               "through a handle (one more hop per request), with its own replicas or autoscaling "
                               "and large requests split over them.")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    resources: ResourceConfig = Field(default_factory=ResourceConfig)

    @model_validator(mode="after")
    def _check_placement(self) -> _ModelDeployment:
        if self.placement == "ingress" and (self.scaling.autoscaling or self.scaling.num_replicas != 1):
            raise ValueError(f"model {self.name!r} is placed in the ingress, whose replicas are its replicas: set "
                             "router.num_replicas (or router.autoscaling) instead of scaling.num_replicas / "
                             "scaling.autoscaling, or give the model `placement: deployment`")
        return self


class QuantizationConfig(_Strict):
    """How `int8` / `uint8` embeddings are scaled (`binary` / `ubinary` keep the sign bits and need nothing)."""

    calibration: str | None = Field(
        None, min_length=1, description="A .npy file of calibration embeddings (one row per text, the model's full "
                                        "dimension), written by `qwen3-serve calibrate`; each dimension's range is "
                                        "their min and max (for MRL `dimensions`, of the vectors truncated and "
                                        "re-normalised). Read when the app starts, so it must exist where the "
                                        "ingress runs; a relative path is made absolute where the config is loaded. "
                                        "None: [-1, 1] for every dimension (valid for any L2-normalised vector, "
                                        "coarser).")

    @field_validator("calibration")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Replicas do not share the loading process's working directory.
        return str(Path(value).expanduser().absolute()) if value else value


class EmbedCacheConfig(_Strict):
    """An exact cache of this model's vectors in each replica that runs it: an input computed once is
    answered from memory, bit for bit, until it is evicted (least recently used first)."""

    max_bytes: int = Field(0, ge=0, description="Memory for cached vectors and their keys, per replica; 0 turns "
                                                "the cache off. About 4.6 KB per 1,024-dimension vector.")
    inputs: Literal["queries", "all"] = Field(
        "queries", description="`queries`: inputs sent with input_type `query` (search traffic, which repeats); "
                               "`all`: documents and token-id inputs too.")


class EmbedDeploymentConfig(_ModelDeployment):
    kind: Literal["embed"] = "embed"
    engine: EmbedModelConfig = Field(default_factory=EmbedModelConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    cache: EmbedCacheConfig = Field(default_factory=EmbedCacheConfig)


class RerankDeploymentConfig(_ModelDeployment):
    kind: Literal["rerank"] = "rerank"
    engine: RerankModelConfig = Field(default_factory=RerankModelConfig)


ModelDeploymentConfig = Annotated[EmbedDeploymentConfig | RerankDeploymentConfig, Field(discriminator="kind")]


class AliasTarget(_Strict):
    model: str = Field(description="A model name from `models`.")
    weight: float = Field(gt=0, description="Relative share of the alias's traffic.")


class LimitsConfig(_Strict):
    """Request bounds; a request over any of them gets 413."""

    max_inputs_per_request: int = Field(2048, ge=1, description="Inputs per /v1/embeddings request.")
    max_input_chars: int = Field(200_000, ge=1, description="Characters per embedding input or rerank document.")
    max_input_tokens: int = Field(32_768, ge=1, description="Token ids per token-list embedding input.")
    max_documents_per_request: int = Field(1000, ge=1, description="Documents per /v1/rerank request.")
    max_query_chars: int = Field(20_000, ge=1, description="Characters of a rerank query or an instruction.")
    max_request_chars: int = Field(
        1_000_000, ge=1, description="Characters of all texts in one request (inputs, or query and documents).")
    embed_chunk_size: int = Field(
        64, ge=1, description="Inputs per sub-request: large embedding requests are split and spread over replicas.")
    max_body_bytes: int | None = Field(
        None, ge=1024, description="Request bodies over this get 413 before they are parsed. None = 6 bytes per "
                                   "allowed character (JSON's \\uXXXX escapes) + 1 MiB, so the body limit never "
                                   "rejects a request the other limits allow.")

    @property
    def body_limit_bytes(self) -> int:
        return self.max_body_bytes or 6 * self.max_request_chars + (1 << 20)


class RouterConfig(_Strict):
    """The HTTP ingress deployment: routing, and the engines of every model placed in it."""

    num_replicas: int = Field(1, ge=1, description="Ingress replicas (fixed), each with its own engines of the "
                                                   "models placed in the ingress.")
    autoscaling: bool = Field(False, description="Scale the ingress between min_replicas and max_replicas on load.")
    min_replicas: int = Field(1, ge=1, description="Ingress autoscaling floor.")
    max_replicas: int = Field(1, ge=1, description="Ingress autoscaling ceiling.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Ingress autoscaling target of in-flight requests per replica.")
    upscale_delay_s: float = Field(30.0, ge=0, description="Ingress autoscaling: how long load must stay above "
                                                           "target before a replica is added (Ray's default).")
    downscale_delay_s: float = Field(600.0, ge=0, description="Ingress autoscaling: how long load must stay below "
                                                              "target before a replica is removed (Ray's default).")
    max_ongoing_requests: int = Field(1000, ge=1, description="In-flight HTTP requests per ingress replica.")
    traffic_seed: int = Field(0, description="Seed of the deterministic weighted split of alias traffic.")
    health_timeout_s: float = Field(5.0, gt=0, description="How long /ready waits for each model deployment.")
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent when the ingress is at max_ongoing_requests.")
    merged_embed_calls_per_replica: int = Field(
        2, ge=0, description="Embedding requests smaller than `limits.embed_chunk_size` are merged: while this many "
                             "calls per model replica are running, new ones wait and go out together as one call "
                             "(no timer, so nothing waits at low load). With autoscaling the bound is at least "
                             "`target_ongoing_requests` per replica, so replicas still see their target load. "
                             "0: every request is its own call.")

    request_metrics: bool = Field(
        True, description="Record each request's series in /metrics (`ray_qwen3_requests_total`, `_errors_total`, "
                          "`_input_tokens_total`, `_request_duration_seconds`, `_request_stage_duration_seconds`): "
                          "a few microseconds of the ingress's CPU per request. Off: none of them is recorded; "
                          "TEI's timing headers, traces, the engines' step series and resent calls still are.")

    @model_validator(mode="after")
    def _check_range(self) -> RouterConfig:
        if self.autoscaling and self.min_replicas > self.max_replicas:
            raise ValueError(f"router.min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


# What HAProxy resends to another replica: the replica was gone (connection refused or reset), closed
# the connection before answering or sent a broken answer (it died mid-request), or answered 503 (its
# engine died; the replica leaves at once). Ray's own 502/503/504 pages are HAProxy's, never retried.
#
# HAProxy can resend only a request it held whole when it first wrote to the replica (HAProxy 2.8
# drops the retry otherwise). Clients often write headers and body apart, and HAProxy forwards the
# headers at once unless told to wait for the body: such requests got the dying replica's 503 (2 of
# 5,701 in one kill test) or HAProxy's error page (1 of 6,027). `option http-buffer-request` waits for a
# body that fits in its buffer. Ray's template has no place for extra options but writes this value
# as is at the end of the `retry-on` line of its `defaults` section, so the option goes on a line of
# its own after it; tests/integration/serve checks the config Ray writes.
HAPROXY_RETRY_ON = "conn-failure empty-response junk-response 503\n    option http-buffer-request"


class HttpConfig(_Strict):
    host: str = Field("0.0.0.0", description="Bind address of Ray Serve's HTTP proxy.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    request_timeout_s: float | None = Field(300.0, gt=0, description="Proxy-side timeout per request.")
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy", description="`haproxy`: Ray Serve's HAProxy ingress forwards each request straight to an ingress "
                               "replica's own HTTP server (RAY_SERVE_ENABLE_HA_PROXY). `proxy`: Ray Serve's Python "
                               "proxy actor, one more process hop per request.")
    haproxy_threads: int | None = Field(
        None, ge=1, description="HAProxy's threads (RAY_SERVE_HAPROXY_NBTHREAD). None: Ray's default (4), or fewer "
                                "when `qwen3-serve serve` starts Ray on a host with fewer than 8 cores (half of them, "
                                "at least 1), so HAProxy does not compete with the engines for small hosts' cores.")
    retries: int = Field(
        2, ge=0, description="With HAProxy: how many times a request may be sent again, each time to another "
                             "ingress replica than the last, when its replica refused the connection, died before "
                             "answering (closed connection, no or broken response) or answered 503 (its engine "
                             "died). Embeddings and scores have no side effects, so resending is safe. 429 and every "
                             "other answer go back to the client as they are. 0: HAProxy's connection retries only.")
    retry_body_kib: int = Field(
        64, ge=16, description="With HAProxy: its buffer size (tune.bufsize). A request is resent only if it fits in "
                               "one buffer; larger ones are not retried. Each connection may hold two buffers.")
    drain_s: float = Field(
        5.0, ge=0, description="With HAProxy: how long a stopping ingress replica stays reachable before it "
                               "refuses new connections (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S; Ray's "
                               "default, 30 s, allows for an external load balancer in front of the replicas). Here "
                               "Serve's own HAProxy is the only one: it dropped a stopping replica 0.8 s after the "
                               "controller stopped it, and a request that still arrives later is refused and "
                               "resent to another replica. Every stop of an ingress replica (scale-down, shutdown, "
                               "redeploy) waits this long.")
    haproxy_request_metrics: bool = Field(
        False, description="With HAProxy: Ray Serve's per-request HTTP series (`ray_serve_num_http_requests`, "
                           "`_http_request_latency_ms`, `_num_http_error_requests`) and HAProxy's own gauges "
                           "(RAY_SERVE_HAPROXY_METRICS_ENABLED). For them HAProxy sends a log line per request to "
                           "Ray's HAProxy manager, which parses it in Python: about 0.1 ms of CPU per request, "
                           "for series that `qwen3_requests_total` and `qwen3_request_duration_seconds` already "
                           "give (by model, endpoint, tenant and status). Off by default.")
    throughput_optimized: bool = Field(
        True, description="Ray Serve's throughput settings (RAY_SERVE_THROUGHPUT_OPTIMIZED): user code on the "
                          "replica's own event loop (no hand-off to a second thread per request), gRPC between "
                          "deployments, buffered access logs, no replica logs on stderr (they stay in Ray's log "
                          "files).")

    def ray_serve_env(self) -> dict[str, str]:
        """The Ray Serve environment these settings mean. Ray reads it when its processes start, so
        `qwen3-serve serve` sets it before starting a local cluster; on an existing cluster it must be
        set where the cluster starts (`ray start`, or the Helm chart's pods)."""
        env = {"RAY_SERVE_ENABLE_HA_PROXY": "1" if self.ingress == "haproxy" else "0",
               "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1" if self.throughput_optimized else "0"}
        if self.ingress == "haproxy" and self.request_timeout_s:  # HAProxy's own; it ignores Serve's http_options
            env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] = str(math.ceil(self.request_timeout_s))
        if self.ingress == "haproxy" and self.haproxy_threads:
            env["RAY_SERVE_HAPROXY_NBTHREAD"] = str(self.haproxy_threads)
        if self.ingress == "haproxy":
            env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = f"{self.drain_s:g}"
            env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] = "1" if self.haproxy_request_metrics else "0"
        if self.ingress == "haproxy" and self.retries:  # Ray's default resends connection failures only
            env |= {"RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON, "RAY_SERVE_HAPROXY_RETRIES": str(self.retries),
                    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": str(self.retry_body_kib * 1024)}
        return env


def _comma_separated(value: Any) -> Any:
    """Keys given as one string (an environment variable): comma-separated, blanks dropped."""
    return [k.strip() for k in value.split(",") if k.strip()] if isinstance(value, str) else value


class TenantConfig(_Strict):
    """A client of the API: its keys, the name its traffic carries in metrics, its lane, its quotas."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)  # keys

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="Names the tenant's traffic in metrics (the `tenant` label) and in logs.")
    keys: Annotated[list[SecretStr], NoDecode] = Field(
        min_length=1, description="Bearer keys of this tenant (several, to rotate them). Never logged.")
    priority: int = Field(0, ge=0, description="The tenant's lane: lower runs first (vLLM's and Cohere's sense), "
                                               "in the router's queues and in the engines. A request's `priority` "
                                               "field may lower its own urgency further, never raise it above "
                                               "this.")
    requests_per_s: float | None = Field(None, gt=0, description="Quota: requests per second; over it, 429 with "
                                                                 "Retry-After. None: no limit.")
    input_tokens_per_min: int | None = Field(None, gt=0, description="Quota: input tokens per minute (what usage "
                                                                     "reports); over it, 429. None: no limit.")
    burst_s: float = Field(1.0, gt=0, description="How many seconds of `requests_per_s` may come at once (the "
                                                  "bucket's depth; at least one request).")
    cache_group: str | None = Field(None, min_length=1, description="Tenants with the same group share cached "
                                                                    "embeddings; None: the tenant's own cache.")

    _split_keys = field_validator("keys", mode="before")(_comma_separated)


class AppConfig(BaseSettings):
    """The whole serving app. YAML gives the base; QWEN3_SERVE_* environment variables override it,
    nested with `__`, e.g. QWEN3_SERVE_HTTP__PORT=9000 or QWEN3_SERVE_LIMITS__MAX_INPUTS_PER_REQUEST=64."""

    # Errors never echo their input: it holds the API keys.
    model_config = SettingsConfigDict(env_prefix="QWEN3_SERVE_", env_nested_delimiter="__", extra="forbid",
                                      hide_input_in_errors=True)

    models: list[ModelDeploymentConfig] = Field(
        default_factory=lambda: [EmbedDeploymentConfig(name="Qwen/Qwen3-Embedding-0.6B"),
                                 RerankDeploymentConfig(name="Qwen/Qwen3-Reranker-0.6B")],
        description="Model deployments; each `name` is what clients send as `model`.")
    aliases: dict[str, list[AliasTarget]] = Field(
        default_factory=dict, description="Names that split traffic over models by weight (e.g. a 90/10 canary).")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer keys of the `default` tenant (priority 0, no quotas); with no "
                                          "keys here and no `tenants`, auth is off. Env: comma-separated "
                                          "QWEN3_SERVE_API_KEYS.")
    tenants: list[TenantConfig] = Field(
        default_factory=list, description="Named clients with their own keys, lanes and quotas (beside the "
                                          "`default` tenant of `api_keys`).")
    fallback_to_tiny_models: bool = Field(
        True, description="If a hub model cannot be reached and has no local copy, serve a tiny random model "
                          "(and say so in logs and /v1/models) instead of failing.")
    tiny_models_dir: str = Field(".tiny-models", description="Where fallback tiny models are built and cached.")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return env_settings, init_settings  # the environment overrides the YAML file

    _split_keys = field_validator("api_keys", mode="before")(_comma_separated)

    @model_validator(mode="after")
    def _check_names(self) -> AppConfig:
        names = [m.name for m in self.models]
        if not names:
            raise ValueError("`models` must list at least one model deployment")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {duplicates}")
        kinds = {m.name: m.kind for m in self.models}
        for alias, targets in self.aliases.items():
            if alias in kinds:
                raise ValueError(f"alias {alias!r} has the same name as a model; pick another name")
            if not targets:
                raise ValueError(f"alias {alias!r} needs at least one target")
            unknown = [t.model for t in targets if t.model not in kinds]
            if unknown:
                raise ValueError(f"alias {alias!r} points at unknown models {unknown}; known: {names}")
            if len({kinds[t.model] for t in targets}) > 1:
                raise ValueError(f"alias {alias!r} mixes embed and rerank models")
        tenants = [t.name for t in self.tenants] + (["default"] if self.api_keys else [])
        repeated = sorted({n for n in tenants if tenants.count(n) > 1})
        if repeated:
            raise ValueError(f"tenant names must be unique (`default` is the tenant of `api_keys`); repeated: "
                             f"{repeated}")
        keys = [k.get_secret_value() for k in self.api_keys] + [k.get_secret_value() for t in self.tenants
                                                               for k in t.keys]
        if len(set(keys)) != len(keys):  # the message must not show a key
            raise ValueError("an API key is given twice (in `api_keys` or `tenants[].keys`): each key names one tenant")
        return self

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> AppConfig:
        """Read YAML (if given), apply `overrides`, then the environment; invalid values fail here."""
        data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text())
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping at the top level")
            data = loaded or {}
        return cls(**(data | overrides))

    def model(self, name: str) -> EmbedDeploymentConfig | RerankDeploymentConfig:
        return next(m for m in self.models if m.name == name)

    def dump_with_keys(self) -> dict[str, Any]:
        """The config as JSON data with its real API keys (a SecretStr dumps as "**********"), for the
        ingress replicas, which check them."""
        data = self.model_dump(mode="json")
        data["api_keys"] = [k.get_secret_value() for k in self.api_keys]
        for tenant, spec in zip(data["tenants"], self.tenants):
            tenant["keys"] = [k.get_secret_value() for k in spec.keys]
        return data


# --- Bulk jobs (`qwen3-serve encode` / `score`): a Ray Data pipeline over files, one engine per actor.


class BulkJobConfig(_Strict):
    """One offline job: read JSON Lines or Parquet, run every row through an engine, write Parquet."""

    kind: Literal["encode", "score"] = Field(description="`encode` embeds one text per row; `score` reranks pairs.")
    input: str = Field(min_length=1, description="A file, a directory or a glob of .jsonl/.json/.ndjson or .parquet "
                                                 "files. Paths with a part starting with `_` or `.` are skipped.")
    output: str = Field(min_length=1, description="Directory for the result Parquet files; bookkeeping goes in "
                                                  "its `_`-prefixed subfolders.")
    id_field: str = Field("id", min_length=1, description="Column holding each row's unique id.")
    text_field: str = Field("text", min_length=1, description="encode: column holding the text to embed.")
    query_field: str = Field("query", min_length=1, description="score: column holding the query.")
    document_field: str = Field("document", min_length=1, description="score: column holding the document.")
    input_type: Literal["document", "query"] = Field(
        "document", description="encode: `query` formats every text with the query instruction, as the API does.")
    instruction: str | None = Field(None, min_length=1, description="Task instruction (encode queries, score pairs); "
                                                                     "None = the model's default.")
    dimensions: int | None = Field(None, ge=1, description="encode: MRL output size; None = the model's hidden size (full vectors).")
    embedding_type: EmbeddingType = Field(
        "float", description="encode: the `embedding` column as the API's quantized types (after `dimensions`): "
                             "`int8` / `uint8` one value per dimension, scaled by the model's "
                             "`quantization.calibration`; `binary` / `ubinary` the sign bits, eight per value.")
    replicas: int = Field(1, ge=1, description="Actors in the pool, one engine each.")
    batch_size: int = Field(256, ge=1, description="Rows per batch handed to an actor; also rows per output file "
                                                  "and per checkpoint commit.")
    batches_in_flight: int = Field(
        4, ge=1, description="Batches each actor works on at once, so the engine is never idle between batches.")
    max_task_retries: int = Field(
        4, ge=0, description="Times a batch is retried after its actor died (the actor is restarted each time).")
