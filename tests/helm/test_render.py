"""What the chart renders, for its defaults and every ci/ values file: Helm lint, the KubeRay
CRDs, Kubernetes' own schemas, Ray Serve's and our app config's schemas, names, secrets."""

from __future__ import annotations

import json
import re

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from serving.config import AppConfig
from tests.helm.conftest import (CHART, NAMESPACE, VALUE_CASES, cluster_specs, crd_schema, load_values, objects,
                                 of_kind, pod_templates, render)

K8S_VERSION = kubernetes_validate.latest_version()
CORE_KINDS = {"Secret", "PersistentVolumeClaim", "Ingress", "ServiceAccount"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("case,path", VALUE_CASES, ids=[c for c, _ in VALUE_CASES])
def test_lint_passes_in_strict_mode(case, path):
    report = helm.lint(CHART, load_values(path), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert not report["errors"] and not problems, report


def test_every_case_renders_a_kuberay_resource(rendered):
    _, docs = rendered
    assert of_kind(docs, "RayService") or of_kind(docs, "RayJob")


def test_rayservices_and_rayjobs_match_the_kuberay_crds(rendered):
    _, docs = rendered
    for kind, crd in (("RayService", "ray.io_rayservices.yaml"), ("RayJob", "ray.io_rayjobs.yaml")):
        for doc in of_kind(docs, kind):
            jsonschema.Draft7Validator(crd_schema(crd)).validate(doc)
    # The embedded cluster spec must also be a valid RayCluster spec.
    raycluster_spec = crd_schema("ray.io_rayclusters.yaml")["properties"]["spec"]
    for _, spec in cluster_specs(docs):
        jsonschema.Draft7Validator(raycluster_spec).validate(spec)


def test_crd_validation_rejects_what_kuberay_would():
    """The CRD check can fail: an unquoted rayStartParams value and an unknown field are errors."""
    doc = of_kind(objects(), "RayService")[0]
    validator = jsonschema.Draft7Validator(crd_schema("ray.io_rayservices.yaml"))
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["gpus"] = 1
    messages = {e.message for e in validator.iter_errors(doc)}
    assert any("0 is not of type 'string'" in m for m in messages), messages
    assert any("'gpus' was unexpected" in m for m in messages), messages


def test_core_objects_pass_kubernetes_validate_strict(rendered):
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            checked += 1
    # Pod templates and the Serve Service inside the custom resources are core objects too.
    for group, template in pod_templates(docs):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": group}, "template": template}, K8S_VERSION, strict=True)
        checked += 1
    for service in of_kind(docs, "RayService"):
        serve_svc = service["spec"]["serveService"]
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service"} | serve_svc, K8S_VERSION, strict=True)
    assert checked


def test_pod_monitor_scrapes_the_metrics_port_of_every_ray_pod():
    values = load_values(CHART / "ci" / "gpu-0.6b-values.yaml")
    docs = objects(values)
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    templates = pod_templates(docs)
    assert {g for g, _ in templates} == {"head", "gpu"}
    for _, template in templates:
        assert selector.items() <= template["metadata"]["labels"].items()
        assert port in {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_grafana_dashboard_ships_as_a_configmap_for_the_sidecar_when_enabled():
    def dashboards(values):
        return [d for d in of_kind(objects(values), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]

    (config_map,) = dashboards(load_values(CHART / "ci" / "gpu-0.6b-values.yaml"))
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["qwen3-serving.json"])
    assert shipped == json.loads((CHART / "dashboards" / "qwen3-serving.json").read_text())
    assert dashboards(None) == []  # off by default


def test_dashboard_panels_cover_rate_stages_tokens_queues_replicas_retries_tenants_and_the_cache():
    dashboard = json.loads((CHART / "dashboards" / "qwen3-serving.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for needed in ("sum by (status) (rate(ray_qwen3_requests_total",
                   "histogram_quantile(0.5, sum by (le, stage) (rate(ray_qwen3_request_stage_duration_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le, stage) (rate(ray_qwen3_request_stage_duration_seconds_bucket",
                   "rate(ray_qwen3_input_tokens_total", "ray_qwen3_engine_requests_waiting",
                   "ray_serve_deployment_replica_healthy", "rate(ray_qwen3_retries_total",
                   "sum by (tenant) (rate(ray_qwen3_requests_total", 'code="quota_exceeded"',
                   "rate(ray_qwen3_cache_hits_total", "rate(ray_qwen3_cache_misses_total", "ray_qwen3_cache_bytes"):
        assert needed in exprs, needed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def _serve_config(service: dict) -> dict:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def test_serve_config_parses_with_ray_serve_schema_and_our_app_config(rendered, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    for var in [v for v in __import__("os").environ if v.startswith("QWEN3_SERVE_")]:
        monkeypatch.delenv(var)
    values, docs = rendered
    for service in of_kind(docs, "RayService"):
        raw = _serve_config(service)
        parsed = ServeDeploySchema.model_validate(raw)
        # Ray ignores unknown keys; a round trip that loses nothing proves every key is Ray's.
        assert parsed.model_dump(mode="json", exclude_unset=True) == raw
        (app,) = parsed.applications
        assert (app.name, app.route_prefix, app.import_path) == ("qwen3", "/", "serving.deployments.app:app_builder")
        config = AppConfig(**app.args["config"])
        assert config.model_dump() == AppConfig(**(values.get("appConfig") or _default_app_config())).model_dump()
        # Serve's HTTP options are the app config's, as `qwen3-serve serve` sets them locally.
        assert parsed.http_options.port == config.http.port
        assert parsed.http_options.request_timeout_s == config.http.request_timeout_s


def _default_app_config() -> dict:
    return load_values(CHART / "values.yaml")["appConfig"]


def test_serve_port_is_the_same_everywhere():
    docs = objects({"appConfig": _default_app_config() | {"http": {"port": 9000}}})
    (service,) = of_kind(docs, "RayService")
    assert _serve_config(service)["http_options"]["port"] == 9000
    assert service["spec"]["serveService"]["spec"]["ports"] == [{"name": "serve", "port": 9000}]
    for _, template in pod_templates(docs):
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["serve"] == 9000


def test_rayjob_templates_its_entrypoint_and_lifecycle_from_values():
    values = load_values(CHART / "ci" / "bulk-rayjob-values.yaml")
    docs = objects(values)
    assert not of_kind(docs, "RayService")
    (job,) = of_kind(docs, "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"] == values["rayJob"]["entrypoint"]
    assert spec["entrypoint"].startswith("qwen3-serve encode --model ")
    assert (spec["shutdownAfterJobFinishes"], spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"],
            spec["backoffLimit"]) == (True, 300, 43200, 1)
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    for _, template in pod_templates(docs):
        mounts = {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["data"] == "/data"


@pytest.mark.parametrize("values_file", [CHART / "values.yaml", CHART / "ci" / "bulk-rayjob-values.yaml"])
def test_rayjob_entrypoint_is_a_valid_bulk_command_line(values_file):
    import shlex

    from serving.cli import build_parser

    argv = shlex.split(load_values(values_file)["rayJob"]["entrypoint"])
    assert argv[0] == "qwen3-serve"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert args.command in ("encode", "score") and args.input and args.output and args.model


@pytest.mark.parametrize("release", ["qwen3", "a" * 53, "my-qwen3-serving-release-with-a-very-long-name-for-tests"])
def test_names_fit_kuberay_limits(release):
    docs = objects({"rayJob": {"enabled": True}}, name=release)
    for doc in of_kind(docs, "RayService") + of_kind(docs, "RayJob"):
        name = doc["metadata"]["name"]
        assert len(name) <= 47 and DNS_1035.match(name), name
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63


def test_head_takes_no_model_and_every_ray_start_param_is_a_string(rendered):
    _, docs = rendered
    for _, spec in cluster_specs(docs):
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        groups = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
        for group in groups:
            assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values())


def test_numeric_ray_start_params_are_quoted():
    docs = objects({"workerGroups": {"gpu": {"rayStartParams": {"num-gpus": 1, "object-store-memory": 10000000000,
                                                                  "block": True}}}})
    (group,) = cluster_specs(docs)[0][1]["workerGroupSpecs"]
    assert group["rayStartParams"] == {"num-gpus": "1", "object-store-memory": "10000000000", "block": "true"}


def test_weights_cache_is_mounted_at_hf_home_on_every_ray_container(rendered):
    _, docs = rendered
    for _, template in pod_templates(docs):
        container = template["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["model-cache"] == env["HF_HOME"]["value"]
        assert "model-cache" in {v["name"] for v in template["spec"]["volumes"]}


def test_created_cache_claim_survives_uninstall():
    docs = objects({"modelCache": {"type": "pvc"}})
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (template, *_) = [t for _, t in pod_templates(docs)]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert not of_kind(objects({"modelCache": {"type": "pvc", "pvc": {"existingClaim": "mine"}}}),
                       "PersistentVolumeClaim")


SECRET_VALUES = {"secrets": {"hfToken": "hf_SECRETtoken123", "apiKeys": ["key-AAA111", "key-BBB222"],
                             "tenants": [{"name": "search", "keys": ["key-CCC333"], "requests_per_s": 50}]}}


def test_secret_values_never_reach_the_rayservice():
    manifests = render(SECRET_VALUES | {"rayJob": {"enabled": True}})
    for path, text in manifests.items():
        if not path.endswith("secret.yaml"):
            for secret in ("hf_SECRETtoken123", "key-AAA111", "key-BBB222", "key-CCC333"):
                assert secret not in text, f"{secret} leaked into {path}"
    docs = objects(SECRET_VALUES | {"rayJob": {"enabled": True}})
    (secret,) = of_kind(docs, "Secret")
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    tenants = json.loads(data.pop("QWEN3_SERVE_TENANTS"))
    assert data == {"HF_TOKEN": "hf_SECRETtoken123", "QWEN3_SERVE_API_KEYS": "key-AAA111,key-BBB222"}
    assert tenants == SECRET_VALUES["secrets"]["tenants"]
    for _, template in pod_templates(docs):
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        for var in ("HF_TOKEN", "QWEN3_SERVE_API_KEYS", "QWEN3_SERVE_TENANTS"):
            assert env[var]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_existing_secret_is_used_and_none_is_created():
    docs = objects({"secrets": {"existingSecret": "team-keys"}})
    assert not of_kind(docs, "Secret")
    for _, template in pod_templates(docs):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in template["spec"]["containers"][0]["env"]
                if "valueFrom" in e}
        assert {r["name"] for r in refs.values()} == {"team-keys"}
        assert set(refs) == {"HF_TOKEN", "QWEN3_SERVE_API_KEYS", "QWEN3_SERVE_TENANTS"}


def test_without_secrets_no_secret_env_is_rendered():
    docs = objects()
    assert not of_kind(docs, "Secret")
    for _, template in pod_templates(docs):
        assert {e["name"] for e in template["spec"]["containers"][0]["env"]} == {
            "HF_HOME", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "RAY_SERVE_HAPROXY_METRICS_ENABLED",
            "RAY_SERVE_HAPROXY_RETRY_ON", "RAY_SERVE_HAPROXY_RETRIES", "RAY_SERVE_HAPROXY_TUNE_BUFSIZE"}


@pytest.mark.parametrize("http", [{}, {"ingress": "proxy"}, {"throughput_optimized": False},
                                  {"ingress": "haproxy", "request_timeout_s": 12.5},
                                  {"ingress": "haproxy", "request_timeout_s": None},
                                  {"ingress": "haproxy", "throughput_optimized": True},
                                  {"haproxy_threads": 1}, {"ingress": "proxy", "haproxy_threads": 2},
                                  {"retries": 0}, {"retries": 2, "retry_body_kib": 256}, {"ingress": "proxy", "retries": 2},
                                  {"drain_s": 0}, {"drain_s": 2.5}, {"ingress": "proxy", "drain_s": 1},
                                  {"haproxy_request_metrics": True},
                                  {"ingress": "proxy", "haproxy_request_metrics": True}])
def test_ray_serve_environment_is_the_one_the_cli_sets(http):
    from serving.config import HttpConfig

    docs = objects({"appConfig": {"http": http}} if http else None)
    expected = HttpConfig(**http).ray_serve_env()
    for _, template in pod_templates(docs):
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert {k: v for k, v in env.items() if k.startswith("RAY_SERVE_")} == expected


def test_ingress_routes_to_the_serve_service_kuberay_creates():
    docs = objects(load_values(CHART / "ci" / "gpu-0.6b-values.yaml"))
    (ingress,) = of_kind(docs, "Ingress")
    (service,) = of_kind(docs, "RayService")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["spec"]["serveService"]["metadata"]["name"], "port": {"name": "serve"}}


def test_autoscaler_and_upgrade_settings_come_from_values():
    docs = objects({"autoscaling": {"enabled": True, "options": {"idleTimeoutSeconds": 120}},
                    "rayService": {"upgradeStrategy": {"type": "None"}, "initializingTimeout": "2h"}})
    (service,) = of_kind(docs, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 120
    assert service["spec"]["upgradeStrategy"] == {"type": "None"}
    assert service["metadata"]["annotations"]["ray.io/initializing-timeout"] == "2h"
    off = of_kind(objects(), "RayService")[0]["spec"]["rayClusterConfig"]
    assert off["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in off
