"""HTTP routes and schemas against a fake service (no Ray, no vLLM): shapes, auth, limits, errors.
Claims about vectors and scores are tested on the real stack in tests/integration/serve."""

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.errors import ModelNotFound
from serving.api.protocol import ModelList
from serving.api.routes import build_api
from serving.config import AppConfig


class FakeService:
    def __init__(self, **config):
        self.config = AppConfig.model_validate(
            {"models": [{"name": "e", "kind": "embed"}, {"name": "r", "kind": "rerank"}]} | config)
        self.calls = []
        self.tracked = []

    async def embed(self, request, routing_key, clock=None, tenant=None):
        if request.model != "e":
            raise ModelNotFound(f"model {request.model!r} not found")
        n = len(request.inputs())
        self.calls.append(request)
        return "e", np.arange(n * 4, dtype=np.float32).reshape(n, 4), 7 * n

    async def rerank(self, request, routing_key, clock=None, tenant=None):
        self.calls.append(request)
        return "r", [0.1, 0.9, 0.5][: len(request.documents)], 30

    async def models(self):
        return ModelList(data=[])

    async def readiness(self):
        return {"e": "ready", "r": "unavailable: RayActorError"}

    async def metrics_text(self):
        return "ray_qwen3_requests_total 1\n"

    def record(self, clock):
        self.tracked.append(clock)


def client(**config) -> TestClient:
    return TestClient(build_api(FakeService(**config)))


def test_embedding_response_has_the_openai_shape():
    body = client().post("/v1/embeddings", json={"model": "e", "input": ["a", "b"]}).json()
    assert body["object"] == "list" and body["model"] == "e"
    assert body["data"][1] == {"object": "embedding", "index": 1, "embedding": [4.0, 5.0, 6.0, 7.0]}
    assert body["usage"] == {"prompt_tokens": 14, "total_tokens": 14}


def test_float_vectors_read_back_as_the_same_float32():
    """The JSON writer prints float32 elements itself; every one must parse back bit for bit."""
    service = FakeService()
    vectors = np.random.default_rng(0).standard_normal((3, 257)).astype(np.float32)
    vectors[0, :4] = [1e-38, -3.4e38, 0.1, 1 / 3]

    async def embed(request, routing_key, clock=None, tenant=None):
        return "e", vectors, 9

    service.embed = embed
    body = TestClient(build_api(service)).post("/v1/embeddings", json={"model": "e", "input": ["a", "b", "c"]}).json()
    decoded = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert decoded.tobytes() == vectors.tobytes()


def test_base64_is_little_endian_float32():
    body = client().post("/v1/embeddings", json={"model": "e", "input": "a", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_single_token_list_is_one_input():
    service = FakeService()
    TestClient(build_api(service)).post("/v1/embeddings", json={"model": "e", "input": [1, 2, 3]})
    assert service.calls[0].inputs() == [[1, 2, 3]]


def test_rerank_is_sorted_with_top_n_and_documents():
    body = client().post("/v1/rerank", json={"model": "r", "query": "q", "documents": ["a", {"text": "b"}, "c"],
                                             "top_n": 2}).json()
    assert [(r["index"], r["relevance_score"], r["document"]["text"]) for r in body["results"]] == [
        (1, 0.9, "b"), (2, 0.5, "c")]
    assert body["usage"]["total_tokens"] == 30 and body["meta"]["billed_units"]["search_units"] == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k1"}])
def test_keys_are_required_when_configured(headers):
    response = client(api_keys=["k1", "k2"]).post("/v1/embeddings", json={"model": "e", "input": "a"},
                                                  headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == {"message": response.json()["error"]["message"],
                                         "type": "authentication_error", "code": "invalid_api_key"}


def test_any_configured_key_is_accepted_and_health_needs_none():
    c = client(api_keys=["k1", "k2"])
    assert c.post("/v1/embeddings", json={"model": "e", "input": "a"},
                  headers={"Authorization": "Bearer k2"}).status_code == 200
    assert c.get("/health").status_code == 200


def test_limits_give_413_with_the_limit_in_the_message():
    c = client(limits={"max_inputs_per_request": 2, "max_input_chars": 5, "max_documents_per_request": 2,
                       "max_query_chars": 3, "max_input_tokens": 2})
    cases = [
        ("/v1/embeddings", {"model": "e", "input": ["a", "b", "c"]}, "at most 2"),
        ("/v1/embeddings", {"model": "e", "input": "toolong"}, "at most 5"),
        ("/v1/embeddings", {"model": "e", "input": [1, 2, 3]}, "at most 2"),
        ("/v1/rerank", {"model": "r", "query": "q", "documents": ["a", "b", "c"]}, "at most 2"),
        ("/v1/rerank", {"model": "r", "query": "long", "documents": ["a"]}, "at most 3"),
    ]
    for path, body, message in cases:
        response = c.post(path, json=body)
        assert response.status_code == 413, body
        assert message in response.json()["error"]["message"]


def test_validation_errors_name_the_field():
    response = client().post("/v1/embeddings", json={"model": "e", "input": "a", "dimensions": "x"})
    assert response.status_code == 422
    assert "dimensions" in response.json()["error"]["message"]


def test_unready_models_make_ready_503():
    response = client().get("/ready")
    assert response.status_code == 503 and response.json()["models"]["r"].startswith("unavailable")


def test_unexpected_errors_are_500_without_traceback():
    class Broken(FakeService):
        async def embed(self, request, routing_key, clock=None, tenant=None):
            raise RuntimeError("secret internal detail")

    response = TestClient(build_api(Broken()), raise_server_exceptions=False).post(
        "/v1/embeddings", json={"model": "e", "input": "a"})
    assert response.status_code == 500
    assert "secret internal detail" not in response.text and response.json()["error"]["code"] == "internal_error"


def test_metric_labels_are_only_configured_model_names():
    service = FakeService()
    c = TestClient(build_api(service))
    c.post("/v1/embeddings", json={"model": "e", "input": "a"})
    c.post("/v1/embeddings", json={"model": "random-name-123", "input": "a"})
    assert [clock.model for clock in service.tracked] == ["e", "unknown"]


def test_a_request_over_its_quota_is_refused_before_its_body_is_read():
    """TenantGate: a refusal costs no body read; it is counted under its tenant, and other tenants and
    the probes pass."""
    import asyncio

    service = FakeService(tenants=[{"name": "paced", "keys": ["p"], "requests_per_s": 1, "burst_s": 1},
                                   {"name": "other", "keys": ["o"], "requests_per_s": 1, "burst_s": 1}])
    app = build_api(service)
    body = {"model": "e", "input": "a"}
    assert TestClient(app).post("/v1/embeddings", json=body, headers={"Authorization": "Bearer p"}).status_code == 200

    async def unread_call(key: bytes) -> list[dict]:
        path = "/v1/embeddings"
        sent: list[dict] = []

        async def receive():
            raise AssertionError("the body was read")

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"authorization", b"Bearer " + key), (b"content-type", b"application/json"),
                             (b"content-length", b"30")],
                 "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("c", 1), "root_path": ""}
        await app(scope, receive, send)
        return sent

    start, body_sent = asyncio.run(unread_call(b"p"))[:2]
    headers = dict(start["headers"])
    assert start["status"] == 429 and int(headers[b"retry-after"]) == 1 and 0 < int(headers[b"retry-after-ms"]) <= 1000
    assert b'"code":"quota_exceeded"' in body_sent["body"] and b"paced" in body_sent["body"]
    refused = service.tracked[-1]
    assert (refused.tenant, refused.endpoint, refused.status, refused.code) == ("paced", "unrouted", 429, "quota_exceeded")
    c = TestClient(app)
    assert c.get("/health", headers={"Authorization": "Bearer p"}).status_code == 200  # probes are exempt
    assert c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer o"}).status_code == 200
    assert c.get("/v1/models", headers={"Authorization": "Bearer p"}).status_code == 200  # only POSTs count
    assert c.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
