"""What an operator sees of the live app (README "Operating the stack"): per-stage series in
`/metrics` that add up to the request time, TEI's timing headers on every dialect's embed and
rerank answers, and OpenTelemetry traces at a real OTLP receiver (the package's app exports to it
over gRPC, turned on by the standard variables)."""

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
STAGES = ("ingress", "dispatch", "tokenize", "queue", "inference", "serialize")
MODELS = ("tiny-embed", "tiny-embed-tp2", "tiny-rerank")  # in the ingress, a deployment of its own, a reranker

# One embed or rerank route of each dialect.
ROUTES = [
    ("/v1/embeddings", {"model": "tiny-embed", "input": ["a", "bc"]}),
    ("/v2/embed", {"model": "tiny-embed-tp2", "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]}),
    ("/v1/embed", {"model": "tiny-embed", "texts": ["a"]}),
    ("/embed", {"model": "tiny-embed", "inputs": "a"}),
    ("/tei/tiny-embed-tp2/embed", {"inputs": ["a", "b"]}),
    ("/infinity/embeddings", {"model": "tiny-embed", "input": ["a"]}),
    ("/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a", "b"]}),
    ("/v2/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a"]}),
    ("/rerank", {"query": "q", "texts": ["a", "b"]}),
    ("/infinity/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a"]}),
    ("/v1/score", {"model": "tiny-rerank", "text_1": "q", "text_2": ["a", "b"]}),
]


def post(base_url, auth, path, body, headers=None) -> httpx.Response:
    response = httpx.post(f"{base_url}{path}", json=body, headers=auth | (headers or {}), timeout=120)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("path, body", ROUTES, ids=[path for path, _ in ROUTES])
def test_every_dialects_answers_carry_teis_timing_headers(base_url, auth, path, body):
    h = post(base_url, auth, path, body).headers
    total = int(h["x-total-time"])
    stages = [int(h[k]) for k in ("x-tokenization-time", "x-queue-time", "x-inference-time")]
    assert h["x-compute-time"] == h["x-total-time"]
    # whole milliseconds, per input: never more than the request's own time
    assert min(stages) >= 0 and sum(stages) <= total < 60_000
    assert int(h["x-compute-tokens"]) > 0 and int(h["x-compute-characters"]) > 0


def test_probes_and_token_routes_carry_no_timing_headers(base_url, auth):
    assert "x-total-time" not in httpx.get(f"{base_url}/health", timeout=30).headers
    assert "x-total-time" not in post(base_url, auth, "/tokenize", {"inputs": "a"}).headers


def scrape(base_url) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{base_url}/metrics", timeout=60).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def settled(base_url, pairs, timeout_s: float = 30) -> dict[tuple[str, frozenset], float]:
    """/metrics once the counts of these (model, endpoint) pairs stop changing: the requests of
    earlier tests reach it up to a few seconds late (counters are summed for a second, and Ray
    exports every second here)."""
    def counts(samples):
        return [value(samples, name, model=m, endpoint=e) for m, e in pairs
                for name in ("ray_qwen3_request_duration_seconds_count", "ray_qwen3_request_time_seconds_total")]

    deadline = time.monotonic() + timeout_s
    samples = scrape(base_url)
    while time.monotonic() < deadline:
        time.sleep(2.5)
        again = scrape(base_url)
        if counts(again) == counts(samples):
            return again
        samples = again
    return samples


def test_stage_series_add_up_to_the_request_time(base_url, auth, measurements):
    """Known one-input requests to each model; the stages' summed seconds cover the requests'."""
    calls = {("tiny-embed", "embeddings"): ("/v1/embeddings", {"model": "tiny-embed", "input": "x"}),
             ("tiny-embed-tp2", "embeddings"): ("/v1/embeddings", {"model": "tiny-embed-tp2", "input": "x"}),
             ("tiny-rerank", "rerank"): ("/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["d"]})}
    before = settled(base_url, [(m, e) for m, e in calls])
    n = 6
    for path, body in calls.values():
        for i in range(n):
            post(base_url, auth, path, {**body, **({"input": f"x {i}"} if "input" in body else {})})

    def delta(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    deadline = time.monotonic() + 90  # Ray's exporter publishes every second or so
    while True:
        after = scrape(base_url)
        counted = [delta(after, "ray_qwen3_request_stage_duration_seconds_count", model=m, endpoint=e, stage=s)
                   for m, e in calls for s in STAGES]
        if min(counted) >= n or time.monotonic() > deadline:
            break
        time.sleep(1)
    time.sleep(3)  # and one more export: each request's counters are recorded with its histograms
    after = scrape(base_url)
    for model, endpoint in calls:
        tags = {"model": model, "endpoint": endpoint}
        assert delta(after, "ray_qwen3_request_duration_seconds_count", **tags) == n
        for stage in STAGES:
            assert delta(after, "ray_qwen3_request_stage_duration_seconds_count", stage=stage, **tags) == n, stage
        # The exact sums (a Ray histogram's `_sum` is computed from its buckets' midpoints).
        total = delta(after, "ray_qwen3_request_time_seconds_total", **tags)
        stages = {s: delta(after, "ray_qwen3_request_stage_time_seconds_total", stage=s, **tags) for s in STAGES}
        assert min(stages.values()) >= 0, stages
        measurements[f"{model}: stages / request time, mean ms per request by stage"] = (
            round(sum(stages.values()) / total, 3), {s: round(v / n * 1000, 2) for s, v in stages.items()})
        # What no stage counts is bookkeeping inside the model call (stacking vectors, scoring).
        assert 0.7 * total <= sum(stages.values()) <= total * 1.001 + 1e-6, (model, total, stages)
        assert stages["inference"] > 0 and stages["tokenize"] > 0
    for model in MODELS:  # the engines' own series: steps, tokens per step, queue depth
        assert value(after, "ray_qwen3_engine_step_requests_count", model=model) > 0
        assert value(after, "ray_qwen3_engine_step_tokens_sum", model=model) > 0
        assert any(name == "ray_qwen3_engine_requests_waiting" and ("model", model) in labels
                   for name, labels in after), model


def test_traces_reach_the_receiver_with_their_parents_and_attributes(base_url, auth, otlp_receiver):
    cases = {  # trace id -> (path, body, model, kind, inputs)
        "1" * 32: ("/v1/embeddings", {"model": "tiny-embed", "input": QUERIES[:2], "dimensions": 48}, "embed", 2),
        "2" * 32: ("/v1/embeddings", {"model": "tiny-embed-tp2", "input": DOCUMENTS[:3]}, "embed", 3),
        "3" * 32: ("/v1/rerank", {"model": "tiny-rerank", "query": QUERIES[0], "documents": DOCUMENTS[:4]}, "rerank", 4),
    }
    client_span = "abcdef0123456789"
    tokens = {}
    for trace_id, (path, body, _, _) in cases.items():
        response = post(base_url, auth, path, body, {"traceparent": f"00-{trace_id}-{client_span}-01"})
        tokens[trace_id] = response.json()["usage"]["prompt_tokens"]
    spans = otlp_receiver.wait_for(lambda spans: all(sum(s.trace_id == t for s in spans) >= 7 for t in cases), 60)
    for trace_id, (path, body, kind, inputs) in cases.items():
        tree = {s.name: s for s in spans if s.trace_id == trace_id}
        request = tree[f"POST {'embeddings' if kind == 'embed' else 'rerank'}"]
        assert (request.parent_id, request.service) == (client_span, "qwen3-serving")
        attributes = {k: request.attributes.get(k) for k in ("qwen3.model", "qwen3.kind", "qwen3.inputs",
                                                             "qwen3.input_tokens", "qwen3.dimensions")}
        assert attributes == {"qwen3.model": body["model"], "qwen3.kind": kind, "qwen3.inputs": inputs,
                              "qwen3.input_tokens": tokens[trace_id], "qwen3.dimensions": body.get("dimensions")}
        assert {n: tree[n].parent_id for n in ("ingress", kind, "serialize")} == dict.fromkeys(
            ("ingress", kind, "serialize"), request.span_id)
        assert {n: tree[n].parent_id for n in ("tokenize", "queue", "inference")} == dict.fromkeys(
            ("tokenize", "queue", "inference"), tree[kind].span_id)
        # The model's spans lie within the request's, whichever process ran the model.
        for name in ("tokenize", "queue", "inference"):
            assert request.start_ns <= tree[name].start_ns <= tree[name].end_ns <= request.end_ns, name
