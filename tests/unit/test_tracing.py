"""OpenTelemetry traces (serving/api/tracing.py): the SDK's own OTLP exporters, over gRPC and over
HTTP, send to a real receiver (tests/otlp.py); the fake service's model call takes known times.
The live app's traces are tested in tests/integration/serve/test_observability.py."""

import pytest
from fastapi.testclient import TestClient

from serving.api.routes import build_api
from serving.api.tracing import TracingConfigError, tracer_from_env
from tests.otlp import GrpcReceiver, HttpReceiver
from tests.unit.test_timing import TimedService

TRACE_ID, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize("protocol, receiver", [("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)])
def test_a_request_becomes_a_span_tree_under_the_clients_traceparent(monkeypatch, protocol, receiver):
    with receiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s, not every 5 s
        client = TestClient(build_api(TimedService()))
        response = client.post("/v1/embeddings", json={"model": "e", "input": ["ab", "cde"], "dimensions": 4},
                               headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert response.status_code == 200
        spans = otlp.wait_for(lambda spans: len(spans) >= 7)
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"POST embeddings", "ingress", "embed", "tokenize", "queue", "inference", "serialize"}
    request = by_name["POST embeddings"]
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert (request.parent_id, request.kind, request.service) == (CLIENT_SPAN, 2, "qwen3-serving")  # 2: SERVER
    assert {k: request.attributes[k] for k in ("qwen3.model", "qwen3.kind", "qwen3.inputs", "qwen3.input_tokens",
                                                "qwen3.dimensions", "http.response.status_code")} == {
        "qwen3.model": "e", "qwen3.kind": "embed", "qwen3.inputs": 2, "qwen3.input_tokens": 10,
        "qwen3.dimensions": 4, "http.response.status_code": 200}
    for name in ("ingress", "embed", "serialize"):
        assert by_name[name].parent_id == request.span_id
    for name in ("tokenize", "queue", "inference"):
        assert by_name[name].parent_id == by_name["embed"].span_id
    # queue and inference: the per-input times the model reported (20 and 90 ms)
    assert by_name["queue"].end_ns - by_name["queue"].start_ns == 20_000_000
    assert by_name["inference"].end_ns - by_name["inference"].start_ns == 90_000_000
    assert request.start_ns <= by_name["ingress"].end_ns <= by_name["serialize"].start_ns <= request.end_ns


def test_tracing_is_off_unless_an_otlp_endpoint_is_set():
    assert tracer_from_env({}) is None
    assert tracer_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                            "OTEL_SDK_DISABLED": "true"}) is None
    with pytest.raises(TracingConfigError, match="'http/json' is not supported"):
        tracer_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
                         "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
