"""What the embed and rerank engines share at run time: tokenizer, request ids, output streams, shutdown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from serving.engines.errors import EngineDiedError, EngineInputError, EngineUnavailableError


def load_tokenizer(model: str):
    """The checkpoint's own HF tokenizer: the same files vLLM loads, so ids agree."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def new_request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@contextmanager
def dead_engine_is_unavailable() -> Iterator[None]:
    """Translate vLLM's EngineDeadError into EngineDiedError (503 at the API)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError as exc:
        raise EngineDiedError(f"engine is not available: {exc}") from exc


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

    @contextmanager
    def shutdown_on_error(self) -> Iterator[None]:
        """Stop the engine if the rest of the constructor fails, so no engine process is orphaned."""
        try:
            yield
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Stop the engine-core processes now. Left to garbage collection, AsyncLLM's finaliser
        runs during interpreter teardown and prints errors instead of exiting cleanly."""
        import gc

        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()
