"""Tenants on the live app: their keys, quotas (429 with a Retry-After that is right), lanes, the
exact query cache and its isolation, and the `tenant` label of their metrics (conftest's TENANTS)."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import numpy as np
import pytest

from tests.integration.serve.conftest import API_KEY, TENANT_KEYS
from tests.integration.serve.test_observability import scrape, value

pytestmark = pytest.mark.slow


def as_tenant(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANT_KEYS[name] if name != 'default' else API_KEY}"}


def embed(base_url, tenant: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/embeddings", json=body, headers=as_tenant(tenant), timeout=120)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]])


def test_each_tenants_key_is_accepted_and_others_are_not(base_url):
    body = {"model": "tiny-embed", "input": "a"}
    for tenant in (*TENANT_KEYS, "default"):
        if tenant not in ("paced", "metered"):  # their quotas belong to their own tests
            assert embed(base_url, tenant, body).status_code == 200
    wrong = httpx.post(f"{base_url}/v1/embeddings", json=body, headers={"Authorization": "Bearer search-key2"},
                       timeout=60)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_over_its_request_quota_a_tenant_gets_429_with_the_wait_until_it_is_admitted(base_url):
    """`paced`: 0.5 requests/s, 2 at once. Two are admitted, the third is refused with the time to the
    next token; a request at that time is admitted, and OpenAI's SDK waits that long by itself."""
    from openai import OpenAI

    body = {"model": "tiny-embed", "input": "paced text"}
    started = time.monotonic()
    assert [embed(base_url, "paced", body).status_code for _ in range(2)] == [200, 200]
    refused = embed(base_url, "paced", body)
    elapsed = time.monotonic() - started
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "quota_exceeded") and "paced" in error["message"]
    wait_ms = int(refused.headers["retry-after-ms"])
    assert 2000 - elapsed * 1000 - 50 <= wait_ms <= 2000  # one request's worth of 0.5/s, less the time gone
    assert refused.headers["Retry-After"] == str(max(1, -(-wait_ms // 1000)))
    time.sleep(wait_ms / 1000)
    assert embed(base_url, "paced", body).status_code == 200
    # The bucket is empty again: the SDK is refused once, waits retry-after-ms, and then gets its answer.
    client = OpenAI(base_url=f"{base_url}/v1", api_key=TENANT_KEYS["paced"], max_retries=2, timeout=60)
    started = time.monotonic()
    result = client.embeddings.create(model="tiny-embed", input="paced text")
    assert len(result.data) == 1 and time.monotonic() - started >= 1.5


def test_over_its_token_quota_a_tenant_waits_out_the_tokens_it_used(base_url):
    """`metered`: 60 input tokens a minute. A 100-token request is admitted (the bucket held 60) and
    leaves it 40 tokens in debt: the next request waits 40 s at 1 token/s."""
    first = embed(base_url, "metered", {"model": "tiny-embed", "input": [[1] * 99 + [151643]]})
    assert first.status_code == 200 and first.json()["usage"]["prompt_tokens"] == 100
    refused = embed(base_url, "metered", {"model": "tiny-embed", "input": "a"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert 38 <= int(refused.headers["Retry-After"]) <= 40


def test_cached_queries_equal_computed_ones_bit_for_bit_shared_only_within_a_group(base_url):
    """`tiny-embed` caches queries. `search` and `search-eu` share a cache group; `indexer` has its own.
    Every answer is the same bits; the cache's counters say which were computed."""
    def counts():
        samples = scrape(base_url)
        return [value(samples, f"ray_qwen3_cache_{n}_total", model="tiny-embed") for n in ("hits", "misses")]

    query = {"model": "tiny-embed", "input": [f"cache test {time.time_ns()}"], "input_type": "query",
             "encoding_format": "base64"}
    before = counts()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # earlier tests' queries are counted up to a few seconds late
        time.sleep(2.5)
        again = counts()
        if again == before:
            break
        before = again
    answers = [vectors(embed(base_url, tenant, query)) for tenant in ("search", "search", "search-eu", "indexer")]
    for answer in answers[1:]:
        assert np.array_equal(answer, answers[0])
    # computed for `search` and for `indexer`; `search` again and `search-eu` from the cache
    deadline = time.monotonic() + 30
    while counts() != [before[0] + 2, before[1] + 2] and time.monotonic() < deadline:
        time.sleep(1)
    assert counts() == [before[0] + 2, before[1] + 2]
    # documents are not cached (`inputs: queries`), and a query to the uncached TP=2 model is its own
    document = vectors(embed(base_url, "search", query | {"input_type": "document"}))
    assert not np.array_equal(document, answers[0])


def test_a_tenants_lane_runs_ahead_of_a_bulk_tenants_queued_work(base_url):
    """`indexer` (priority 5) floods the engine; once its first request is answered, the rest are
    queued in vLLM, and a `search` request (priority 0) goes ahead of them, while one more `indexer`
    request sent with it waits its turn."""
    # About 80 tokens an input: with 16 (one CI run), the tiny model had computed the whole flood by
    # the time the first answer reached the client, and the last two calls met an empty queue.
    bulk = {"model": "tiny-embed", "input": [f"bulk document {i} " * 20 for i in range(128)]}
    one = {"model": "tiny-embed", "input": ["lane test"]}

    async def scenario():
        async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
            async def post(tenant, body):
                response = await client.post("/v1/embeddings", json=body, headers=as_tenant(tenant))
                assert response.status_code == 200, response.text
                return response, time.monotonic()

            flood = [asyncio.create_task(post("indexer", bulk)) for _ in range(32)]
            await asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED)
            urgent, peer = await asyncio.gather(post("search", one), post("indexer", one))
            done = await asyncio.gather(*flood)
            return urgent, peer, [t for _, t in done]

    (urgent, urgent_t), (peer, peer_t), flood_t = asyncio.run(scenario())
    assert sum(t > urgent_t for t in flood_t) >= len(flood_t) // 2  # the flood was still queued
    assert urgent_t < peer_t
    assert int(urgent.headers["x-queue-time"]) < int(peer.headers["x-queue-time"])


def test_requests_carry_their_tenants_label(base_url):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = scrape(base_url)
        found = {t: value(samples, "ray_qwen3_requests_total", tenant=t) for t in ("search", "indexer", "default")}
        refused = value(samples, "ray_qwen3_errors_total", tenant="paced", code="quota_exceeded")
        if all(found.values()) and refused:
            break
        time.sleep(1)
    assert all(found.values()) and refused >= 2, (found, refused)


def test_cohere_sdk_sends_a_priority_that_lowers_the_lane_and_not_the_answer(base_url):
    """Cohere's SDK has `priority` (lower first); it reaches the lane, and the vectors are the same."""
    import cohere

    client = cohere.ClientV2(api_key=TENANT_KEYS["search"], base_url=base_url, timeout=120)
    texts = ["priority is a lane, not a different answer"]
    urgent = client.embed(model="tiny-embed", texts=texts, input_type="search_document", embedding_types=["float"])
    later = client.embed(model="tiny-embed", texts=texts, input_type="search_document", embedding_types=["float"],
                         priority=7)
    assert urgent.embeddings.float_ == later.embeddings.float_
    with pytest.raises(cohere.errors.UnprocessableEntityError):
        client.embed(model="tiny-embed", texts=texts, input_type="search_document", embedding_types=["float"],
                     priority=-1)
