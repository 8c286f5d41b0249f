"""Where an engine call's time went: tokenizing, waiting in vLLM's queue, running in the engine.

`StageTimes` travels back with every engine result (through a deployment handle too), so the
ingress can time a request's stages wherever its model ran. The queue time of each input is
vLLM's own (the engine core's QUEUED -> SCHEDULED interval), read by `EngineStats`, a vLLM stat
logger; the rest of an input's time in the engine (scheduling, the forward pass, both transfers)
is its inference time, so queue + inference is exactly the input's time from submit to output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Finished requests whose waiter never came for their queue time (it was cancelled) are dropped
# after this many, so the map stays bounded.
_UNCLAIMED = 4096


@dataclass(frozen=True)
class StageTimes:
    """Sums over a call's inputs, so the parts of a request (chunks, merged calls) add up."""

    inputs: int = 0
    tokenize_s: float = 0.0  # wall time of tokenizing the call's inputs (one batched tokenizer call)
    queue_s: float = 0.0  # summed over inputs: waiting in vLLM's scheduler
    inference_s: float = 0.0  # summed over inputs: the rest of the time from submit to output
    model_s: float = 0.0  # wall time of the whole call in the model, tokenizing included
    start_ns: int = 0  # epoch ns: the call began (for trace spans)
    engine_ns: int = 0  # epoch ns: tokenized, the inputs went to the engine

    def __add__(self, other: StageTimes) -> StageTimes:
        if not self.inputs:
            return other
        if not other.inputs:
            return self
        return StageTimes(self.inputs + other.inputs, self.tokenize_s + other.tokenize_s,
                          self.queue_s + other.queue_s, self.inference_s + other.inference_s,
                          max(self.model_s, other.model_s), min(self.start_ns, other.start_ns),
                          min(self.engine_ns, other.engine_ns))

    def per_input(self) -> dict[str, float]:
        """Seconds per input by stage, as TEI reports a batch: each stage's sum over the inputs
        divided by their number."""
        n = max(self.inputs, 1)
        return {"tokenize": self.tokenize_s / n, "queue": self.queue_s / n, "inference": self.inference_s / n}


class StageClock:
    """Times one engine call: `tokenized()` once its inputs are token ids, then per input
    `output_arrived()` and `queued(seconds)` (vLLM's queue time, read after the output)."""

    def __init__(self):
        self.start_ns = time.time_ns()
        self._start = self._engine = time.perf_counter()
        self.engine_ns = self.start_ns
        self.queue_s = 0.0
        self.engine_s = 0.0  # summed over inputs: submit -> output

    def tokenized(self) -> None:
        self._engine = time.perf_counter()
        self.engine_ns = time.time_ns()

    def output_arrived(self) -> None:
        self.engine_s += time.perf_counter() - self._engine

    def queued(self, seconds: float) -> None:
        self.queue_s += seconds

    def times(self, inputs: int) -> StageTimes:
        queue_s = min(self.queue_s, self.engine_s)  # two clocks: never more than the input's whole time
        return StageTimes(inputs, self._engine - self._start, queue_s, self.engine_s - queue_s,
                          time.perf_counter() - self._start, self.start_ns, self.engine_ns)


class EngineStats:
    """A vLLM stat logger (duck-typed, handed to AsyncLLM's `stat_loggers` by `factory`): keeps each
    finished request's queue time for its caller, and passes every step's stats to ``on_step``
    (the deployment's per-step series; engines know nothing of Ray)."""

    def __init__(self, on_step: Callable[[Any, Any], None] | None = None):
        self.on_step = on_step
        self.queued: dict[str, float] = {}  # request id -> queue seconds, until its caller reads them
        self.waiting: dict[str, asyncio.Future] = {}

    def factory(self, vllm_config: Any, engine_index: int = 0) -> EngineStats:
        return self

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        if iteration_stats is not None:
            for done in iteration_stats.finished_requests:
                future = self.waiting.pop(done.request_id, None)
                if future is None:
                    self.queued[done.request_id] = done.queued_time
                elif not future.done():
                    future.set_result(done.queued_time)
            while len(self.queued) > _UNCLAIMED:
                del self.queued[next(iter(self.queued))]
        if self.on_step is not None:
            self.on_step(scheduler_stats, iteration_stats)

    def log(self) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass

    async def queue_time(self, request_id: str) -> float:
        """A finished request's time in vLLM's queue. vLLM records it right after delivering the
        output, so it is usually here already; when the caller ran first, it waits for it."""
        queued = self.queued.pop(request_id, None)
        if queued is not None:
            return queued
        future = self.waiting[request_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(future, 5)
        except TimeoutError:  # not recorded (cannot happen while vLLM logs stats): count it as running
            return 0.0
        finally:
            self.waiting.pop(request_id, None)
