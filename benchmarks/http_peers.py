"""The servers the HTTP benchmark compares, each started on the same checkpoint and engine settings.

A peer says how to start its server for a task (the command, its environment, the URL that
answers 200 once it is ready) and how `vllm bench serve` talks to it (backend, endpoint, model
name). Peers that need packages we don't pin run from their own venv (``benchmarks.venvs``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.http_workloads import Task
from benchmarks.venvs import REPO_ROOT, ensure_venv

EMBED_NAME, RERANK_NAME = "bench-embed", "bench-rerank"


@dataclass(frozen=True)
class EngineSettings:
    """What every vLLM-based peer runs with (ours, `vllm serve`, the in-process engines)."""

    dtype: str = "bfloat16"
    max_model_len: int = 1024
    cpu_kvcache_space_gib: float = 2
    cpu_omp_threads_bind: str = "0-1"  # both cores for the engine-core process, on every peer
    rerank_block_size: int = 32  # the CPU default 128 is longer than the reranker's shared prompt prefix
    # Smoke mode only (it checks the harness, not the numbers): no torch.compile, whose inductor build
    # runs again at every start on new checkpoint paths.
    enforce_eager: bool = False

    def engine(self, task: Task, model: Path) -> dict[str, Any]:
        engine: dict[str, Any] = {"model": str(model), "dtype": self.dtype, "max_model_len": self.max_model_len,
                                  "cpu_kvcache_space_gib": self.cpu_kvcache_space_gib,
                                  "cpu_omp_threads_bind": self.cpu_omp_threads_bind,
                                  "enforce_eager": self.enforce_eager}
        return engine | ({"block_size": self.rerank_block_size} if task == "rerank" else {})


@dataclass(frozen=True)
class Launch:
    command: list[str]
    env: dict[str, str]
    ready_url: str
    files: dict[str, str]  # name -> content, written to the work dir first (configs, templates)


@dataclass(frozen=True)
class Peer:
    name: str
    tasks: tuple[Task, ...]
    launch: Callable[[tuple[Task, ...], dict[str, Path], int, Path, EngineSettings], Launch]
    backend: dict[Task, str]  # `vllm bench serve --backend`
    endpoint: dict[Task, str]
    venv: str | None = None  # a peer venv that must be built first
    note: str = ""
    unsupported: dict[str, str] | None = None  # task -> why this peer does not run it
    multi_model: bool = False  # one server can hold the embedding and the reranker at once


def ours_app_config(tasks: tuple[Task, ...], models: dict[str, Path], port: int, settings: EngineSettings,
                    replicas: int = 1, http: dict[str, Any] | None = None, placement: str = "ingress",
                    router: dict[str, Any] | None = None, engine_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our app on the benchmark's checkpoints. ``placement: ingress`` (the default): the engines live
    in the ingress replicas, whose count is ``router.num_replicas``; ``deployment``: each model is a
    deployment of its own behind the router."""
    deployments = []
    for task in tasks:
        model = models["embedding" if task == "embed" else "reranker"]
        engine = settings.engine(task, model) | (engine_fields or {})
        if replicas > 1:  # each replica its own core (a list binds replica r of a node to entry r)
            engine["cpu_omp_threads_bind"] = [str(r % (os.cpu_count() or 1)) for r in range(replicas)]
        scaling = {"max_ongoing_requests": 64, "max_queued_requests": 512}
        if placement == "deployment":
            scaling["num_replicas"] = replicas
        deployments.append({
            "name": EMBED_NAME if task == "embed" else RERANK_NAME, "kind": task, "engine": engine,
            "placement": placement, "scaling": scaling, "resources": {"accelerator": "cpu", "cpus_per_shard": 0.5}})
    config = {"models": deployments, "http": {"host": "127.0.0.1", "port": port, **(http or {})},
              "fallback_to_tiny_models": False}
    if placement == "ingress" and replicas > 1:
        config["router"] = {"num_replicas": replicas}
    if router:
        config["router"] = config.get("router", {}) | router
    return config


# The request path before issue 15 (the landed defaults until then): Ray Serve's Python proxy, a
# router replica, and each model in a deployment of its own: three Python hops per request.
ROUTED_HTTP = {"ingress": "proxy", "throughput_optimized": False}


def _ours(replicas: int, http: dict[str, Any] | None = None, placement: str = "ingress",
          router: dict[str, Any] | None = None, engine_fields: dict[str, Any] | None = None) -> Callable[..., Launch]:
    def launch(tasks: tuple[Task, ...], models: dict[str, Path], port: int, work: Path,
               settings: EngineSettings) -> Launch:
        config = yaml.safe_dump(ours_app_config(tasks, models, port, settings, replicas, http, placement, router,
                                                engine_fields))
        # RAY_ADDRESS=local: a private Ray instance, never a cluster someone else started on this machine.
        return Launch([sys.executable, "-m", "serving.cli", "serve", "--config", str(work / "app.yaml")],
                      {"RAY_ADDRESS": "local"}, f"http://127.0.0.1:{port}/ready", {"app.yaml": config})
    return launch


def rerank_chat_template() -> str:
    """Our reranker prompt (serving.prompts) as the score template vLLM applies to (query, document)."""
    from serving import prompts

    pair = prompts.RERANK_PAIR_TEMPLATE.format(
        instruction=prompts.DEFAULT_RERANK_INSTRUCTION,
        query='{{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}',
        document='{{ messages | selectattr("role", "eq", "document") | map(attribute="content") | first }}')
    return prompts.RERANK_PREFIX + pair + prompts.RERANK_SUFFIX


def _vllm(tasks: tuple[Task, ...], models: dict[str, Path], port: int, work: Path, settings: EngineSettings,
          extra_env: dict[str, str] | None = None) -> Launch:
    (task,) = tasks  # one model per vLLM server
    files = {}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--runner", "pooling",
               "--host", "127.0.0.1", "--port", str(port), "--dtype", settings.dtype,
               "--max-model-len", str(settings.max_model_len), "--disable-log-stats",
               "--uvicorn-log-level", "warning"] + (["--enforce-eager"] if settings.enforce_eager else [])
    if task == "embed":
        command += ["--model", str(models["embedding"]), "--served-model-name", EMBED_NAME,
                    "--hf-overrides", json.dumps({"is_matryoshka": True})]
    else:
        # vLLM's documented conversion of the original Qwen3-Reranker (a causal LM scored on yes/no)
        # into a sequence classifier, with our prompt as its score template.
        overrides = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                     "is_original_qwen3_reranker": True}
        files["qwen3_reranker.jinja"] = rerank_chat_template()
        command += ["--model", str(models["reranker"]), "--served-model-name", RERANK_NAME,
                    "--hf-overrides", json.dumps(overrides), "--chat-template", str(work / "qwen3_reranker.jinja"),
                    "--block-size", str(settings.rerank_block_size), "--enable-prefix-caching"]
    env = {"VLLM_CPU_KVCACHE_SPACE": str(int(settings.cpu_kvcache_space_gib)),
           "VLLM_CPU_OMP_THREADS_BIND": settings.cpu_omp_threads_bind} | (extra_env or {})
    return Launch(command, env, f"http://127.0.0.1:{port}/health", files)


def st_layout(models: dict[str, Path]) -> Path:
    """The embedding checkpoint in the sentence-transformers layout Qwen3-Embedding ships on the hub.

    Transformer -> last-token Pooling -> Normalize, in the long-standing module names every
    sentence-transformers version reads (Infinity pins an older one). Files are links to the checkpoint.
    """
    src = models["embedding"]
    out = src.parent / "embedding-st"
    if (out / "modules.json").exists():
        return out
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "tokenizer_config.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    # The same tokenizer.json, named by the class the hub checkpoint names: the builder's newer
    # transformers writes "TokenizersBackend", which Infinity's pinned transformers does not know.
    tokenizer_config = json.loads((src / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config | {"tokenizer_class": "Qwen2Tokenizer"}))
    hidden = json.loads((src / "config.json").read_text())["hidden_size"]
    modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
    (out / "modules.json").write_text(json.dumps(
        [{"idx": int(i), "name": i, "path": path, "type": f"sentence_transformers.models.{kind}"}
         for i, path, kind in modules], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192, "do_lower_case": False}))
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
         "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True}))
    return out


def _infinity(tasks: tuple[Task, ...], models: dict[str, Path], port: int, work: Path, settings: EngineSettings) -> Launch:
    venv = REPO_ROOT / ".bench-venvs" / "infinity" / "bin"
    # Infinity takes its pooling from the sentence-transformers layout: last token, as the model card.
    command = [str(venv / "infinity_emb"), "v2", "--model-id", str(st_layout(models)),
               "--served-model-name", EMBED_NAME, "--engine", "torch", "--device", "cpu",
               "--dtype", settings.dtype, "--batch-size", "32", "--pooling-method", "auto",
               "--no-bettertransformer", "--host", "127.0.0.1", "--port", str(port), "--url-prefix", ""]
    return Launch(command, {"OMP_NUM_THREADS": "2", "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
                  f"http://127.0.0.1:{port}/health", {})


def _st(tasks: tuple[Task, ...], models: dict[str, Path], port: int, work: Path, settings: EngineSettings) -> Launch:
    python = REPO_ROOT / ".bench-venvs" / "st" / "bin" / "python"
    command = [str(python), str(REPO_ROOT / "benchmarks" / "peers" / "st_server.py"), "--model",
               str(models["embedding"]), "--port", str(port), "--threads", "2", "--batch-size", "32",
               "--max-length", str(settings.max_model_len)]
    return Launch(command, {}, f"http://127.0.0.1:{port}/health", {})


_OPENAI = {"embed": "openai-embeddings", "rerank": "vllm-rerank"}
_PATHS = {"embed": "/v1/embeddings", "rerank": "/v1/rerank"}
_EMBED_ONLY_RERANK = ("Qwen3-Reranker is a causal LM scored on the yes/no logits of one generated token; "
                      "this peer serves sequence-classification cross-encoders only")

PEERS: dict[str, Peer] = {
    "ours": Peer("ours", ("embed", "rerank"), _ours(1), _OPENAI, _PATHS, multi_model=True,
                 note="qwen3-serve serve, defaults: HAProxy -> the ingress replica, which holds the engine (one hop)"),
    "ours-routed": Peer("ours-routed", ("embed", "rerank"), _ours(1, ROUTED_HTTP, "deployment"), _OPENAI, _PATHS,
                        multi_model=True,
                        note="the path before issue 15: Ray's Python proxy -> router replica -> model replica "
                             "(placement: deployment, http.ingress proxy, throughput_optimized false)"),
    "vllm": Peer("vllm", ("embed", "rerank"), _vllm, _OPENAI, _PATHS,
                 note="python -m vllm.entrypoints.openai.api_server --runner pooling (same vLLM as ours)"),
    "vllm-spin10k": Peer("vllm-spin10k", ("embed", "rerank"),
                         functools.partial(_vllm, extra_env={"GOMP_SPINCOUNT": "10000"}), _OPENAI, _PATHS,
                         note="vllm serve with GOMP_SPINCOUNT=10000, the OpenMP spin count ours sets by default "
                              "(engine.cpu_omp_spin_count)"),
    "infinity": Peer("infinity", ("embed",), _infinity, {"embed": "infinity-embeddings"}, {"embed": "/embeddings"},
                     venv="infinity", note="infinity_emb v2 --engine torch --device cpu, own venv",
                     unsupported={"rerank": _EMBED_ONLY_RERANK}),
    "st": Peer("st", ("embed",), _st, _OPENAI, _PATHS, venv="st",
               note="sentence-transformers (Transformer + last-token Pooling + Normalize, as the model card's "
                    "ST config) behind a stdlib HTTP server, one encode at a time, own venv",
               unsupported={"rerank": "sentence-transformers has no Qwen3-Reranker (yes/no logit) scorer; "
                                      "the reranker reference is the in-process transformers loop of engine_bench"}),
    "ours-nometrics": Peer("ours-nometrics", ("embed", "rerank"), _ours(1, router={"request_metrics": False}),
                           _OPENAI, _PATHS, multi_model=True,
                           note="ours with router.request_metrics false: no per-request series recorded (what "
                                "recording them costs is ours against this)"),
    "ours-mpworker": Peer("ours-mpworker", ("embed", "rerank"), _ours(1, engine_fields={"distributed_executor_backend": "mp"}),
                          _OPENAI, _PATHS, multi_model=True,
                          note="ours with the model in a vLLM worker process of its own "
                               "(distributed_executor_backend mp), as vllm serve lays out a CPU engine"),
    "ours-libgompspin": Peer("ours-libgompspin", ("embed", "rerank"), _ours(1, engine_fields={"cpu_omp_spin_count": None}),
                             _OPENAI, _PATHS, multi_model=True,
                             note="ours with engine.cpu_omp_spin_count null: libgomp's default spin count (300,000), "
                                  "as before it was set"),
    "ours-haproxymetrics": Peer("ours-haproxymetrics", ("embed", "rerank"),
                                _ours(1, http={"haproxy_request_metrics": True}), _OPENAI, _PATHS, multi_model=True,
                                note="ours with http.haproxy_request_metrics true: HAProxy logs every request to Ray's "
                                     "HAProxy manager for Ray Serve's HTTP series (Ray's default)"),
    "ours-2replicas": Peer("ours-2replicas", ("embed",), _ours(2), _OPENAI, _PATHS,
                           note="ours with router.num_replicas 2 (two ingress replicas, one engine each), each "
                                "engine bound to a core of its own (cpu_omp_threads_bind [\"0\", \"1\"])"),
}
# Not a server: EmbedEngine / RerankEngine driven in-process (benchmarks.inprocess), the ceiling.
INPROCESS = "inprocess"
# goals: the first three
ALL_PEERS = ("ours", "vllm", INPROCESS, "ours-routed", "infinity", "st", "ours-2replicas", "ours-nometrics",
             "ours-mpworker", "ours-haproxymetrics", "ours-libgompspin", "vllm-spin10k")


def prepare(peer: Peer) -> None:
    """Build the peer's venv if it has one (raises VenvUnavailable with the reason)."""
    if peer.venv:
        ensure_venv(peer.venv)
