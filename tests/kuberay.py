"""The chart's Ray cluster on this machine, started the way KubeRay starts the chart's pods.

There is no Kubernetes here, but the part of a KubeRay deployment that can break in our code runs
on Ray, and Ray runs here. This module follows KubeRay v1.7.0 (ray-operator/controllers/ray/):

- each group's ``rayStartParams`` become ``ray start`` flags: keys sorted, ``--key=value``, ``"true"``
  a bare flag and ``"false"`` dropped (but ``include-dashboard`` and ``log-color`` keep their value);
  KubeRay adds ``--dashboard-host=0.0.0.0`` to the head, ``--metrics-export-port=8080
  --dashboard-agent-listen-port=52365 --block`` to every node, ``--address=<head>:6379`` to workers,
  and ``--num-cpus``/``--memory``/``--num-gpus`` from the container's limits when not given;
- every container gets ``RAY_ADDRESS``, ``RAY_NODE_TYPE_NAME`` and ``RAY_USAGE_STATS_KUBERAY_IN_USE``,
  and a RayService's also the three timeouts in ``SERVICE_ENV``;
- a RayService's ``serveConfigV2`` is sent as JSON with ``PUT /api/serve/applications/`` to the head's
  dashboard, which is then polled until every application is RUNNING (``deploy_service``);
- a RayJob is submitted by a shell command that submits only if ``ray job status`` does not know the
  id, then follows the logs (``submitter_command``).

What one host changes (every pod shares one IP and one kernel): each node gets its own free port for
every component KubeRay fixes (6379, 8265, 8080, 52365, ...), its own ``--temp-dir`` and a small
``--object-store-memory`` (Ray would size it from the whole machine's RAM); ``RAY_AUTH_MODE=disabled``
(a token in ~/.ray would turn auth on); the model-cache volume is a directory; and only one node can
hold the Serve port, so the values must set ``serve.proxyLocation: HeadOnly`` (on Kubernetes each pod
has its own IP and EveryNode works). Nodes start one at a time and are torn down by process group,
never with ``ray stop`` (it stops every Ray on the machine).

    python -m tests.kuberay --values helm/qwen3-serving/ci/cpu-values.yaml   # make cluster
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from serving.cli import haproxy_instance_env
from serving.ports import reserve_port
from tests.bulk import kill_all
from tests.net import clean_env

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE_ENV = {"RAY_TIMEOUT_MS_TASK_WAIT_FOR_DEATH_INFO": "0", "RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS": "5",
               "RAY_SERVE_KV_TIMEOUT_S": "5"}
VALUED_BOOLEANS = ("include-dashboard", "log-color")  # KubeRay passes these as --key=true|false
OBJECT_STORE_BYTES = 300 * 1024 ** 2


def start_argv(params: dict[str, str]) -> list[str]:
    """``ray start`` flags from rayStartParams, by KubeRay's rules."""
    argv = []
    for key in sorted(params):
        value = str(params[key])
        if value.lower() in ("true", "false") and key not in VALUED_BOOLEANS:
            if value.lower() == "true":
                argv.append(f"--{key}")
        else:
            argv.append(f"--{key}={value}")
    return argv


def _quantity(text: str) -> float:
    """A Kubernetes quantity ("500m", "2", "16Gi") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30,
             "Ti": 2 ** 40}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)).groups()
    return float(number) * units.get(unit, 1)


def group_params(spec: dict[str, Any], container: dict[str, Any], *, head: bool) -> dict[str, str]:
    """A group's rayStartParams with the ones KubeRay adds (before the one-host port changes)."""
    params = {k: str(v) for k, v in (spec.get("rayStartParams") or {}).items()}
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
    params.setdefault("metrics-export-port", "8080")
    params.setdefault("dashboard-agent-listen-port", "52365")
    limits = (container.get("resources") or {}).get("limits") or {}
    if "num-cpus" not in params and "cpu" in limits:
        params["num-cpus"] = str(math.ceil(_quantity(limits["cpu"])))
    if "memory" not in params and "memory" in limits:
        params["memory"] = str(int(_quantity(limits["memory"])))
    if "num-gpus" not in params and "nvidia.com/gpu" in limits:
        params["num-gpus"] = str(int(limits["nvidia.com/gpu"]))
    return params


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain env (Secret references are left out: there are no Secrets here)."""
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


@dataclass
class Node:
    name: str  # "head" or "<group>-<i>"
    group: str
    params: dict[str, str]
    env: dict[str, str]
    temp_dir: str
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def processes(self) -> list[psutil.Process]:
        """Every process of this node: `ray start --block`, its raylet, workers and their engines, and
        anything else that names the node's temp dir."""
        found = {}
        if self.proc is not None:
            try:
                root = psutil.Process(self.proc.pid)
                found = {p.pid: p for p in [root, *root.children(recursive=True)]}
            except psutil.NoSuchProcess:
                pass
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in a for a in p.info["cmdline"] or []):
                    found.setdefault(p.pid, p)
                    for c in p.children(recursive=True):
                        found.setdefault(c.pid, c)
            except psutil.Error:
                pass
        return list(found.values())

    def kill(self) -> None:
        """SIGKILL the whole node at once, as when its pod or machine is lost."""
        procs = self.processes()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_all(procs)
        psutil.wait_procs(procs, timeout=30)
        if self.proc is not None:
            self.proc.wait(30)


@dataclass
class LocalCluster:
    """A RayCluster spec (RayService.spec.rayClusterConfig or RayJob.spec.rayClusterSpec) as Ray nodes
    on this machine: the head with its own ports, then each worker group's replicas, one at a time."""

    spec: dict[str, Any]
    workdir: Path
    service: bool = True  # a RayService's cluster (its containers get SERVICE_ENV)
    cache_dir: Path | None = None  # the model-cache volume (HF_HOME)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.gcs_port, self.dashboard_port = reserve_port(), reserve_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        head = self.spec["headGroupSpec"]
        self.nodes.append(self._node("head", "headgroup", head, head=True))
        for group in self.spec.get("workerGroupSpecs") or []:
            for i in range(group.get("replicas", 1)):
                self.nodes.append(self._node(f"{group['groupName']}-{i}", group["groupName"], group, head=False))

    def _node(self, name: str, group: str, spec: dict[str, Any], *, head: bool) -> Node:
        container = spec["template"]["spec"]["containers"][0]
        params = group_params(spec, container, head=head)
        env = container_env(container) | {
            "RAY_ADDRESS": self.address,
            "RAY_NODE_TYPE_NAME": group, "RAY_USAGE_STATS_KUBERAY_IN_USE": "1"}
        if self.service:  # each pod has a network of its own on Kubernetes; here Serve's fixed ports would clash
            env |= SERVICE_ENV | haproxy_instance_env()
        if head:
            params["dashboard-host"] = "127.0.0.1"  # loopback only: nothing here needs more
        else:
            params["address"] = self.address
        temp_dir = tempfile.mkdtemp(prefix=f"kr{name[:6]}", dir="/tmp")  # short: Ray's socket paths live under it
        return Node(name, group, params, env, temp_dir)

    def _argv(self, node: Node) -> list[str]:
        """The node's `ray start` with this host's ports in place of KubeRay's fixed ones."""
        params = dict(node.params)
        params |= {"metrics-export-port": str(reserve_port()), "dashboard-agent-listen-port": str(reserve_port()),
                   "dashboard-agent-grpc-port": str(reserve_port()), "node-manager-port": str(reserve_port()),
                   "object-manager-port": str(reserve_port()), "runtime-env-agent-port": str(reserve_port()),
                   "temp-dir": node.temp_dir, "object-store-memory": str(OBJECT_STORE_BYTES),
                   "node-ip-address": "127.0.0.1", "disable-usage-stats": "true", "block": "true"}
        if node.name == "head":
            params |= {"head": "true", "port": str(self.gcs_port), "dashboard-port": str(self.dashboard_port),
                       "ray-client-server-port": str(reserve_port()), "include-dashboard": "true"}
        return [str(BIN / "ray"), "start", *start_argv(params)]

    def _environ(self, node: Node) -> dict[str, str]:
        base = clean_env()
        env = base | node.env | {"RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{base.get('PATH', '/usr/bin:/bin')}"}
        if self.cache_dir is not None:
            env["HF_HOME"] = str(self.cache_dir)
        return env

    def start_node(self, node: Node, timeout_s: float = 180) -> None:
        """Start the node (again: a lost pod comes back as a new Ray node) and wait until it has joined."""
        if node.proc is not None:
            node.temp_dir = tempfile.mkdtemp(prefix=f"kr{node.name[:6]}", dir="/tmp")
        node.log = self.workdir / f"{node.name}.log"
        with node.log.open("a") as log:
            node.proc = subprocess.Popen(self._argv(node), env=self._environ(node), cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"node {node.name} exited: {node.log.read_text()[-3000:]}")
            if self.node_id(node) is not None:
                return
            time.sleep(1)
        raise TimeoutError(f"node {node.name} did not join: {node.log.read_text()[-3000:]}")

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Ray's alive nodes, from the head's dashboard (empty while it is not up)."""
        try:
            response = httpx.get(f"{self.dashboard}/nodes?view=summary", timeout=10)
            summary = response.json()["data"]["summary"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]

    def node_id(self, node: Node) -> str | None:
        """Ray's id of a running node, found by its temp dir's session."""
        for n in self.alive_nodes():
            raylet = n.get("raylet", {})
            if str(raylet.get("objectStoreSocketName", "")).startswith(node.temp_dir):
                return raylet["nodeId"]
        return None

    def start(self) -> LocalCluster:
        for node in self.nodes:  # one at a time: two raylets starting together can clash on a port
            self.start_node(node)
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
            shutil.rmtree(node.env.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE") or "/nonexistent", ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def shell_env(self) -> dict[str, str]:
        """The environment of a command run in the head's container (KubeRay's submitter gets the same
        image and RAY_ADDRESS)."""
        return self._environ(self.nodes[0])

    def shell(self, command: str, timeout_s: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", "-c", command], env=self.shell_env(), cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout_s)


# RayService -----------------------------------------------------------------------------------------

def deploy_service(cluster: LocalCluster, serve_config_v2: str, timeout_s: float = 900) -> dict[str, Any]:
    """KubeRay's path: the serveConfigV2 YAML sent as JSON by PUT, then polled until RUNNING.
    Returns the last declarative status; raises TimeoutError with it if not every app ran."""
    body = yaml.safe_load(serve_config_v2)
    deadline = time.monotonic() + timeout_s
    while True:  # a fresh head's dashboard answers before its Serve module is up
        try:
            response = httpx.put(f"{cluster.dashboard}/api/serve/applications/", json=body, timeout=60)
            if response.status_code == 200:
                break
            last = f"{response.status_code} {response.text[:500]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"PUT /api/serve/applications/ failed: {last}")
        time.sleep(2)
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = service_status(cluster)
        apps = status.get("applications") or {}
        if apps and all(a.get("status") == "RUNNING" for a in apps.values()):
            return status
        if any(a.get("status") == "DEPLOY_FAILED" for a in apps.values()):
            break
        time.sleep(2)
    raise TimeoutError(f"applications not RUNNING: {json.dumps(status)[:3000]}")


def service_status(cluster: LocalCluster) -> dict[str, Any]:
    try:
        return httpx.get(f"{cluster.dashboard}/api/serve/applications/", params={"api_type": "declarative"},
                         timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return {}


def healthz(url: str) -> bool:
    """KubeRay's serving check of a pod: GET /-/healthz answers `success`."""
    try:
        response = httpx.get(f"{url}/-/healthz", timeout=10)
        return response.status_code == 200 and response.text.strip() == "success"
    except httpx.HTTPError:
        return False


# RayJob ---------------------------------------------------------------------------------------------

def submitter_command(cluster: LocalCluster, job: dict[str, Any], submission_id: str) -> str:
    """The shell command KubeRay's submitter pod runs (K8sJobMode): submit only if the id is unknown,
    then follow the logs, so a restarted submitter never submits twice."""
    address = shlex.quote(cluster.dashboard)
    runtime_env = ""
    if job["spec"].get("runtimeEnvYAML"):
        runtime_env = f" --runtime-env-json {shlex.quote(json.dumps(yaml.safe_load(job['spec']['runtimeEnvYAML'])))}"
    sid = shlex.quote(submission_id)
    return (f"if ! ray job status --address {address} {sid} >/dev/null 2>&1 ; then "
            f"ray job submit --address {address} --no-wait{runtime_env} --submission-id {sid} -- "
            f"{job['spec']['entrypoint']} ; fi ; ray job logs --address {address} --follow {sid}")


def job_info(cluster: LocalCluster, submission_id: str) -> dict[str, Any]:
    """GET /api/jobs/ID, as KubeRay reads a job's status."""
    try:
        return httpx.get(f"{cluster.dashboard}/api/jobs/{submission_id}", timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return {}


# make cluster ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from tests.helm.conftest import load_values, objects

    parser = argparse.ArgumentParser(prog="python -m tests.kuberay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=Path, default=REPO_ROOT / "helm/qwen3-serving/ci/cpu-values.yaml")
    parser.add_argument("--workers", type=int, default=2, help="replicas of each worker group")
    parser.add_argument("--port", type=int, default=None, help="the Serve port (default: a free one)")
    args = parser.parse_args(argv)

    # Ctrl-C, or SIGTERM from whatever runs this, stops every node (a shell's background job would
    # otherwise inherit SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = args.port or reserve_port()
    values = load_values(args.values)
    values.setdefault("serve", {})["proxyLocation"] = "HeadOnly"
    values.setdefault("appConfig", {}).setdefault("http", {})["port"] = port
    for group in (values.get("workerGroups") or {}).values():
        if group.get("enabled"):
            group.update(replicas=args.workers, maxReplicas=max(args.workers, group.get("maxReplicas", 1)))
    service = next(d for d in objects(values) if d["kind"] == "RayService")
    workdir = Path(tempfile.mkdtemp(prefix="qwen3-cluster-"))
    cluster = LocalCluster(service["spec"]["rayClusterConfig"], workdir, cache_dir=workdir / "hf")
    print(f"starting {len(cluster.nodes)} nodes (logs in {workdir})", flush=True)
    with cluster:
        print(f"dashboard {cluster.dashboard}; deploying serveConfigV2 by PUT", flush=True)
        deploy_service(cluster, service["spec"]["serveConfigV2"])
        print(f"serving on http://127.0.0.1:{port} (healthz: {healthz(f'http://127.0.0.1:{port}')}); "
              "Ctrl-C stops every node", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
