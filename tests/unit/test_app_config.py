"""The app config: YAML files, environment overrides, errors that say what to do, replica shapes."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.config import AppConfig, HttpConfig
from serving.deployments.app import deployment_name, ingress_options, replica_options

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = AppConfig.load(path)
    assert {m.kind for m in config.models} == {"embed", "rerank"}


def test_environment_overrides_yaml(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("http: {port: 8000, host: 127.0.0.1}\nlimits: {max_inputs_per_request: 10}\n")
    monkeypatch.setenv("QWEN3_SERVE_HTTP__PORT", "9100")
    monkeypatch.setenv("QWEN3_SERVE_API_KEYS", "k1, k2")
    config = AppConfig.load(path)
    assert config.http.port == 9100 and config.http.host == "127.0.0.1"
    assert config.limits.max_inputs_per_request == 10
    assert [k.get_secret_value() for k in config.api_keys] == ["k1", "k2"]


def test_api_keys_never_print():
    config = AppConfig(api_keys=["secret-value"])
    assert "secret-value" not in repr(config) and "secret-value" not in config.model_dump_json()


@pytest.mark.parametrize("data,message", [
    ({"models": []}, "at least one model"),
    ({"models": [{"name": "a", "kind": "embed"}, {"name": "a", "kind": "rerank"}]}, "unique"),
    ({"aliases": {"x": [{"model": "missing", "weight": 1}]}}, "unknown models"),
    ({"models": [{"name": "a", "kind": "embed"}, {"name": "b", "kind": "rerank"}],
      "aliases": {"x": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}}, "mixes embed and rerank"),
    ({"models": [{"name": "a", "kind": "embed", "engine": {"tensor_parallel_size": 0}}]}, "greater than or equal to 1"),
    ({"models": [{"name": "a", "kind": "embed", "scaling": {"autoscaling": True, "min_replicas": 3,
                                                             "max_replicas": 2}}]}, "min_replicas"),
    ({"models": [{"name": "a", "kind": "classify"}]}, "kind"),
    ({"limits": {"max_inputs_per_request": 0}}, "max_inputs_per_request"),
])
def test_invalid_config_fails_at_load_with_a_useful_message(data, message):
    with pytest.raises(ValidationError, match=message):
        AppConfig.model_validate(data)


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        AppConfig.load(path)


def model(**fields):
    return AppConfig.model_validate({"models": [{"name": "Qwen/Qwen3-Embedding-8B", "kind": "embed"} | fields]}).models[0]


def test_gpu_tp2_gets_a_placement_group_with_one_gpu_bundle_per_shard():
    options, engine = replica_options(model(engine={"tensor_parallel_size": 2}, resources={"accelerator": "gpu"}))
    assert options["placement_group_bundles"] == [{"CPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0}
    assert engine == {"distributed_executor_backend": "ray"}


def test_gpu_tp1_reserves_one_gpu_on_the_replica():
    options, engine = replica_options(model(resources={"accelerator": "gpu"}))
    assert options["ray_actor_options"]["num_gpus"] == 1.0 and "placement_group_bundles" not in options
    assert engine == {}


def test_auto_accelerator_follows_the_cluster():
    assert replica_options(model(), cluster_has_gpus=True)[0]["ray_actor_options"]["num_gpus"] == 1.0
    assert "num_gpus" not in replica_options(model(), cluster_has_gpus=False)[0]["ray_actor_options"]


def test_cpu_tp2_runs_shards_as_processes_in_the_replica():
    options, engine = replica_options(model(engine={"tensor_parallel_size": 2},
                                            resources={"accelerator": "cpu", "cpus_per_shard": 0.5}))
    assert options["ray_actor_options"] == {"num_cpus": 1.0}
    assert engine == {"distributed_executor_backend": "mp"}


def test_scaling_maps_to_ray_serve_options():
    options, _ = replica_options(model(placement="deployment", scaling={"autoscaling": True, "min_replicas": 1, "max_replicas": 4,
                                                "target_ongoing_requests": 16, "max_ongoing_requests": 64,
                                                "max_queued_requests": 100, "retry_after_s": 3}))
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
                                             "upscale_delay_s": 30.0, "downscale_delay_s": 600.0}
    assert "num_replicas" not in options
    assert options["max_ongoing_requests"] == 64 and options["max_queued_requests"] == 100
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 3}


def test_deployment_names_are_safe_for_ray():
    assert deployment_name("Qwen/Qwen3-Embedding-0.6B") == "Qwen--Qwen3-Embedding-0.6B"


def app(*models, **fields) -> AppConfig:
    return AppConfig.model_validate({"models": list(models)} | fields)


EMBED = {"name": "e", "kind": "embed"}
RERANK = {"name": "r", "kind": "rerank"}


def test_models_live_in_the_ingress_by_default_and_it_reserves_their_cpus():
    config = app(EMBED | {"resources": {"cpus_per_shard": 0.5}},
                 RERANK | {"engine": {"tensor_parallel_size": 2}, "resources": {"cpus_per_shard": 0.25}})
    options, engines = ingress_options(config)
    assert options["ray_actor_options"] == {"num_cpus": 1.0}
    assert engines == {"e": {"distributed_executor_backend": None}, "r": {"distributed_executor_backend": "mp"}}
    assert options["num_replicas"] == 1 and options["max_constructor_retry_count"] == 1
    assert options["health_check_period_s"]
    # A draining ingress replica stays reachable for http.drain_s first; then it must still have time to finish.
    assert options["graceful_shutdown_timeout_s"] == 5 + 30
    slow, _ = ingress_options(config.model_copy(update={"http": HttpConfig(drain_s=12)}))
    assert slow["graceful_shutdown_timeout_s"] == 12 + 30
    proxy, _ = ingress_options(config.model_copy(update={"http": HttpConfig(ingress="proxy")}))
    assert proxy["graceful_shutdown_timeout_s"] == 30


def test_ingress_models_share_one_gpu_and_its_memory():
    config = app(EMBED | {"engine": {"gpu_memory_utilization": 0.45}}, RERANK | {"engine": {"gpu_memory_utilization": 0.45}})
    options, _ = ingress_options(config, cluster_has_gpus=True)
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0}
    with pytest.raises(ValueError, match="add up to 1.8"):
        ingress_options(app(EMBED, RERANK), cluster_has_gpus=True)  # 0.9 each by default
    with pytest.raises(ValueError, match="placement: deployment"):
        ingress_options(app(EMBED | {"engine": {"tensor_parallel_size": 2}}), cluster_has_gpus=True)


def test_several_ingress_replicas_share_a_gpu_within_their_share_of_its_memory():
    """Front ends per GPU: `gpus_per_shard` 0.25 gives four ingress replicas (front-end processes, each
    with its own engines) one GPU; vLLM's gpu_memory_utilization is a fraction of the whole device."""
    def quarter(memory: float) -> AppConfig:
        fraction = {"resources": {"accelerator": "gpu", "gpus_per_shard": 0.25}}
        return app(EMBED | fraction | {"engine": {"gpu_memory_utilization": memory}},
                   RERANK | fraction | {"engine": {"gpu_memory_utilization": memory}})

    options, _ = ingress_options(quarter(0.11), cluster_has_gpus=True)
    assert options["ray_actor_options"]["num_gpus"] == 0.25
    with pytest.raises(ValueError, match=r"add up to 0.3; lower them to a sum of at most 0.25"):
        ingress_options(quarter(0.15), cluster_has_gpus=True)


def test_a_deployment_model_leaves_the_ingress_and_the_ingress_scales_by_router_settings():
    config = app(EMBED | {"placement": "deployment", "scaling": {"num_replicas": 3}},
                 router={"autoscaling": True, "min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 4})
    options, engines = ingress_options(config)
    assert engines == {} and options["ray_actor_options"] == {"num_cpus": 0.0}
    assert options["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 4,
                                             "upscale_delay_s": 30.0, "downscale_delay_s": 600.0}
    assert "num_replicas" not in options and "health_check_period_s" not in options
    assert replica_options(config.models[0])[0]["num_replicas"] == 3


def test_replicas_of_an_ingress_model_are_set_on_the_router_not_the_model():
    with pytest.raises(ValueError, match="router.num_replicas"):
        app(EMBED | {"scaling": {"num_replicas": 2}})
    with pytest.raises(ValueError, match="router.num_replicas"):
        app(EMBED | {"scaling": {"autoscaling": True, "max_replicas": 2}})


def test_a_local_cluster_gets_small_host_settings_and_haproxy_files_of_its_own(monkeypatch):
    import os
    import shutil

    from serving.cli import local_ray_serve_env
    from serving.config import HttpConfig

    for var in [v for v in os.environ if v.startswith("RAY_SERVE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    env = local_ray_serve_env(HttpConfig())
    try:
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "1" and env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.5"
        base = env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
        assert os.path.isdir(base) and env["RAY_SERVE_HAPROXY_SOCKET_PATH"].startswith(base)
        assert len(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 41 <= 97  # Ray adds a 40-character folder
        ports = {env[f"RAY_SERVE_{key}"] for key in ("HAPROXY_METRICS_PORT", "HAPROXY_STATS_PORT",
                                                     "FALLBACK_PROXY_HTTP_PORT", "FALLBACK_PROXY_GRPC_PORT")}
        assert len(ports) == 4 and not ports & {"9101", "8404", "8500", "9500"}  # Ray's fixed ones clash between instances
        assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "5"
        assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"  # no log line per request to HAProxy's manager
        assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response junk-response 503\n" \
                                                   "    option http-buffer-request"
        assert env["RAY_SERVE_HAPROXY_RETRIES"] == "2" and env["RAY_SERVE_HAPROXY_TUNE_BUFSIZE"] == "65536"
    finally:
        shutil.rmtree(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
    # The config and the user's environment win; big hosts keep Ray's defaults.
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.2")
    env = local_ray_serve_env(HttpConfig(ingress="proxy", haproxy_threads=3))
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    env = local_ray_serve_env(HttpConfig(haproxy_threads=3))
    shutil.rmtree(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
    assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "3" and "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" not in env
