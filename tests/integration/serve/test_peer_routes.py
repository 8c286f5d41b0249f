"""The peers' further routes (TEI's `/`, `/similarity`, `/tokenize`, `/decode`, `/info` and each model's TEI
base URL; Infinity's; Cohere v1 embed and v2 `return_documents`) on the shared app, each checked against the
answer of a route already proven against the model card's reference (test_http_api.py, test_clients.py), the
reference itself, TEI's documented schema, or the checkpoint's own tokenizer."""

import base64

import httpx
import numpy as np
import pytest

from tests.integration.serve.conftest import API_KEY
from tests.integration.serve.test_clients import assert_scores, ok, post
from tests.integration.serve.test_http_api import cosines
from tests.tei_schema import check_info
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
SAME = 0.99999  # one engine, one input: only batch composition differs
SCORE_ABS = 1e-5


def embeddings(base_url, auth, texts, **extra) -> np.ndarray:
    body = ok(post(base_url, auth, "/v1/embeddings", {"model": "tiny-embed", "input": texts} | extra))
    return np.array([d["embedding"] for d in body["data"]])


def rerank_scores(base_url, auth, query, documents) -> dict[int, float]:
    body = ok(post(base_url, auth, "/v1/rerank", {"query": query, "documents": documents}))
    return {r["index"]: r["relevance_score"] for r in body["results"]}


def assert_same_scores(got: dict[int, float], expected: dict[int, float]) -> None:
    assert sorted(got) == sorted(expected)
    for i, score in got.items():
        assert abs(score - expected[i]) <= SCORE_ABS, (i, score, expected[i])


# --- TEI


@pytest.mark.parametrize("path", ["/similarity", "/"])
def test_tei_similarity_is_the_cosine_of_the_embeddings(base_url, auth, path):
    got = ok(post(base_url, auth, path, {"model": "tiny-embed", "inputs": {"source_sentence": QUERIES[0],
                                                                           "sentences": DOCUMENTS[:4]},
                                         "parameters": {"prompt_name": "query"}}))
    vectors = embeddings(base_url, auth, [QUERIES[0], *DOCUMENTS[:4]], input_type="query")
    expected = cosines(np.repeat(vectors[:1], 4, axis=0), vectors[1:])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tei_root_embeds_and_reranks_as_embed_and_rerank_do(base_url, auth):
    root = ok(post(base_url, auth, "/", {"model": "tiny-embed", "inputs": DOCUMENTS[:3]}))
    embed = ok(post(base_url, auth, "/embed", {"model": "tiny-embed", "inputs": DOCUMENTS[:3]}))
    assert cosines(root, embed).min() >= SAME
    ranks = ok(post(base_url, auth, "/", {"query": QUERIES[1], "texts": DOCUMENTS}))
    assert_same_scores({r["index"]: r["score"] for r in ranks}, rerank_scores(base_url, auth, QUERIES[1], DOCUMENTS))


@pytest.mark.parametrize("model, tokenizer", [(None, "embed_tokenizer"), ("tiny-embed-tp2", "embed_tokenizer"),
                                              ("tiny-rerank", "rerank_tokenizer")])
def test_tei_tokenize_gives_the_checkpoints_ids_and_decode_reverses_it(base_url, auth, request, model, tokenizer):
    # None: the first configured model (in the ingress); tiny-embed-tp2 is reached through its deployment's handle.
    hf = request.getfixturevalue(tokenizer)
    texts = ["Grüße aus Köln", DOCUMENTS[0]]
    extra = {"model": model} if model else {}
    tokens = ok(post(base_url, auth, "/tokenize", {"inputs": texts} | extra))
    assert [[t["id"] for t in ts] for ts in tokens] == hf(texts)["input_ids"]
    for text, ts in zip(texts, tokens):
        for t in ts:
            assert t["special"] or text.encode()[t["start"]:t["stop"]].decode() == t["text"]
    ids = [[t["id"] for t in ts] for ts in tokens]
    decoded = ok(post(base_url, auth, "/decode", {"ids": ids} | extra))
    assert decoded == [hf.decode(i, skip_special_tokens=True) for i in ids]


def test_tei_tokenize_query_prompt_counts_the_tokens_embed_reads(base_url, auth):
    [tokens] = ok(post(base_url, auth, "/tokenize", {"inputs": QUERIES[0], "prompt_name": "query"}))
    usage = ok(post(base_url, auth, "/v1/embeddings", {"model": "tiny-embed", "input": [QUERIES[0]],
                                                        "input_type": "query"}))["usage"]
    assert len(tokens) == usage["prompt_tokens"] and tokens[-1]["special"]


# --- TEI: one base URL per model, /tei/{model}


def test_tei_info_at_the_root_and_under_each_models_base_is_teis_info_of_that_model(base_url, auth,
                                                                                    app_config_obj):
    answers = {m.name: ok(httpx.get(f"{base_url}/tei/{m.name}/info", headers=auth, timeout=30))
               for m in app_config_obj.models}
    root = ok(httpx.get(f"{base_url}/info", headers=auth, timeout=30))
    check_info(root)
    assert root == answers[app_config_obj.models[0].name]
    for m in app_config_obj.models:
        info = answers[m.name]
        check_info(info)
        assert info["served_model_name"] == m.name and info["model_id"] == m.engine.model
        assert list(info["model_type"]) == ["embedding" if m.kind == "embed" else "reranker"]
        assert (info["max_input_length"], info["model_dtype"]) == (512, "float32")


def test_tei_rerank_under_the_rerankers_base_matches_the_reference(base_url, auth, reference_reranker):
    ranks = ok(post(base_url, auth, "/tei/tiny-rerank/rerank", {"query": QUERIES[0], "texts": DOCUMENTS}))
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert_scores({r["index"]: r["score"] for r in ranks}, reference_reranker.rerank(QUERIES[0], DOCUMENTS))


def test_tei_base_of_an_embedding_model_refuses_to_rerank_as_tei_does(base_url, auth):
    response = post(base_url, auth, "/tei/tiny-embed/rerank", {"query": QUERIES[0], "texts": DOCUMENTS[:2]})
    assert response.status_code == 424, response.text
    assert response.json()["error_type"] == "Backend" and "not a re-ranker" in response.json()["error"]


def test_tei_base_embeds_with_the_model_in_its_path_not_the_bodys(base_url, auth):
    # tiny-embed-tp2 is reached through its deployment's handle; the body names the other embed model.
    body = ok(post(base_url, auth, "/tei/tiny-embed-tp2/v1/embeddings", {"model": "tiny-embed", "input": DOCUMENTS}))
    assert body["model"] == "tiny-embed-tp2"
    vectors = ok(post(base_url, auth, "/tei/tiny-embed-tp2/embed", {"model": "tiny-embed", "inputs": DOCUMENTS}))
    assert cosines(vectors, [d["embedding"] for d in body["data"]]).min() >= SAME


def test_tei_base_health_is_the_models_readiness_without_a_key(base_url):
    response = httpx.get(f"{base_url}/tei/tiny-rerank/health", timeout=30)
    assert response.status_code == 200 and response.content == b""


# --- Infinity


@pytest.mark.parametrize("path", ["/infinity/embeddings", "/embeddings"])
def test_infinity_embeddings_equal_openai_embeddings(base_url, auth, path):
    body = ok(post(base_url, auth, path, {"model": "tiny-embed", "input": DOCUMENTS, "encoding_format": "base64",
                                          "dimensions": 64}))
    got = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    assert cosines(got, embeddings(base_url, auth, DOCUMENTS, dimensions=64)).min() >= SAME
    assert body["model"] == "tiny-embed" and body["id"].startswith("infinity-")


def test_infinity_rerank_equals_rerank_with_plain_string_documents(base_url, auth):
    body = ok(post(base_url, auth, "/infinity/rerank", {"query": QUERIES[0], "documents": DOCUMENTS,
                                                        "return_documents": True, "top_n": 3}))
    expected = rerank_scores(base_url, auth, QUERIES[0], DOCUMENTS)
    best = sorted(expected, key=lambda i: -expected[i])[:3]
    assert [r["index"] for r in body["results"]] == best
    assert_same_scores({r["index"]: r["relevance_score"] for r in body["results"]}, {i: expected[i] for i in best})
    assert all(r["document"] == DOCUMENTS[r["index"]] for r in body["results"])


@pytest.mark.parametrize("path", ["/infinity/models", "/models"])
def test_infinity_models_list_what_v1_models_lists(base_url, auth, path):
    infinity = ok(httpx.get(f"{base_url}{path}", headers=auth, timeout=30))["data"]
    openai = ok(httpx.get(f"{base_url}/v1/models", headers=auth, timeout=30))["data"]
    assert [(m["id"], m["capabilities"]) for m in infinity] == [(m["id"], [m["kind"]]) for m in openai]


# --- Cohere


def test_cohere_v1_sdk_embed_equals_openai_embeddings(base_url, auth):
    import cohere

    client = cohere.Client(api_key=API_KEY, base_url=base_url, timeout=120)
    queries = client.embed(model="tiny-embed", texts=QUERIES, input_type="search_query")
    assert queries.response_type == "embeddings_floats"
    assert cosines(queries.embeddings, embeddings(base_url, auth, QUERIES, input_type="query")).min() >= SAME
    documents = client.embed(model="tiny-embed", texts=DOCUMENTS, input_type="search_document",
                             embedding_types=["float"])
    assert cosines(documents.embeddings.float_, embeddings(base_url, auth, DOCUMENTS)).min() >= SAME


def test_cohere_v2_rerank_return_documents(base_url, auth):
    body = ok(post(base_url, auth, "/v2/rerank", {"model": "tiny-rerank", "query": QUERIES[2], "documents": DOCUMENTS,
                                                  "return_documents": True}))
    assert_same_scores({r["index"]: r["relevance_score"] for r in body["results"]},
                       rerank_scores(base_url, auth, QUERIES[2], DOCUMENTS))
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in body["results"])
