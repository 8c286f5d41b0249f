"""A live app with two replicas of everything, for the tests that kill one of them: the same tiny
embedding weights placed in the ingress (two ingress replicas behind HAProxy, one engine each) and
as a deployment of its own (two replicas behind the ingress's handle, small chunks so one request
spreads over both), and a tenant with a quota the two ingress replicas share. Started once for this
package, in its own Ray instance."""

from __future__ import annotations

import pytest

from serving.ports import reserve_port
from tests.serve_app import running_app

INGRESS, DEPLOYED = "tiny-embed", "tiny-embed-dep"
API_KEY = "replicas-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PACED = {"name": "paced", "keys": ["paced-key"], "requests_per_s": 4, "burst_s": 1}  # test_quotas.py


@pytest.fixture(scope="package")
def replicas_app(tiny_models):
    from serving.config import AppConfig

    engine = {"model": str(tiny_models["embedding"]), "dtype": "float32", "max_model_len": 512, "enforce_eager": True,
              "cpu_kvcache_space_gib": 0.25, "cpu_omp_threads_bind": "0-1"}
    cpu = {"accelerator": "cpu", "cpus_per_shard": 0.25}
    config = AppConfig.model_validate({
        "models": [
            {"name": INGRESS, "kind": "embed", "engine": engine, "resources": cpu, "cache": {"max_bytes": 1 << 20}},
            {"name": DEPLOYED, "kind": "embed", "engine": engine, "resources": cpu, "placement": "deployment",
             "scaling": {"num_replicas": 2, "max_ongoing_requests": 16}},
        ],
        "router": {"num_replicas": 2},
        "limits": {"embed_chunk_size": 4},
        "api_keys": [API_KEY],
        "tenants": [PACED],
        "http": {"host": "127.0.0.1", "port": reserve_port()},
    })
    with running_app(config) as url:
        yield url
