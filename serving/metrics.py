"""Request metrics through Ray's metrics API, so Ray's exporter aggregates every router replica
on a node into one Prometheus endpoint (a per-process prometheus_client registry would not)."""

from __future__ import annotations

import time
from contextlib import contextmanager

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
METRIC_PREFIXES = ("ray_qwen3_", "ray_serve_")


class RequestMetrics:
    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        tags = ("model", "endpoint")
        self.requests = Counter("qwen3_requests", "Requests by model, endpoint and HTTP status.",
                                tag_keys=(*tags, "status"))
        self.errors = Counter("qwen3_errors", "Failed requests by model, endpoint and error code.",
                              tag_keys=(*tags, "code"))
        self.input_tokens = Counter("qwen3_input_tokens", "Input tokens processed.", tag_keys=tags)
        self.retries = Counter("qwen3_retries", "Calls sent again because their model replica or engine died.",
                               tag_keys=("model", "reason"))
        self.latency_ms = Histogram("qwen3_request_latency_ms", "End-to-end request latency in milliseconds.",
                                    boundaries=LATENCY_BOUNDARIES_MS, tag_keys=tags)

    @contextmanager
    def track(self, endpoint: str):
        """Yields a dict the handler fills with `model` and `tokens`; records status and latency."""
        record = {"model": "unknown", "tokens": 0, "status": 200, "code": None}
        start = time.perf_counter()
        try:
            yield record
        except Exception as exc:
            record["status"] = getattr(exc, "status_code", 500)
            record["code"] = getattr(exc, "code", "internal_error")
            raise
        finally:
            tags = {"model": record["model"], "endpoint": endpoint}
            self.requests.inc(tags={**tags, "status": str(record["status"])})
            if record["code"]:
                self.errors.inc(tags={**tags, "code": record["code"]})
            if record["tokens"]:
                self.input_tokens.inc(record["tokens"], tags=tags)
            self.latency_ms.observe((time.perf_counter() - start) * 1000, tags=tags)


    def retry(self, model: str, reason: str) -> None:
        self.retries.inc(tags={"model": model, "reason": reason})


def filter_exposition(text: str) -> str:
    """Keep this stack's and Ray Serve's series from a node's full Prometheus exposition."""
    keep = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("# ") and len(line.split(" ", 3)) > 2 else line
        if name.startswith(METRIC_PREFIXES):
            keep.append(line)
    return "\n".join(keep) + "\n"
