"""Each request's stages, timed in one place that every dialect passes through.

`RequestTimer` (ASGI middleware, outermost) starts a `RequestClock` per request and keeps it in the
request's scope; the pipeline fills it (model, tokens, the model's `StageTimes`); when the response
starts, the clock is complete: TEI's timing headers are added, and the service records the
request's metrics and trace.

Stages, in order (seconds):
- ingress: arrival to the model call: reading and parsing the body, validation, routing;
- dispatch: the hop to a model deployment and back, and waiting to join a merged call (0 for a
  model in the ingress replica);
- tokenize, queue, inference: the model's (`serving/engines/timing.py`), per input as TEI reports
  a batch; queue is vLLM's scheduler queue, inference the rest of the input's time in the engine;
- serialize: the model's result to the response's first byte: building and encoding the answer.
For a one-input request they add up to the whole time, less a little bookkeeping; for a batch,
the model stages are per-input means of inputs that ran concurrently, so they add up to less.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from serving.engines.timing import StageTimes

ResultT = TypeVar("ResultT")
SCOPE_KEY = "qwen3.clock"
STAGES = ("ingress", "dispatch", "tokenize", "queue", "inference", "serialize")


class RequestClock:
    """One request's times and what the trace and metrics say of it."""

    def __init__(self):
        self.start_ns = time.time_ns()
        self._start = time.perf_counter()
        self.endpoint: str | None = None  # set when the pipeline takes the request
        self.model = "unknown"
        self.tenant = "unknown"  # the caller's tenant, once its key was checked
        self.kind: str | None = None  # "embed" or "rerank" once a model call returned
        self.inputs = self.tokens = self.chars = 0
        self.dimensions: int | None = None
        self.status, self.code = 200, None
        self.times = StageTimes()
        self.dispatch_s = 0.0
        self._call: float | None = None  # the first model call began
        self._called: float | None = None  # the last one returned
        self.total_s = 0.0
        self.respond_ns = 0
        self.stages: dict[str, float] = {}

    @contextmanager
    def track(self, endpoint: str, model: str) -> Iterator[RequestClock]:
        """The pipeline's span of the request: its endpoint, and the status of an error it raises."""
        self.endpoint, self.model = endpoint, model
        try:
            yield self
        except Exception as exc:
            self.status = getattr(exc, "status_code", 500)
            self.code = getattr(exc, "code", "internal_error")
            raise

    async def call_model(self, kind: str, call: Awaitable[ResultT]) -> ResultT:
        """Await one model call (a request may make several at once) and take its stage times."""
        started = time.perf_counter()
        if self._call is None:
            self._call = started
        result = await call
        self._called = time.perf_counter()
        times: StageTimes = result.times
        self.kind = kind
        self.times += times
        self.dispatch_s = max(self.dispatch_s, self._called - started - times.model_s)
        return result

    def epoch_ns(self, stage_end: str) -> int:
        """Wall-clock time (epoch ns) at which ``ingress`` or the model calls ended (for spans)."""
        moment = {"ingress": self._call, "model": self._called}[stage_end]
        return self.start_ns + int(((moment or self._start) - self._start) * 1e9)

    def respond(self, status: int) -> None:
        """The response starts: the request's times are final."""
        now = time.perf_counter()
        self.respond_ns = time.time_ns()
        self.status = status
        self.total_s = now - self._start
        if self.kind is None or self._call is None:
            return
        self.stages = {"ingress": self._call - self._start, "dispatch": max(self.dispatch_s, 0.0),
                       **self.times.per_input(), "serialize": now - (self._called or now)}

    def tei_headers(self) -> list[tuple[bytes, bytes]]:
        """TEI's response headers: whole milliseconds; stage times per input, as TEI reports a batch."""
        def ms(seconds: float) -> bytes:
            return str(int(seconds * 1000)).encode()

        total = ms(self.total_s)
        return [(b"x-compute-time", total),
                (b"x-compute-characters", str(self.chars).encode()), (b"x-compute-tokens", str(self.tokens).encode()),
                (b"x-total-time", total), (b"x-tokenization-time", ms(self.stages["tokenize"])),
                (b"x-queue-time", ms(self.stages["queue"])), (b"x-inference-time", ms(self.stages["inference"]))]


class RequestTimer:
    """ASGI middleware: a clock per request; at the response's start, TEI's timing headers on a
    model's answer and ``on_response(clock)``; once the body is sent, ``on_sent(clock, scope)``."""

    def __init__(self, app, on_response: Callable[[RequestClock], None],
                 on_sent: Callable[[RequestClock, dict[str, Any]], None] | None = None):
        self.app = app
        self.on_response = on_response
        self.on_sent = on_sent

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        clock = scope[SCOPE_KEY] = RequestClock()

        async def timed_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start" and clock.endpoint is not None:
                clock.respond(message["status"])
                if clock.stages and message["status"] < 400:
                    message["headers"] = [*message.get("headers", ()), *clock.tei_headers()]
                self.on_response(clock)
            await send(message)
            if (self.on_sent is not None and clock.endpoint is not None and kind == "http.response.body"
                    and not message.get("more_body", False)):
                self.on_sent(clock, scope)

        await self.app(scope, receive, timed_send)


def clock_of(scope: dict[str, Any]) -> RequestClock:
    """The request's clock (a fresh one where no `RequestTimer` runs, as in a bare route test)."""
    clock = scope.get(SCOPE_KEY)
    if clock is None:
        clock = scope[SCOPE_KEY] = RequestClock()
    return clock

