"""KubeRay's rules for turning the chart's node groups into `ray start` command lines
(tests/kuberay.py), which the multi-node cluster tests start on this machine."""

from __future__ import annotations

import os

from tests.helm.conftest import CHART, load_values, objects
from tests.kuberay import LocalCluster, container_env, group_params, start_argv


def test_flags_are_sorted_with_true_bare_and_false_dropped():
    params = {"num-cpus": "0", "dashboard-host": "0.0.0.0", "disable-usage-stats": "true", "log-style": "record",
              "no-monitor": "false", "include-dashboard": "false"}
    assert start_argv(params) == ["--dashboard-host=0.0.0.0", "--disable-usage-stats", "--include-dashboard=false",
                                  "--log-style=record", "--num-cpus=0"]


def test_cpu_values_head_and_worker_get_kuberays_defaults_and_limits():
    service = next(d for d in objects(load_values(CHART / "ci" / "cpu-values.yaml")) if d["kind"] == "RayService")
    spec = service["spec"]["rayClusterConfig"]
    head, worker = spec["headGroupSpec"], spec["workerGroupSpecs"][0]
    head_params = group_params(head, head["template"]["spec"]["containers"][0], head=True)
    assert head_params == {"dashboard-host": "0.0.0.0", "num-cpus": "0", "metrics-export-port": "8080",
                           "dashboard-agent-listen-port": "52365", "memory": str(4 * 2 ** 30)}
    worker_params = group_params(worker, worker["template"]["spec"]["containers"][0], head=False)
    assert worker_params["num-cpus"] == "2" and worker_params["memory"] == str(16 * 2 ** 30)
    assert "dashboard-host" not in worker_params
    env = container_env(worker["template"]["spec"]["containers"][0])
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and "option http-buffer-request" in env["RAY_SERVE_HAPROXY_RETRY_ON"]


def test_local_nodes_get_ports_of_their_own_and_the_workers_the_heads_address(tmp_path):
    values = load_values(CHART / "ci" / "cpu-values.yaml")
    values["workerGroups"]["cpu"].update(replicas=2, maxReplicas=2, rayStartParams={"num-cpus": "4"})
    service = next(d for d in objects(values) if d["kind"] == "RayService")
    cluster = LocalCluster(service["spec"]["rayClusterConfig"], tmp_path)
    assert [n.name for n in cluster.nodes] == ["head", "cpu-0", "cpu-1"]
    argvs = [cluster._argv(n) for n in cluster.nodes]
    assert all("--block" in a and "--object-store-memory=314572800" in a for a in argvs)
    assert f"--port={cluster.gcs_port}" in argvs[0] and "--head" in argvs[0] and "--num-cpus=0" in argvs[0]
    assert all(f"--address={cluster.address}" in a and "--num-cpus=4" in a for a in argvs[1:])
    ports = [a.split("=", 1)[1] for argv in argvs for a in argv if a.split("=", 1)[0].endswith("-port")]
    assert len(ports) == len(set(ports)) and "8080" not in ports and "52365" not in ports
    assert cluster.nodes[1].env["RAY_NODE_TYPE_NAME"] == "cpu" and cluster.nodes[1].env["RAY_SERVE_KV_TIMEOUT_S"] == "5"
    # Serve's own listeners (HAProxy's metrics and stats, the fallback proxy) and HAProxy's files: each node's own.
    serve_ports = [n.env[f"RAY_SERVE_{k}"] for n in cluster.nodes for k in (
        "HAPROXY_METRICS_PORT", "HAPROXY_STATS_PORT", "FALLBACK_PROXY_HTTP_PORT", "FALLBACK_PROXY_GRPC_PORT")]
    assert len(set(serve_ports + ports)) == len(serve_ports) + len(ports)
    assert not set(serve_ports) & {"9101", "8404", "8500", "9500"}
    folders = [n.env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] for n in cluster.nodes]
    assert len(set(folders)) == 3 and all(os.path.isdir(f) for f in folders)
    cluster.stop()
    assert not any(os.path.exists(f) for f in folders)
