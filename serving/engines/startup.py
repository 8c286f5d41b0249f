"""Starting a vLLM engine from typed config: defaults from the checkpoint and the machine, and
start-up failures reported as one line that names the model and the cause."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serving.config import EngineConfig
from serving.engines.errors import EngineStartupError
from serving.engines.output_tail import OutputTail

logger = logging.getLogger(__name__)
GIB = 1 << 30
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def engine_args(config: EngineConfig, **extra: Any):
    """vLLM AsyncEngineArgs for a model config; ``extra`` adds engine-specific fields."""
    from vllm import AsyncEngineArgs

    optional = {
        key: getattr(config, key)
        for key in ("max_model_len", "block_size", "max_num_seqs", "max_num_batched_tokens",
                    "distributed_executor_backend")
        if getattr(config, key) is not None
    }
    return AsyncEngineArgs(
        model=config.model,
        served_model_name=config.name,
        dtype=resolved_dtype(config.dtype),
        tensor_parallel_size=config.tensor_parallel_size,
        hf_overrides=dict(config.hf_overrides),
        enforce_eager=config.enforce_eager,
        gpu_memory_utilization=config.gpu_memory_utilization,
        seed=config.seed,
        scheduling_policy=config.scheduling_policy,
        # Our engines send token ids (rendered token inputs) and read logprobs by id: vLLM never needs the
        # tokenizer, whose load cost ~1 s in this process and ~2 s in the engine-core process.
        skip_tokenizer_init=True,
        **optional,
        **extra,
    )


def lane_steps(config: EngineConfig) -> dict[str, Any]:
    """Engine fields for `serving.engines.lanes.LaneScheduler` (embed engines with `urgent_step_ms`
    and priority scheduling): vLLM's scheduler class and the step length it reads."""
    step_ms = getattr(config, "urgent_step_ms", None)
    if step_ms is None or config.scheduling_policy != "priority":
        return {}
    from serving.engines.lanes import ADDITIONAL_KEY, LaneScheduler

    return {"scheduler_cls": f"{LaneScheduler.__module__}.{LaneScheduler.__qualname__}",
            "additional_config": {ADDITIONAL_KEY: step_ms}}


def resolved_dtype(dtype: str) -> str:
    """`auto` on a CPU: bfloat16 where the CPU computes it natively, else float32. vLLM's own `auto`
    keeps a bf16 checkpoint (every Qwen3) in bf16 on any CPU, and turns a float32 checkpoint into
    float16 for pooling models; without the instructions both are emulated, several times slower
    than float32 (README "Choosing the dtype on CPU"). Elsewhere `auto` is left to vLLM."""
    if dtype != "auto":
        return dtype
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return dtype
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """x86 AVX512-BF16 or AMX-BF16, or Arm's BF16 extension, from Linux's /proc/cpuinfo flags (macOS:
    sysctl, as vLLM asks)."""
    import sys

    if cpuinfo is None and sys.platform == "darwin":
        import subprocess

        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, check=False)
        return out.stdout.strip() == b"1"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def start_engine(config: EngineConfig, stats: Any = None, **extra: Any):
    """Start an AsyncLLM, or raise EngineStartupError naming the model and the cause in one line.
    ``stats``: a vLLM stat logger of ours (`serving.engines.timing.EngineStats`), or None.

    The config is built here, in this process, so bad paths, unsupported architectures and a
    max_model_len beyond the checkpoint fail at once; what fails later in vLLM's engine-core
    process (weights, memory) is named from that process's output.
    """
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.executor import Executor

    args = engine_args(config, **extra)
    with startup_errors(config):
        _check_model_path(config.model)
        vllm_config = args.create_engine_config()
        _size_cpu_kv_cache(config, vllm_config)
    in_process = _run_cpu_worker_in_engine_core(config, vllm_config)
    logger.info("starting vLLM engine for %s (tp=%d, max_model_len=%d%s)", config.model,
                config.tensor_parallel_size, vllm_config.model_config.max_model_len,
                ", model in the engine-core process" if in_process else "")
    tail = OutputTail()
    try:
        # vLLM's CPU backend reads the core binding from the environment of the process it spawns.
        device = vllm_config.device_config.device_type
        with tail, scoped_environ(VLLM_CPU_OMP_THREADS_BIND=cores_for_replica(config.cpu_omp_threads_bind),
                                  LD_PRELOAD=cpu_preload(config, device), GOMP_SPINCOUNT=omp_spin_count(config, device)), \
                _omp_environ(vllm_config, in_process):
            engine = AsyncLLM(vllm_config=vllm_config, executor_class=Executor.get_class(vllm_config),
                              log_requests=args.enable_log_requests, log_stats=not args.disable_log_stats,
                              stat_loggers=[stats.factory] if stats is not None else None)
    except Exception as exc:
        logger.exception("engine for %s failed to start", config.name)
        raise EngineStartupError(config.name, tail.cause() or summarize(exc), config.model) from exc
    watch_for_orphans(engine)
    drop_unexported_metrics(engine)
    return engine


def drop_unexported_metrics(engine: Any) -> None:
    """Stop vLLM's Prometheus stat logger, which it adds to every engine: it fills a prometheus_client
    registry of this process at every step (1.4% of an ingress replica's samples under short queries),
    and no endpoint exposes that registry here. The engine's series are `EngineStats`'s, through Ray's
    metrics (`serving/metrics.py`)."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    manager = getattr(engine, "logger_manager", None)
    if manager is not None:
        manager.stat_loggers = [s for s in manager.stat_loggers if not isinstance(s, PrometheusStatLogger)]


# Run by a small process of its own: the engine-core processes to kill are its arguments, its parent
# is the process that owns them. When that parent is gone, the reaper has a new parent.
# A pid counts as the same process while its start time (/proc/PID/stat, field 22) is unchanged.
REAPER = """
import os, signal, sys, time
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
owner = os.getppid()
pids = {int(p): started(int(p)) for p in sys.argv[1:]}
while any(started(p) == t is not None for p, t in pids.items()):
    if os.getppid() != owner:
        for p, t in pids.items():
            if started(p) == t is not None:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        break
    time.sleep(1)
"""


def watch_for_orphans(engine: Any) -> None:
    """Kill the engine-core processes within a second of this process dying without stopping them.

    vLLM stops them from a finaliser, which a process killed outright (SIGKILL, or Ray ending a worker
    whose raylet died: `os._exit` after its plasma connection failed) never runs, and the engine
    core does not watch its parent: it would keep its memory and cores forever. The reaper is a bare
    interpreter (no site, a few MB) that exits with the engine."""
    import subprocess
    import sys

    try:
        pids = [p.pid for p in engine.engine_core.resources.engine_manager.processes]
    except AttributeError:  # an engine-core layout without processes of ours (none on CPU and one GPU)
        return
    if not pids:
        return
    # Not waited for: it exits within a second of the engine core (subprocess reaps it later).
    subprocess.Popen([sys.executable, "-S", "-c", REAPER, *map(str, pids)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)


def _run_cpu_worker_in_engine_core(config: EngineConfig, vllm_config: Any) -> bool:
    """On CPU with one shard, run the model in vLLM's engine-core process (its `uni` executor).

    vLLM's CPU platform always gives the model a worker process of its own, spawned by the engine
    core, because OpenMP's core binding must be in a process's environment before it starts (the
    platform turns `uni` into `mp`; vLLM 0.32, platforms/cpu.py). The engine core is itself a
    freshly spawned process, so the same binding in *its* environment does the same: one spawn and
    one import of torch and vLLM fewer per engine (the tiny embedding model starts in about 30 s
    instead of 50 s here), one process fewer, the same vectors bit for bit. `distributed_executor_backend: mp`
    keeps vLLM's own layout; TP > 1 keeps a worker per shard.
    """
    parallel = vllm_config.parallel_config
    if (vllm_config.device_config.device_type != "cpu" or config.distributed_executor_backend is not None
            or parallel.world_size_across_dp != 1 or parallel.distributed_executor_backend not in (None, "mp")):
        return False
    parallel.distributed_executor_backend = "uni"
    return True


@contextmanager
def _omp_environ(vllm_config: Any, in_process: bool) -> Iterator[None]:
    """The OpenMP binding vLLM gives its first CPU worker process, in the environment the engine-core
    process is spawned with (only when that process runs the model)."""
    if not in_process:
        yield
        return
    from vllm.utils.ompmultiprocessing import OMPProcessManager

    with OMPProcessManager(vllm_config).configure_omp_envs(rank=0, local_rank=0):
        yield


def cpu_preload(config: EngineConfig, device: str, tcmalloc: Path = TCMALLOC) -> str | None:
    """LD_PRELOAD for a CPU engine's processes (vLLM spawns them, so they read it at start): tcmalloc
    first when `cpu_malloc` asks for it, after what is already preloaded (vLLM adds torch's libgomp).
    None leaves the environment as it is."""
    current = os.environ.get("LD_PRELOAD", "")
    if device != "cpu" or config.cpu_malloc == "system" or "tcmalloc" in current:
        return None
    if not tcmalloc.exists():
        if config.cpu_malloc == "tcmalloc":
            raise EngineStartupError(config.name, f"cpu_malloc is tcmalloc but {tcmalloc} is not installed "
                                                  "(apt-get install libtcmalloc-minimal4)")
        return None
    return ":".join(p for p in (str(tcmalloc), current) if p)


def omp_spin_count(config: EngineConfig, device: str) -> str | None:
    """GOMP_SPINCOUNT for a CPU engine's processes (`cpu_omp_spin_count`); None leaves the environment as
    it is, and so does one that sets it already (the user's own choice)."""
    if device != "cpu" or config.cpu_omp_spin_count is None or "GOMP_SPINCOUNT" in os.environ:
        return None
    return str(config.cpu_omp_spin_count)


def cores_for_replica(bind: str | list[str] | None, local_rank: int = 0) -> str | None:
    """The core binding of the replica with this local rank (on its node): a list gives each its own."""
    if isinstance(bind, list):
        return bind[local_rank % len(bind)] if bind else None
    return bind


@contextmanager
def scoped_environ(**values: str | None) -> Iterator[None]:
    """Set the given variables (None = leave as is) for the duration of the block only."""
    saved = {key: os.environ.get(key) for key, value in values.items() if value is not None}
    os.environ.update({key: value for key, value in values.items() if value is not None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def startup_errors(config: EngineConfig) -> Iterator[None]:
    """Any failure inside becomes EngineStartupError(model, one-line cause); the traceback is logged."""
    try:
        yield
    except EngineStartupError:
        raise
    except Exception as exc:
        logger.exception("engine for %s failed to start", config.name)
        raise EngineStartupError(config.name, summarize(exc), config.model) from exc


_LONG_MAX_MODEL_LEN = re.compile(
    r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((\w+)=(\d+)")


_WORKER_FAILED = re.compile(r"Worker failed with error '(.*)', please check")


def summarize(exc: BaseException) -> str:
    """One line that says what went wrong, for errors raised while building or starting an engine."""
    from pydantic import ValidationError

    text, kind = str(exc), type(exc).__name__
    if isinstance(exc, ValidationError) and exc.errors():  # vLLM's config checks: the message is the cause
        text, kind = str(exc.errors()[0].get("msg", text)).removeprefix("Value error, "), ""
    text = text.split(" Supported architectures:")[0]  # vLLM lists hundreds after the useful part
    if worker := _WORKER_FAILED.search(text):
        text = worker.group(1)
    if match := _LONG_MAX_MODEL_LEN.search(text):
        asked, key, limit = match.groups()
        return (f"max_model_len {asked} is above the checkpoint's limit of {limit} ({key}); "
                f"leave max_model_len unset to use {limit}, or set it to at most {limit}")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0][:400] if lines else ""
    return f"{kind}: {line}" if kind and line else line or kind


def _check_model_path(model: str) -> None:
    """A model that names a local path must be a Hugging Face checkpoint directory."""
    from serving.models.sources import looks_like_path

    path = Path(model).expanduser()
    if not path.exists():
        if looks_like_path(model):
            raise FileNotFoundError(f"no such directory: {model}")
        return  # a hub id
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"{model} is not a checkpoint directory (no config.json)")


def _size_cpu_kv_cache(config: EngineConfig, vllm_config: Any) -> None:
    """On CPU, give vLLM an explicit KV cache size in bytes.

    Without one, vLLM's CPU worker reserves ``gpu_memory_utilization`` of *all* RAM and refuses
    to start unless that much is free: 90% by default, which a machine in ordinary use does not
    have. GPUs keep vLLM's own sizing.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # the user's explicit environment wins, as in vLLM
        return
    model_config, parallel = vllm_config.model_config, vllm_config.parallel_config
    if config.cpu_kvcache_space_gib is not None:
        kv_bytes = int(config.cpu_kvcache_space_gib * GIB)
    else:
        kv_bytes = max(GIB, kv_bytes_per_token(vllm_config) * model_config.max_model_len)
        available = _available_memory_bytes()
        if kv_bytes > available:
            raise MemoryError((
                f"a KV cache for one {model_config.max_model_len}-token sequence needs {kv_bytes / GIB:.1f} GiB "
                f"but only {available / GIB:.1f} GiB of RAM is available; set a smaller max_model_len "
                f"or cpu_kvcache_space_gib"))
    vllm_config.cache_config.kv_cache_memory_bytes = kv_bytes
    logger.info("CPU KV cache for %s: %.2f GiB (%d layers x %d KV heads per shard)", config.name,
                kv_bytes / GIB, model_config.get_num_layers(parallel), model_config.get_num_kv_heads(parallel))


def kv_bytes_per_token(vllm_config: Any) -> int:
    """Key + value bytes one token occupies across all layers of one shard."""
    import torch

    model_config, parallel = vllm_config.model_config, vllm_config.parallel_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    dtype = model_config.dtype if cache_dtype == "auto" else getattr(torch, str(cache_dtype), model_config.dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return (2 * model_config.get_num_layers(parallel) * model_config.get_num_kv_heads(parallel)
            * model_config.get_head_size() * itemsize)


def _available_memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available
