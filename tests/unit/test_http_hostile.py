"""Hostile and malformed HTTP input against the real routes and middleware with a fake service:
every error keeps its own 4xx status and the OpenAI shape, and the OpenAPI document says so."""

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.api.routes import build_api
from tests.unit.test_api_routes import FakeService, client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    return error


@pytest.mark.parametrize("body", [b"\xff\xfe", b'{"model": "e", "input": "\xff"}', b"\x00" * 8])
def test_bodies_that_are_not_utf8_json_are_400(body):
    response = client().post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request")


def test_wrong_method_is_405_with_allow():
    response = client().get("/v1/embeddings")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_body_over_the_limit_is_413_from_content_length():
    c = client(limits={"max_body_bytes": 2048})
    response = c.post("/v1/embeddings", json={"model": "e", "input": "x" * 4000})
    assert_error(response, 413, "request_too_large")
    assert "2048 bytes" in response.json()["error"]["message"]


def test_streamed_body_over_the_limit_is_413_before_the_route_runs():
    service = FakeService(limits={"max_body_bytes": 2048})

    async def chunks():  # no Content-Length: the middleware has to count
        yield b'{"model": "e", "input": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    async def send():
        transport = httpx.ASGITransport(app=build_api(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})

    assert_error(asyncio.run(send()), 413, "request_too_large")
    assert service.calls == []


def test_default_body_limit_admits_the_largest_text_the_limits_allow():
    limits = {"max_request_chars": 3000, "max_input_chars": 3000}
    c = client(limits=limits)
    # Non-ASCII text escaped as \\uXXXX by json.dumps: 6 bytes per character.
    assert c.post("/v1/embeddings", json={"model": "e", "input": "é" * 3000}).status_code == 200
    assert_error(c.post("/v1/embeddings", json={"model": "e", "input": ["é" * 3000, "a"]}), 413,
                 "request_too_large")


def test_ingress_at_capacity_answers_429_in_the_api_shape_and_probes_still_answer():
    service = FakeService(router={"max_ongoing_requests": 2, "retry_after_s": 3})
    release = asyncio.Event()
    real_embed = service.embed

    async def slow_embed(request, routing_key, clock=None, tenant=None):
        await release.wait()
        return await real_embed(request, routing_key)

    service.embed = slow_embed

    async def scenario():
        transport = httpx.ASGITransport(app=build_api(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            held = [asyncio.create_task(c.post("/v1/embeddings", json={"model": "e", "input": "a"}))
                    for _ in range(2)]
            await asyncio.sleep(0.05)  # both are now inside the route, waiting
            busy = await c.post("/v1/embeddings", json={"model": "e", "input": "a"})
            health = await c.get("/health")
            release.set()
            return busy, health, [await t for t in held]

    busy, health, held = asyncio.run(scenario())
    assert_error(busy, 429, "overloaded")
    assert busy.headers["retry-after"] == "3"
    assert health.status_code == 200
    assert [r.status_code for r in held] == [200, 200]


def test_request_char_total_is_bounded():
    c = client(limits={"max_request_chars": 10})
    assert_error(c.post("/v1/embeddings", json={"model": "e", "input": ["123456", "123456"]}), 413,
                 "request_too_large")
    assert_error(c.post("/v1/rerank", json={"model": "r", "query": "12345", "documents": ["123456"]}), 413,
                 "request_too_large")


def test_openapi_declares_every_error_status_with_the_error_schema():
    spec = TestClient(build_api(FakeService(api_keys=["k"]))).get("/openapi.json").json()
    for path in ("/v1/embeddings", "/v1/rerank", "/rerank"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "404", "413", "422", "429", "503"} <= set(responses)
        for status in ("400", "401", "404", "413", "422", "429", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"}
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_without_keys_openapi_declares_no_401_and_no_security():
    spec = TestClient(build_api(FakeService())).get("/openapi.json").json()
    assert "401" not in spec["paths"]["/v1/embeddings"]["post"]["responses"]
    assert "securitySchemes" not in spec.get("components", {})
