"""Under load nothing is lost or mixed between callers; alias traffic follows its weights."""

import asyncio
import math
from collections import Counter

import httpx
import numpy as np
import pytest

from serving.routing import ModelTable
from tests.integration.serve.conftest import CANARY
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow


async def test_200_concurrent_mixed_requests_each_get_their_own_result(base_url, auth):
    embed_inputs = [f"caller {i}: {DOCUMENTS[i % len(DOCUMENTS)]}" for i in range(100)]
    rerank_queries = [f"caller {i}: {QUERIES[i % len(QUERIES)]}" for i in range(100)]
    async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=600) as client:
        async def embed(text):
            r = await client.post("/v1/embeddings", json={"model": "tiny-embed", "input": text,
                                                          "encoding_format": "float"})
            return r.status_code, (np.array(r.json()["data"][0]["embedding"]) if r.status_code == 200 else r.text)

        async def rerank(query):
            r = await client.post("/v1/rerank", json={"model": "tiny-rerank", "query": query,
                                                      "documents": DOCUMENTS, "return_documents": False})
            if r.status_code != 200:
                return r.status_code, r.text
            return 200, {x["index"]: x["relevance_score"] for x in r.json()["results"]}

        solo_embed = [await embed(t) for t in embed_inputs[:10]]
        solo_rerank = [await rerank(q) for q in rerank_queries[:10]]
        calls = [embed(t) for t in embed_inputs] + [rerank(q) for q in rerank_queries]
        order = list(range(200))
        np.random.default_rng(0).shuffle(order)
        shuffled = await asyncio.gather(*(calls[i] for i in order))
    results = [None] * 200
    for i, r in zip(order, shuffled):
        results[i] = r
    assert [s for s, _ in results if s != 200] == []
    for i in range(10):  # callers that also ran alone get exactly their solo answer
        assert np.dot(results[i][1], solo_embed[i][1]) >= 0.99999
        got, want = results[100 + i][1], solo_rerank[i][1]
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-5
    # and every caller got a distinct answer (nothing duplicated or swapped between callers)
    vectors = np.stack([v for _, v in results[:100]])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, 0)
    assert similarity.max() < 0.9999


async def test_merged_small_requests_keep_their_own_options_and_errors(base_url, auth):
    """Concurrent small embedding requests share the engine's batches (tiny-embed lives in the
    ingress; merged handle calls to a deployment have unit tests); each keeps its own options, its
    own answer and its own error."""
    bodies = [{"input": DOCUMENTS[0]}, {"input": DOCUMENTS[1], "dimensions": 32},
              {"input": [QUERIES[0], DOCUMENTS[2]], "input_type": "query", "instruction": "Find code"},
              {"input": [[1, 2, 10**9]]},  # a token id outside the vocabulary: 422 for this caller only
              {"input": DOCUMENTS[2] * 300, "truncate": False},  # over max_model_len: 413 for this caller only
              {"input": [DOCUMENTS[3]], "use_activation": False}]
    async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=600) as client:
        async def embed(body):
            r = await client.post("/v1/embeddings", json={"model": "tiny-embed"} | body)
            data = r.json()
            return r.status_code, ([d["embedding"] for d in data["data"]] if r.status_code == 200
                                   else data["error"]["message"])

        solo = [await embed(b) for b in bodies]
        order = [i % len(bodies) for i in range(10 * len(bodies))]
        np.random.default_rng(1).shuffle(order)
        together = await asyncio.gather(*(embed(bodies[i]) for i in order))
    assert sorted({s for s, _ in solo}) == [200, 413, 422]
    for i, (status, answer) in zip(order, together):
        assert status == solo[i][0], (bodies[i], answer)
        if status == 200:
            np.testing.assert_allclose(answer, solo[i][1], rtol=1e-5, atol=1e-5)
        else:
            assert answer == solo[i][1]


def test_alias_traffic_split_follows_the_weights(base_url, auth, app_config_obj):
    n = 200
    ids = [f"req-{i}" for i in range(n)]
    served = Counter()
    with httpx.Client(base_url=base_url, headers=auth, timeout=120) as client:
        for request_id in ids:
            r = client.post("/v1/embeddings", json={"model": "embed-canary", "input": "canary"},
                            headers={"X-Request-Id": request_id})
            assert r.status_code == 200, r.text
            served[r.json()["model"]] += 1
    table = ModelTable(app_config_obj)
    expected = Counter(table.resolve("embed-canary", "embed", i) for i in ids)
    assert served == expected  # deterministic per request id
    share = served["tiny-embed-tp2"] / n
    sigma = math.sqrt(0.1 * 0.9 / n)
    assert abs(share - CANARY["tiny-embed-tp2"] / 100) <= 3 * sigma, served
