"""What the embed and rerank engines share: building vLLM's AsyncLLM from typed config."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from serving.config import EngineConfig
from serving.engines.errors import EngineInputError, EngineUnavailableError

logger = logging.getLogger(__name__)


def engine_args(config: EngineConfig, **extra: Any):
    """vLLM AsyncEngineArgs for a model config; ``extra`` adds engine-specific fields."""
    from vllm import AsyncEngineArgs

    optional = {
        key: getattr(config, key)
        for key in ("block_size", "max_num_seqs", "max_num_batched_tokens", "distributed_executor_backend")
        if getattr(config, key) is not None
    }
    return AsyncEngineArgs(
        model=config.model,
        served_model_name=config.name,
        dtype=config.dtype,
        max_model_len=config.max_model_len,
        tensor_parallel_size=config.tensor_parallel_size,
        hf_overrides=dict(config.hf_overrides),
        enforce_eager=config.enforce_eager,
        gpu_memory_utilization=config.gpu_memory_utilization,
        seed=config.seed,
        **optional,
        **extra,
    )


def start_engine(config: EngineConfig, **extra: Any):
    """Start an AsyncLLM. vLLM reads the CPU backend's settings from the environment of the
    engine-core process it spawns, so they are exported just before the spawn."""
    from vllm.v1.engine.async_llm import AsyncLLM

    if config.cpu_kvcache_space_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kvcache_space_gib)
    if config.cpu_omp_threads_bind is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_omp_threads_bind
    logger.info("starting vLLM engine for %s (tp=%d)", config.model, config.tensor_parallel_size)
    return AsyncLLM.from_engine_args(engine_args(config, **extra))


def load_tokenizer(model: str):
    """The checkpoint's own HF tokenizer: the same files vLLM loads, so ids agree."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def new_request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@contextmanager
def dead_engine_is_unavailable() -> Iterator[None]:
    """Translate vLLM's EngineDeadError into EngineUnavailableError (503 at the API)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError as exc:
        raise EngineUnavailableError(f"engine is not available: {exc}") from exc


async def final_output(stream: AsyncIterator[Any]) -> Any:
    """Drain a vLLM output stream and return its last (final) output."""
    out = None
    with dead_engine_is_unavailable():
        async for out in stream:
            pass
    return out


def require_texts(values: Any, what: str) -> list[str]:
    """A non-empty list of non-empty strings, or a clear EngineInputError."""
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise EngineInputError(f"{what} must be a non-empty list of strings")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise EngineInputError(f"{what}[{i}] must be a string, got {type(value).__name__}")
        if not value:
            raise EngineInputError(f"{what}[{i}] is an empty string")
    return list(values)


class OwnsEngine:
    """Base for classes holding an AsyncLLM in ``_engine``: explicit, idempotent shutdown."""

    _engine: Any = None

    async def check_health(self) -> None:
        """Raise EngineUnavailableError unless the engine can take requests."""
        if self._engine is None:
            raise EngineUnavailableError("engine is shut down")
        with dead_engine_is_unavailable():
            await self._engine.check_health()

    def shutdown(self) -> None:
        """Stop the engine-core processes now. Left to garbage collection, AsyncLLM's finaliser
        runs during interpreter teardown and prints errors instead of exiting cleanly."""
        import gc

        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()
