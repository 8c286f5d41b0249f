"""A real Ray Serve app for a test package: its own Ray instance in this process, the Ray Serve
environment the CLI would set (HAProxy ingress with its files and ports of its own, throughput
settings, resending), torn down with the package."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from serving.cli import local_ray_serve_env
from serving.engines.startup import scoped_environ
from tests.net import wait_ready


@contextmanager
def running_app(config, sources: dict[str, dict[str, Any]] | None = None,
                env: dict[str, str] | None = None) -> Iterator[str]:
    """Start Ray, Serve and the app built from ``config``; yield its base URL once /ready is 200.
    ``env``: variables for the app's processes (as a user exports them before starting it), not
    for this one."""
    import ray
    from ray import serve

    from serving.deployments.app import APP_NAME, build_app

    env = local_ray_serve_env(config.http) | (env or {})
    with scoped_environ(**env):
        # Logical CPUs: the deployments' reservations are bookkeeping; the engines share both cores.
        ray.init(num_cpus=8, include_dashboard=False, _system_config={"metrics_report_interval_ms": 1000})
    try:
        serve.start(http_options={"host": config.http.host, "port": config.http.port})
        serve.run(build_app(config, sources or {}), name=APP_NAME, route_prefix="/")
        url = f"http://{config.http.host}:{config.http.port}"
        if not wait_ready(url):
            raise TimeoutError("the Ray Serve app did not become ready")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE") or "/nonexistent", ignore_errors=True)
