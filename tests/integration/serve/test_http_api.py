"""The HTTP API of a real Ray Serve app, through real clients (the openai SDK and httpx)."""

import base64

import httpx
import numpy as np
import openai
import pytest

from serving.reference import get_detailed_instruct
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
COSINE_MIN = 0.9999


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def vectors(response) -> np.ndarray:
    """Vectors in index order; base64 strings (little-endian float32) are decoded."""
    rows = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
    return np.array([np.frombuffer(base64.b64decode(r), dtype="<f4") if isinstance(r, str) else r for r in rows])


# --- embeddings through the official OpenAI SDK


def test_sdk_float_embeddings_match_the_reference(openai_client, reference_embedder):
    response = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, encoding_format="float")
    assert [d.index for d in response.data] == list(range(len(DOCUMENTS)))
    assert cosines(vectors(response), reference_embedder.embed(DOCUMENTS)).min() >= COSINE_MIN
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(DOCUMENTS)
    assert response.model == "tiny-embed"


def test_sdk_base64_embeddings_equal_float(openai_client):
    as_base64 = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, encoding_format="base64")
    assert all(isinstance(d.embedding, str) for d in as_base64.data)
    as_float = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, encoding_format="float")
    np.testing.assert_allclose(vectors(as_base64), vectors(as_float), atol=1e-6)


def test_sdk_default_encoding_decodes(openai_client, reference_embedder):
    # The SDK asks for base64 when no format is given and decodes it itself.
    response = openai_client.embeddings.create(model="tiny-embed", input="The capital of China is Beijing.")
    assert cosines(vectors(response), reference_embedder.embed([DOCUMENTS[0]]))[0] >= COSINE_MIN


@pytest.mark.parametrize("dims", [32, 64, 128])
def test_sdk_dimensions_match_the_reference(openai_client, reference_embedder, dims):
    response = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, dimensions=dims)
    got = vectors(response)
    assert got.shape == (len(DOCUMENTS), dims)
    assert cosines(got, reference_embedder.embed(DOCUMENTS, dimensions=dims)).min() >= COSINE_MIN


def test_query_input_type_applies_the_instruction(openai_client, reference_embedder):
    task = "Given a question, retrieve passages that answer it"
    response = openai_client.embeddings.create(model="tiny-embed", input=QUERIES,
                                               extra_body={"input_type": "query", "instruction": task})
    expected = reference_embedder.embed([get_detailed_instruct(task, q) for q in QUERIES])
    assert cosines(vectors(response), expected).min() >= COSINE_MIN


def test_token_inputs_equal_text_inputs(openai_client, embed_tokenizer):
    ids = [embed_tokenizer(d)["input_ids"] for d in DOCUMENTS[:3]]
    from_ids = openai_client.embeddings.create(model="tiny-embed", input=ids, encoding_format="float")
    single_ids = openai_client.embeddings.create(model="tiny-embed", input=ids[0], encoding_format="float")
    from_text = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS[:3], encoding_format="float")
    assert cosines(vectors(from_ids), vectors(from_text)).min() >= 0.99999
    assert cosines(vectors(single_ids), vectors(from_text)[:1])[0] >= 0.99999


def test_tensor_parallel_2_serves_the_same_vectors(openai_client):
    tp1 = openai_client.embeddings.create(model="tiny-embed", input=DOCUMENTS, encoding_format="float")
    tp2 = openai_client.embeddings.create(model="tiny-embed-tp2", input=DOCUMENTS, encoding_format="float")
    assert tp2.model == "tiny-embed-tp2"
    assert cosines(vectors(tp1), vectors(tp2)).min() >= COSINE_MIN


def test_large_request_is_chunked_and_reassembled_in_order(openai_client):
    texts = [f"item {i}: {DOCUMENTS[i % len(DOCUMENTS)]}" for i in range(150)]  # 10 chunks of 16
    batched = vectors(openai_client.embeddings.create(model="tiny-embed", input=texts, encoding_format="float"))
    singles = np.concatenate([
        vectors(openai_client.embeddings.create(model="tiny-embed", input=t, encoding_format="float"))
        for t in texts])
    assert cosines(batched, singles).min() >= 0.99999


# --- rerank through httpx


def rerank(base_url, auth, path="/v1/rerank", **body) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json={"model": "tiny-rerank"} | body, headers=auth, timeout=120)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_scores_match_the_reference_sorted_by_score(base_url, auth, reference_reranker, path):
    response = rerank(base_url, auth, path, query=QUERIES[0], documents=DOCUMENTS)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference_reranker.rerank(QUERIES[0], DOCUMENTS)
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCUMENTS)))
    for r in body["results"]:
        assert abs(r["relevance_score"] - expected[r["index"]]) <= 1e-4
        assert r["document"]["text"] == DOCUMENTS[r["index"]]
    assert body["model"] == "tiny-rerank" and body["id"] and body["usage"]["total_tokens"] > 0


def test_rerank_top_n_text_objects_and_no_documents(base_url, auth):
    full = rerank(base_url, auth, query=QUERIES[1], documents=DOCUMENTS).json()["results"]
    response = rerank(base_url, auth, query=QUERIES[1], documents=[{"text": d} for d in DOCUMENTS], top_n=3,
                      return_documents=False)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [r["index"] for r in full[:3]]
    assert all("document" not in r for r in results)


def test_rerank_instruction_and_max_tokens_per_doc(base_url, auth, reference_reranker):
    instruction = "Given a question, retrieve code that answers it"
    long_docs = [d * 30 for d in DOCUMENTS[:3]]
    response = rerank(base_url, auth, query=QUERIES[2], documents=long_docs, instruction=instruction,
                      max_tokens_per_doc=8)
    assert response.status_code == 200, response.text
    tok = reference_reranker.tokenizer
    cut = [tok.decode(tok.encode(d, add_special_tokens=False)[:8]) for d in long_docs]
    expected = reference_reranker.rerank(QUERIES[2], cut, instruction=instruction)
    for r in response.json()["results"]:
        assert abs(r["relevance_score"] - expected[r["index"]]) <= 1e-4


# --- models, health, readiness, metrics


def test_models_lists_deployments_aliases_and_the_fallback_flag(base_url, auth):
    response = httpx.get(f"{base_url}/v1/models", headers=auth, timeout=30)
    assert response.status_code == 200
    cards = {m["id"]: m for m in response.json()["data"]}
    assert set(cards) == {"tiny-embed", "tiny-embed-tp2", "tiny-rerank", "embed-canary"}
    assert cards["tiny-embed"]["fallback"] is True and cards["tiny-embed"]["max_dimensions"] == 128
    assert cards["tiny-rerank"]["kind"] == "rerank"
    assert cards["embed-canary"]["targets"] == {"tiny-embed": 0.9, "tiny-embed-tp2": 0.1}


def test_health_and_ready(base_url):
    assert httpx.get(f"{base_url}/health", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{base_url}/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["models"] == {"tiny-embed": "ready", "tiny-embed-tp2": "ready", "tiny-rerank": "ready"}


def test_metrics_count_requests_tokens_and_latency(base_url, openai_client):
    import time

    openai_client.embeddings.create(model="tiny-embed", input=["metrics probe"])
    deadline = time.time() + 60
    text = ""
    while time.time() < deadline:
        text = httpx.get(f"{base_url}/metrics", timeout=30).text
        if 'ray_qwen3_input_tokens_total' in text and 'model="tiny-embed"' in text:
            break
        time.sleep(2)
    assert 'ray_qwen3_requests_total{' in text and 'endpoint="embeddings"' in text
    assert "ray_qwen3_request_duration_seconds_bucket" in text
    assert "ray_qwen3_input_tokens_total" in text


# --- errors: one status per error type, always the OpenAI shape


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert "Traceback" not in response.text


def test_401_without_or_with_a_wrong_key(base_url, openai_client):
    body = {"model": "tiny-embed", "input": "x"}
    assert_error(httpx.post(f"{base_url}/v1/embeddings", json=body, timeout=30), 401, "invalid_api_key")
    assert_error(httpx.post(f"{base_url}/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"},
                            timeout=30), 401, "invalid_api_key")
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0).embeddings.create(model="tiny-embed",
                                                                                           input="x")


def test_404_for_unknown_or_wrong_kind_models(base_url, auth, openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="no-such-model", input="x")
    response = httpx.post(f"{base_url}/v1/embeddings", json={"model": "tiny-rerank", "input": "x"}, headers=auth,
                          timeout=30)
    assert_error(response, 404, "model_not_found")
    assert "rerank" in response.json()["error"]["message"]
    assert_error(rerank(base_url, auth, model="tiny-embed", query="q", documents=["d"]), 404, "model_not_found")


@pytest.mark.parametrize("body", [
    {"input": ["x"] * 301},
    {"input": "x" * 20001},
    {"input": [list(range(1, 10))] * 301},
])
def test_413_over_the_embedding_limits(base_url, auth, body):
    response = httpx.post(f"{base_url}/v1/embeddings", json={"model": "tiny-embed"} | body, headers=auth, timeout=30)
    assert_error(response, 413, "request_too_large")


def test_413_over_the_rerank_limits(base_url, auth):
    assert_error(rerank(base_url, auth, query="q", documents=["d"] * 65), 413, "request_too_large")
    assert_error(rerank(base_url, auth, query="q", documents=["d" * 20001]), 413, "request_too_large")


@pytest.mark.parametrize("body", [
    {"input": []}, {"input": ""}, {"input": [""]}, {"input": 5}, {"input": [["a"]]}, {"input": [[]]},
    {"input": "x", "dimensions": 8}, {"input": "x", "dimensions": 129}, {"input": "x", "dimensions": "64"},
    {"input": "x", "encoding_format": "int4"}, {"input": "x", "input_type": "passage"},
    {"input": "x", "unknown_field": 1}, {"input": [[999999999]]}, {},
])
def test_422_for_invalid_embedding_requests(base_url, auth, body):
    response = httpx.post(f"{base_url}/v1/embeddings", json={"model": "tiny-embed"} | body, headers=auth, timeout=30)
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize("body", [
    {"query": "", "documents": ["d"]}, {"query": "q", "documents": []}, {"query": "q", "documents": [""]},
    # 0 is vLLM's "all" for top_n and "no limit" for max_tokens_per_doc (tests/unit/test_dialects.py); below 0 is not.
    {"query": "q", "documents": ["d"], "top_n": -1}, {"query": "q", "documents": [1]},
    {"query": "q", "documents": "d"}, {"query": "q", "documents": ["d"], "max_tokens_per_doc": -1},
])
def test_422_for_invalid_rerank_requests(base_url, auth, body):
    assert_error(rerank(base_url, auth, **body), 422, "validation_error")


def test_400_for_a_body_that_is_not_json(base_url, auth):
    response = httpx.post(f"{base_url}/v1/embeddings", content=b"{not json", headers=auth | {
        "Content-Type": "application/json"}, timeout=30)
    assert_error(response, 400, "invalid_request")


def test_404_route_and_405_method_use_the_error_shape(base_url, auth):
    assert_error(httpx.get(f"{base_url}/v1/nothing", headers=auth, timeout=30), 404, "not_found")
    assert_error(httpx.get(f"{base_url}/v1/embeddings", headers=auth, timeout=30), 405, "method_not_allowed")


async def test_429_when_the_queue_bound_is_hit(base_url, auth):
    import asyncio

    # One chunk (16 inputs) per request: with 1 in flight and 1 queued, the rest must get 429.
    body = {"model": "tiny-embed-tp2", "input": [f"load {i} " * 50 for i in range(16)]}
    async with httpx.AsyncClient(timeout=300) as client:
        responses = await asyncio.gather(*(client.post(f"{base_url}/v1/embeddings", json=body, headers=auth)
                                           for _ in range(12)))
    statuses = [r.status_code for r in responses]
    assert 429 in statuses and 200 in statuses, statuses
    assert set(statuses) <= {200, 429}, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert_error(limited, 429, "overloaded")
    assert limited.headers["retry-after"] == "2"
