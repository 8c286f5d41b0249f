"""A live app with two replicas of everything, for the tests that kill one of them: the same tiny
embedding weights placed in the ingress (two ingress replicas behind HAProxy, one engine each) and
as a deployment of its own (two replicas behind the ingress's handle, small chunks so one request
spreads over both). Started once for this package, in its own Ray instance."""

from __future__ import annotations

import shutil

import pytest

from serving.cli import local_ray_serve_env
from serving.engines.startup import scoped_environ
from tests.net import free_port, wait_ready

INGRESS, DEPLOYED = "tiny-embed", "tiny-embed-dep"


@pytest.fixture(scope="package")
def replicas_app(tiny_models):
    import ray
    from ray import serve

    from serving.config import AppConfig
    from serving.deployments.app import APP_NAME, build_app

    engine = {"model": str(tiny_models["embedding"]), "dtype": "float32", "max_model_len": 512, "enforce_eager": True,
              "cpu_kvcache_space_gib": 0.25, "cpu_omp_threads_bind": "0-1"}
    cpu = {"accelerator": "cpu", "cpus_per_shard": 0.25}
    config = AppConfig.model_validate({
        "models": [
            {"name": INGRESS, "kind": "embed", "engine": engine, "resources": cpu},
            {"name": DEPLOYED, "kind": "embed", "engine": engine, "resources": cpu, "placement": "deployment",
             "scaling": {"num_replicas": 2, "max_ongoing_requests": 16}},
        ],
        "router": {"num_replicas": 2},
        "limits": {"embed_chunk_size": 4},
        "http": {"host": "127.0.0.1", "port": free_port()},
    })
    env = local_ray_serve_env(config.http)
    with scoped_environ(**env):
        ray.init(num_cpus=8, include_dashboard=False, _system_config={"metrics_report_interval_ms": 1000})
    try:
        serve.start(http_options={"host": config.http.host, "port": config.http.port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        url = f"http://{config.http.host}:{config.http.port}"
        if not wait_ready(url):
            raise TimeoutError("the Ray Serve app did not become ready")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE") or "/nonexistent", ignore_errors=True)
