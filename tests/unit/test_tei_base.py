"""TEI's routes under each model's base URL, `/tei/{model}/...`, against the fake service of test_dialects.py
(no Ray, no vLLM): each behaves as a TEI server of that one model. Scores against the reference on the real
stack: tests/integration/serve/test_peer_routes.py."""

import pytest
from fastapi.testclient import TestClient

from serving.api.routes import build_api
from serving.config import AppConfig
from tests.tei_schema import check_info
from tests.unit.test_dialects import ONE_EMBED, TWO_EMBED, ResolvingService, serve

HUB_NAMES = [{"name": "Qwen/Qwen3-Embedding-0.6B", "kind": "embed"}, {"name": "Qwen/Qwen3-Reranker-0.6B",
                                                                     "kind": "rerank"}]


def configured(service: ResolvingService, **config) -> ResolvingService:
    """The fake with more config than its models (keys, limits)."""
    service.config = AppConfig.model_validate({"models": ONE_EMBED} | config)
    return service


def tei_error(response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


# --- /info


@pytest.mark.parametrize("models", [ONE_EMBED, TWO_EMBED, HUB_NAMES])
def test_info_at_the_root_and_under_each_base_is_teis_info_of_that_model(models):
    c, service = serve(models)
    answers = {m["name"]: c.get(f"/tei/{m['name']}/info").json() for m in models}
    answers["/info"] = c.get("/info").json()
    for answer in answers.values():
        check_info(answer)
    assert answers["/info"] == answers[models[0]["name"]]
    config = service.config
    for m in models:
        info = answers[m["name"]]
        assert info["served_model_name"] == m["name"] and info["model_id"] == f"/m/{m['name']}"
        assert (info["max_batch_tokens"], info["max_batch_requests"], info["model_dtype"]) == (8192, 256, "float32")
        assert info["max_concurrent_requests"] == config.router.max_ongoing_requests
        assert (info["tokenization_workers"], info["sha"], info["docker_label"], info["model_sha"]) == (1, None, None,
                                                                                                         None)
        if m["kind"] == "embed":
            assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
            assert info["max_client_batch_size"] == config.limits.max_inputs_per_request
        else:
            assert info["model_type"] == {"reranker": {"id2label": {"0": "yes"}, "label2id": {"yes": 0}}}
            assert info["max_client_batch_size"] == config.limits.max_documents_per_request


def test_info_is_503_until_the_model_reports_its_engine():
    class Starting(ResolvingService):
        async def models(self):
            listing = await super().models()
            listing.data[0].max_num_batched_tokens = None  # the router got no info from the engine yet
            return listing

    c = TestClient(build_api(Starting()))
    assert "retry later" in tei_error(c.get("/tei/e/info"), 503, "Unhealthy")
    check_info(c.get("/tei/r/info").json())


def test_the_engine_figures_info_reports_are_vllms_resolved_ones():
    from types import SimpleNamespace as NS

    import torch

    from serving.engines.base import OwnsEngine

    engine = OwnsEngine()
    engine._engine = NS(vllm_config=NS(model_config=NS(dtype=torch.bfloat16), scheduler_config=NS(
        max_num_batched_tokens=2048, max_num_seqs=128)))
    assert engine.scheduler_limits() == {"dtype": "bfloat16", "max_num_batched_tokens": 2048, "max_num_seqs": 128}


# --- every route under the base, the model fixed by the path


EMBED_ROUTES = [("/embed", {"inputs": ["a", "b"]}), ("/similarity", {"inputs": {"source_sentence": "a",
                                                                                "sentences": ["b"]}}),
                ("/v1/embeddings", {"input": ["a", "b"]}), ("/embeddings", {"input": "a"}),
                ("/", {"inputs": "a"}), ("", {"inputs": ["a"]})]
RERANK_ROUTES = [("/rerank", {"query": "q", "texts": ["a", "aa"]}), ("/", {"query": "q", "texts": ["a"]}),
                 ("", {"query": "q", "texts": ["a"]})]


@pytest.mark.parametrize("route, body", EMBED_ROUTES)
def test_every_embed_route_under_a_base_embeds_with_that_model_whatever_the_body_says(route, body):
    c, service = serve(TWO_EMBED)  # several embed models: at the root these bodies would need `model`
    for extra in ({}, {"model": "e"}):
        response = c.post(f"/tei/e2{route}", json=body | extra)
        assert response.status_code == 200, response.text
        assert service.calls[-1].model == "e2"


@pytest.mark.parametrize("route, body", RERANK_ROUTES)
def test_every_rerank_route_under_a_base_reranks_with_that_model_whatever_the_body_says(route, body):
    c, service = serve([*TWO_EMBED, {"name": "r2", "kind": "rerank"}])
    for extra in ({}, {"model": "r"}):
        ranks = c.post(f"/tei/r2{route}", json=body | extra).json()
        assert [r["index"] for r in ranks] == sorted(range(len(body["texts"])), key=lambda i: -len(body["texts"][i]))
        assert service.calls[-1].model == "r2" and type(service.calls[-1]).__name__ == "RerankRequest"


def test_tokenize_and_decode_under_a_base_use_that_models_tokenizer(embed_tokenizer):
    c, service = serve(TWO_EMBED, tokenizer=embed_tokenizer)
    [tokens] = c.post("/tei/r/tokenize", json={"inputs": "héllo", "model": "e"}).json()
    assert [t["id"] for t in tokens] == embed_tokenizer("héllo")["input_ids"]
    assert c.post("/tei/e2/decode", json={"ids": [9707, 1879]}).json() == ["Hello world"]
    assert [r.model for r in service.calls] == ["r", "e2"]


def test_root_under_a_base_is_its_models_route_and_rejects_the_other_kinds_body():
    c, _ = serve()
    assert "takes a TEI embed body" in tei_error(c.post("/tei/e/", json={"query": "q", "texts": ["a"]}), 422,
                                                 "Validation")
    assert "takes a TEI rerank body" in tei_error(c.post("/tei/r", json={"inputs": "a"}), 422, "Validation")
    assert "not a TEI body" in tei_error(c.post("/tei/r/", json={"truncate": True}), 422, "Validation")


# --- errors, in TEI's shape


@pytest.mark.parametrize("route, body", [("/rerank", {"query": "q", "texts": ["a"]})])
def test_a_rerank_on_an_embedding_models_base_is_teis_424(route, body):
    c, service = serve()
    assert "not a re-ranker model" in tei_error(c.post(f"/tei/e{route}", json=body), 424, "Backend")
    assert not service.calls


@pytest.mark.parametrize("route, body", EMBED_ROUTES[:2])
def test_an_embedding_on_a_rerankers_base_is_teis_424(route, body):
    c, service = serve()
    assert "not an embedding model" in tei_error(c.post(f"/tei/r{route}", json=body), 424, "Backend")
    assert not service.calls


def test_teis_openai_compatible_routes_answer_errors_flat_as_tei_does():
    c, _ = serve()
    response = c.post("/tei/r/v1/embeddings", json={"input": "a"})
    assert response.status_code == 424
    assert response.json() == {"message": response.json()["message"], "code": 424, "type": "Backend"}


def test_errors_under_a_base_have_teis_shape_and_the_apis_statuses():
    c, _ = serve()
    assert "inputs" in tei_error(c.post("/tei/e/embed", json={"input": "a"}), 422, "Validation")
    assert "/tei/e" in tei_error(c.post("/tei/nope/embed", json={"inputs": "a"}), 404, "Validation")
    tei_error(c.post("/tei/e/embed", content=b"{", headers={"Content-Type": "application/json"}), 400, "Validation")
    # At the root the same error keeps the API's shape.
    assert set(c.post("/embed", json={"input": "a"}).json()) == {"error"}


def test_limits_and_keys_under_a_base_answer_in_teis_shape():
    c = TestClient(build_api(configured(ResolvingService(), api_keys=["k"], limits={"max_inputs_per_request": 1})))
    tei_error(c.post("/tei/e/embed", json={"inputs": "a"}), 401, "Validation")
    key = {"Authorization": "Bearer k"}
    assert "at most 1" in tei_error(c.post("/tei/e/embed", json={"inputs": ["a", "b"]}, headers=key), 413,
                                    "Validation")


# --- health


@pytest.mark.parametrize("path", ["/health", "/", ""])
def test_health_under_a_base_is_that_models_readiness_without_a_key(path):
    class HalfReady(ResolvingService):
        async def readiness(self):
            return {"e": "ready", "r": "unavailable: RayActorError"}

    c = TestClient(build_api(configured(HalfReady(), api_keys=["k"])))
    ready = c.get(f"/tei/e{path}")
    assert ready.status_code == 200 and ready.content == b""
    assert "RayActorError" in tei_error(c.get(f"/tei/r{path}"), 503, "Unhealthy")


# --- names with "/", and the OpenAPI document


def test_model_names_with_slashes_work_raw_or_percent_encoded():
    c, service = serve(HUB_NAMES)
    assert c.get("/tei/Qwen%2FQwen3-Reranker-0.6B/info").json()["served_model_name"] == "Qwen/Qwen3-Reranker-0.6B"
    assert c.post("/tei/Qwen/Qwen3-Embedding-0.6B/embed", json={"inputs": "a"}).status_code == 200
    assert c.post("/tei/Qwen/Qwen3-Reranker-0.6B", json={"query": "q", "texts": ["a"]}).status_code == 200
    assert [r.model for r in service.calls] == ["Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Reranker-0.6B"]


BASE_OPERATIONS = [("get", "/info"), ("post", "/embed"), ("post", "/rerank"), ("post", "/similarity"),
                   ("post", "/tokenize"), ("post", "/decode"), ("post", "/v1/embeddings"), ("post", "/embeddings"),
                   ("post", "/"), ("post", ""), ("get", "/health"), ("get", "/"), ("get", "")]


def test_openapi_documents_every_base_route_with_the_model_path_parameter():
    c, _ = serve(TWO_EMBED)
    paths = c.get("/openapi.json").json()["paths"]
    for method, route in BASE_OPERATIONS:
        operation = paths[f"/tei/{{model}}{route}"][method]
        [parameter] = [p for p in operation["parameters"] if p["in"] == "path"]
        assert parameter["name"] == "model" and parameter["schema"]["enum"] == ["e", "e2", "r"]
        assert {"404", "413", "429", "503"} <= set(operation["responses"]), (method, route)
