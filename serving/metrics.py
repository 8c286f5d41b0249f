"""Request metrics through Ray's metrics API, so Ray's exporter aggregates every router replica
on a node into one Prometheus endpoint (a per-process prometheus_client registry would not)."""

from __future__ import annotations

import asyncio
from typing import Any

# Seconds: from a tenth of a millisecond (a stage such as tokenizing one query) to half a minute.
SECONDS_BOUNDARIES = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                      5, 10, 30]
STEP_REQUESTS_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
STEP_TOKENS_BOUNDARIES = [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768]
METRIC_PREFIXES = ("ray_qwen3_", "ray_serve_")
# Each Ray metric call costs about as much again in Ray's own background work. Counter increments lose
# nothing by being summed here and handed to Ray once a second (its exporter publishes every few
# seconds anyway); histograms take every observation as it comes.
COUNTER_FLUSH_S = 1.0
GAUGE_REPUBLISH_S = 1.0


class SummedCounters:
    """Counter increments summed by (counter, tags) and passed to Ray every `COUNTER_FLUSH_S` seconds
    from the event loop they were made on."""

    def __init__(self):
        self.pending: dict[tuple[Any, tuple[tuple[str, str], ...]], float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, counter: Any, tags: tuple[tuple[str, str], ...], value: float = 1.0) -> None:
        key = (counter, tags)
        self.pending[key] = self.pending.get(key, 0.0) + value
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COUNTER_FLUSH_S, self.flush)

    def flush(self) -> None:
        self._timer = None
        pending, self.pending = self.pending, {}
        for (counter, tags), value in pending.items():
            if value > 0:  # Ray's counters take positive increments only
                counter.inc(value, tags=dict(tags))


class RequestMetrics:
    """The ingress's series, recorded once per answered request from its `RequestClock`."""

    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        tags = ("model", "endpoint")
        self.requests = Counter("qwen3_requests", "Requests by model, endpoint, tenant and HTTP status.",
                                tag_keys=(*tags, "tenant", "status"))
        self.errors = Counter("qwen3_errors", "Failed requests by model, endpoint, tenant and error code.",
                              tag_keys=(*tags, "tenant", "code"))
        self.input_tokens = Counter("qwen3_input_tokens", "Input tokens processed, by model, endpoint and tenant.",
                                    tag_keys=(*tags, "tenant"))
        self.retries = Counter("qwen3_retries", "Calls sent again because their model replica or engine died.",
                               tag_keys=("model", "reason"))
        self.duration = Histogram("qwen3_request_duration_seconds",
                                  "Time from a request's arrival to its response's first byte.",
                                  boundaries=SECONDS_BOUNDARIES, tag_keys=tags)
        self.stage_duration = Histogram(
            "qwen3_request_stage_duration_seconds",
            "Time of embed and rerank requests by stage: ingress, dispatch, tokenize, queue, inference, serialize "
            "(model stages per input, as TEI reports a batch).",
            boundaries=SECONDS_BOUNDARIES, tag_keys=(*tags, "stage"))
        # Exact sums: Ray computes a histogram's `_sum` from its buckets' midpoints, so mean times
        # (rate of seconds / rate of requests) come from these counters.
        self.seconds = Counter("qwen3_request_time_seconds", "Summed time from arrival to first byte (exact).",
                               tag_keys=tags)
        self.stage_seconds = Counter("qwen3_request_stage_time_seconds", "Summed time by stage (exact), as "
                                     "qwen3_request_stage_duration_seconds.", tag_keys=(*tags, "stage"))
        self.counters = SummedCounters()

    def record(self, clock) -> None:
        """One answered request (a `serving.api.timing.RequestClock`)."""
        tags = {"model": clock.model, "endpoint": clock.endpoint}
        labels = (("model", clock.model), ("endpoint", clock.endpoint))
        tenant = ("tenant", clock.tenant)
        add = self.counters.add
        add(self.requests, (*labels, tenant, ("status", str(clock.status))))
        if clock.code and clock.status >= 400:
            add(self.errors, (*labels, tenant, ("code", clock.code)))
        if clock.tokens:
            add(self.input_tokens, (*labels, tenant), clock.tokens)
        self.duration.observe(clock.total_s, tags=tags)
        add(self.seconds, labels, clock.total_s)
        for stage, seconds in clock.stages.items():
            self.stage_duration.observe(seconds, tags={**tags, "stage": stage})
            add(self.stage_seconds, (*labels, ("stage", stage)), seconds)

    def retry(self, model: str, reason: str) -> None:
        self.retries.inc(tags={"model": model, "reason": reason})


class EngineMetrics:
    """One engine's steps, as vLLM reports them to its stat loggers (`serving.engines.timing.EngineStats`),
    and its embedding cache's counts (`serving.engines.cache.EmbeddingCache`), if it has one."""

    def __init__(self, model: str, cache: Any = None):
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"model": model}
        self.step_requests = Histogram("qwen3_engine_step_requests", "Requests an engine step finished.",
                                       boundaries=STEP_REQUESTS_BOUNDARIES, tag_keys=("model",))
        self.step_tokens = Histogram("qwen3_engine_step_tokens", "Tokens an engine step computed (prompt and generated).",
                                     boundaries=STEP_TOKENS_BOUNDARIES, tag_keys=("model",))
        self.waiting = Gauge("qwen3_engine_requests_waiting", "Requests in the engine's queue (vLLM's scheduler).",
                             tag_keys=("model",))
        self.running = Gauge("qwen3_engine_requests_running", "Requests the engine is running.", tag_keys=("model",))
        metrics = [self.step_requests, self.step_tokens, self.waiting, self.running]
        self.cache = cache
        if cache is not None:
            self.cache_counts = {
                name: Counter(f"qwen3_cache_{name}", text, tag_keys=("model",)) for name, text in (
                    ("hits", "Embedding inputs answered without the engine (from the cache, or repeated in a request)."),
                    ("misses", "Embedding inputs the engine computed for a caller that may use the cache."),
                    ("evictions", "Cached vectors dropped to stay within the cache's max_bytes."))}
            self.cache_bytes = Gauge("qwen3_cache_bytes", "Memory held by cached vectors and their keys.",
                                     tag_keys=("model",))
            self.cache_entries = Gauge("qwen3_cache_entries", "Vectors in the cache.", tag_keys=("model",))
            metrics += [*self.cache_counts.values(), self.cache_bytes, self.cache_entries]
            self._cache_sent = {name: 0 for name in self.cache_counts}
        for metric in metrics:
            metric.set_default_tags(tags)
        self._queue = (0, 0)
        self._timer: asyncio.TimerHandle | None = None

    def record(self, scheduler_stats, iteration_stats) -> None:
        if iteration_stats is not None:
            if iteration_stats.finished_requests:
                self.step_requests.observe(len(iteration_stats.finished_requests))
            tokens = iteration_stats.num_prompt_tokens + iteration_stats.num_generation_tokens
            if tokens:
                self.step_tokens.observe(tokens)
        if scheduler_stats is not None:
            self._queue = (scheduler_stats.num_waiting_reqs, scheduler_stats.num_running_reqs)
        if self._timer is None:  # the first step: publish now, and from then on every second
            self._publish()

    def _publish(self) -> None:
        """The queue gauges, set again every second: Ray drops a gauge that is not set for a while,
        and an idle engine has no steps to set it."""
        self.waiting.set(self._queue[0])
        self.running.set(self._queue[1])
        if self.cache is not None:  # counted by the cache as it goes, handed to Ray here
            stats = self.cache.stats
            for name, counter in self.cache_counts.items():
                new = getattr(stats, name) - self._cache_sent[name]
                if new:
                    counter.inc(new)
                    self._cache_sent[name] += new
            self.cache_bytes.set(stats.bytes)
            self.cache_entries.set(stats.entries)
        self._timer = asyncio.get_running_loop().call_later(GAUGE_REPUBLISH_S, self._publish)


def filter_exposition(text: str) -> str:
    """Keep this stack's and Ray Serve's series from a node's full Prometheus exposition."""
    keep = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("# ") and len(line.split(" ", 3)) > 2 else line
        if name.startswith(METRIC_PREFIXES):
            keep.append(line)
    return "\n".join(keep) + "\n"
