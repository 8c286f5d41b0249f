"""Bulk jobs give the API's numbers: `encode` equals /v1/embeddings and `score` equals /v1/rerank
on the same inputs, for JSON Lines and Parquet input.

The jobs run in this test process on the Ray cluster the shared app already owns (no second
cluster on this 2-core machine), through the same `run_job` the CLI calls, with the engine
settings of the app's `tiny-embed` / `tiny-rerank` models.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.bulk import corpus_texts, read_output, score_rows, write_parquet
from tests.integration.serve.conftest import API_KEY
from tests.texts import QUERIES

pytestmark = pytest.mark.slow

N = 200


def _model(app_config_obj, name: str):
    entry = app_config_obj.model(name)
    return entry.model_copy(update={"resources": entry.resources.model_copy(update={"cpus_per_shard": 1})})


def _run(kind: str, model, tmp_path, input_path, **fields):
    from serving.batch.job import run_job
    from serving.config import BulkJobConfig

    job = BulkJobConfig(kind=kind, input=str(input_path), output=str(tmp_path / f"{kind}-out"), batch_size=32,
                        **fields)
    summary, done_before = run_job(job, model, progress=False)
    assert not done_before
    return {r["id"]: r for r in read_output(tmp_path / f"{kind}-out").to_pylist()}, summary


@pytest.fixture(scope="module")
def texts():
    return {f"t{i:04d}": text for i, text in enumerate(corpus_texts(N))}


def test_encode_equals_v1_embeddings(base_url, app_config_obj, tmp_path, texts):
    corpus = tmp_path / "texts.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    rows, summary = _run("encode", _model(app_config_obj, "tiny-embed"), tmp_path, corpus, dimensions=64)
    ids = list(texts)
    api = httpx.post(f"{base_url}/v1/embeddings", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                     json={"model": "tiny-embed", "input": [texts[i] for i in ids], "dimensions": 64}).json()
    expected = np.array([d["embedding"] for d in api["data"]], dtype=np.float32)
    got = np.array([rows[i]["embedding"] for i in ids], dtype=np.float32)
    assert got.shape == expected.shape == (N, 64)
    cosine = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.9999, cosine.min()
    assert sum(rows[i]["n_tokens"] for i in ids) == api["usage"]["prompt_tokens"] == summary.tokens


def test_encode_int8_with_a_calibration_equals_quantizing_v1_embeddings(base_url, app_config_obj, tmp_path, texts,
                                                                        calibration_file):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serving.config import QuantizationConfig
    from serving.quantization import Quantizer

    ids = list(texts)[:64]
    corpus = tmp_path / "texts.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": texts[k]}) + "\n" for k in ids))
    model = _model(app_config_obj, "tiny-embed").model_copy(
        update={"quantization": QuantizationConfig(calibration=str(calibration_file))})
    rows, _ = _run("encode", model, tmp_path, corpus, dimensions=48, embedding_type="int8")
    schema = pq.read_schema(next((tmp_path / "encode-out").glob("*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.int8(), 48)
    api = httpx.post(f"{base_url}/v1/embeddings", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                     json={"model": "tiny-embed", "input": [texts[i] for i in ids], "dimensions": 48}).json()
    floats = np.array([d["embedding"] for d in api["data"]], dtype=np.float32)
    expected = Quantizer.load(calibration_file).quantize(floats, "int8", full_width=False).astype(int)
    got = np.array([rows[i]["embedding"] for i in ids], dtype=int)
    # The two paths' floats agree to cosine >= 0.9999, so a value may land one level off near a boundary.
    assert (np.abs(got - expected) <= 1).mean() >= 0.99 and np.abs(got - expected).max() <= 3


def test_score_equals_v1_rerank(base_url, app_config_obj, tmp_path):
    pairs = score_rows(N, QUERIES)
    write_parquet(tmp_path / "pairs.parquet", pairs)
    rows, _ = _run("score", _model(app_config_obj, "tiny-rerank"), tmp_path, tmp_path / "pairs.parquet")
    worst = 0.0
    for query in QUERIES:
        mine = [p for p in pairs if p["query"] == query]
        for start in range(0, len(mine), 64):  # the app's max_documents_per_request
            chunk = mine[start:start + 64]
            api = httpx.post(f"{base_url}/v1/rerank", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                             json={"model": "tiny-rerank", "query": query, "documents": [p["document"] for p in chunk],
                                   "return_documents": False}).json()
            for result in api["results"]:
                worst = max(worst, abs(rows[chunk[result["index"]]["id"]]["score"] - result["relevance_score"]))
    assert len(rows) == N and all(r["error"] is None for r in rows.values())
    assert worst <= 1e-4, worst
