"""Request stage timing (serving/api/timing.py, serving/engines/timing.py) against a fake service
whose model calls take known times: TEI's headers, the stage record, the engine's queue times.
The live app's series and headers are tested in tests/integration/serve/test_observability.py."""

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.errors import ModelNotFound
from serving.api.protocol import ModelList
from serving.api.routes import build_api
from serving.config import AppConfig
from serving.engines.timing import EngineStats, StageTimes

MODEL_S = 0.12  # the fake model call's own time, as its StageTimes report it


@dataclass(frozen=True)
class Result:
    times: StageTimes


class TimedService:
    """Embeds and reranks in known times: `hop_s` in transit, then a model that took MODEL_S."""

    def __init__(self, hop_s: float = 0.05):
        self.config = AppConfig.model_validate({"models": [{"name": "e", "kind": "embed"},
                                                           {"name": "r", "kind": "rerank"}]})
        self.hop_s = hop_s
        self.recorded = []

    async def _model(self, n: int) -> Result:
        await asyncio.sleep(self.hop_s + MODEL_S)
        # per input: 10 ms tokenizing (one batched call), 20 ms queued, 90 ms running
        return Result(StageTimes(n, 0.010 * n, 0.020 * n, 0.090 * n, MODEL_S, 1, 2))

    async def embed(self, request, routing_key, clock, tenant=None):
        if request.model != "e":
            raise ModelNotFound(f"model {request.model!r} not found")
        n = len(request.inputs())
        await clock.call_model("embed", self._model(n))
        return "e", np.ones((n, 4), dtype=np.float32) / 2, 5 * n

    async def rerank(self, request, routing_key, clock, tenant=None):
        n = len(request.documents)
        await clock.call_model("rerank", self._model(n))
        return "r", [0.5] * n, 9 * n

    async def models(self):
        return ModelList(data=[])

    async def readiness(self):
        return {}

    async def metrics_text(self):
        return ""

    def record(self, clock):
        self.recorded.append(clock)


def test_embed_answers_carry_teis_timing_headers_with_teis_meanings():
    service = TimedService()
    response = TestClient(build_api(service)).post("/v1/embeddings", json={"model": "e", "input": ["ab", "cde"]})
    assert response.status_code == 200
    h = response.headers
    # Stage times are per input (TEI divides a batch's sums by its size), in whole milliseconds.
    assert (h["x-tokenization-time"], h["x-queue-time"], h["x-inference-time"]) == ("10", "20", "90")
    assert (h["x-compute-tokens"], h["x-compute-characters"]) == ("10", "5")
    total = int(h["x-total-time"])
    assert h["x-compute-time"] == h["x-total-time"]
    assert (MODEL_S + service.hop_s) * 1000 <= total < 2000


def test_the_stage_record_splits_the_request_and_dispatch_is_the_hop():
    service = TimedService(hop_s=0.2)
    TestClient(build_api(service)).post("/rerank", json={"model": "r", "query": "q", "documents": ["a", "b", "c"]})
    [clock] = service.recorded
    assert (clock.endpoint, clock.model, clock.kind, clock.status, clock.tokens) == ("rerank", "r", "rerank", 200, 27)
    stages = clock.stages
    assert list(stages) == ["ingress", "dispatch", "tokenize", "queue", "inference", "serialize"]
    assert stages["dispatch"] == pytest.approx(0.2, abs=0.15)
    assert (stages["tokenize"], stages["queue"], stages["inference"]) == pytest.approx((0.010, 0.020, 0.090))
    assert 0 <= stages["ingress"] < 0.5 and 0 <= stages["serialize"] < 0.5
    # Stages are measured separately; with one engine stage per input they cover the request.
    assert stages["ingress"] + stages["dispatch"] + MODEL_S + stages["serialize"] == pytest.approx(
        clock.total_s, abs=0.02)


def test_errors_are_recorded_with_their_status_and_no_timing_headers():
    service = TimedService()
    response = TestClient(build_api(service)).post("/v1/embeddings", json={"model": "nope", "input": "a"})
    assert response.status_code == 404 and "x-total-time" not in response.headers
    [clock] = service.recorded
    assert (clock.status, clock.code, clock.model, clock.stages) == (404, "model_not_found", "unknown", {})


def test_probes_and_unparsed_requests_are_not_recorded():
    service = TimedService()
    client = TestClient(build_api(service))
    assert client.get("/health").status_code == 200
    assert client.post("/v1/embeddings", json={"input": 3}).status_code == 422  # refused before the pipeline
    assert service.recorded == []


def test_stage_times_of_parts_add_up():
    a = StageTimes(2, 0.2, 0.4, 1.0, 1.5, 100, 150)
    b = StageTimes(1, 0.1, 0.5, 0.5, 2.0, 90, 200)
    total = StageTimes() + a + b
    assert (total.inputs, total.model_s, total.start_ns, total.engine_ns) == (3, 2.0, 90, 150)
    assert total.per_input() == pytest.approx({"tokenize": 0.1, "queue": 0.3, "inference": 0.5})


async def test_the_engines_queue_time_reaches_its_caller_whichever_comes_first():
    stats = EngineStats()

    class Finished:
        def __init__(self, *done):
            self.finished_requests = [type("Done", (), {"request_id": r, "queued_time": q}) for r, q in done]

    stats.record(None, Finished(("a", 0.25)))  # recorded before its caller asks
    assert await stats.queue_time("a") == 0.25
    waiter = asyncio.ensure_future(stats.queue_time("b"))  # the caller asks first
    await asyncio.sleep(0)
    stats.record(None, Finished(("b", 0.5)))
    assert await waiter == 0.5
    assert stats.queued == {} and stats.waiting == {}


async def test_counter_increments_reach_ray_summed_once_per_flush(monkeypatch):
    from serving import metrics

    monkeypatch.setattr(metrics, "COUNTER_FLUSH_S", 0.05)

    class Counter:  # what SummedCounters calls of ray.util.metrics.Counter
        def __init__(self):
            self.calls = []

        def inc(self, value, tags):
            self.calls.append((value, tags))

    requests, summed = Counter(), metrics.SummedCounters()
    for _ in range(3):
        summed.add(requests, (("model", "m"), ("status", "200")), 2.0)
    summed.add(requests, (("model", "n"), ("status", "200")), 0.0)  # Ray refuses increments of 0
    assert requests.calls == []
    await asyncio.sleep(0.2)
    assert requests.calls == [(6.0, {"model": "m", "status": "200"})]
    summed.add(requests, (("model", "m"), ("status", "200")))
    await asyncio.sleep(0.2)
    assert requests.calls[1:] == [(1.0, {"model": "m", "status": "200"})]
