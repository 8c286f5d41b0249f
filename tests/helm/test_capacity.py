"""The worker groups can hold every model replica the embedded app config asks for.

Each replica's demand comes from the app's own `ingress_options` / `replica_options` (the Ray
Serve options it deploys with), not from a second copy of the rule. An ingress replica holds
the engines of every model placed in it (CPU: the sum of their CPUs; GPU: one shared GPU). A
`placement: deployment` model's replica:
  - GPU, TP=1: one actor with `replica_cpus` CPUs and `gpus_per_shard` GPUs;
  - GPU, TP=N>1: a STRICT_PACK placement group (one CPU bundle + N GPU bundles) that must fit
    on ONE node, so it is packed as a single item of the bundles' sum;
  - CPU: one actor with `cpus_per_shard` x TP CPUs.
A pod offers what KubeRay tells Ray it has: rayStartParams num-cpus/num-gpus if set, else the
container's cpu limit (rounded up) and nvidia.com/gpu limit. The head offers num-cpus "0" and
no GPU, so no replica may count on it.

Two checks, each a first-fit-decreasing packing of replicas onto pods:
  - base: every model at its fixed `num_replicas` (or autoscaling `min_replicas`) fits on the
    worker groups at `replicas` pods;
  - peak: every model at `num_replicas` (or `max_replicas`) fits on the worker groups at
    `maxReplicas` pods if the Ray autoscaler is on, else still at `replicas` (without the
    autoscaler KubeRay never adds pods, so Serve's extra replicas would stay pending).
A packing found proves the demand fits; first-fit can miss tight packings, which for these
shapes (identical GPU items) it does not.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from serving.config import AppConfig
from serving.deployments.app import ingress_options, replica_options
from tests.helm.conftest import CHART, cluster_specs, load_values, objects, of_kind

Item = tuple[str, float, float]  # (label, cpus, gpus)


def pod_capacity(group: dict[str, Any]) -> tuple[float, float]:
    params = group.get("rayStartParams", {})
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    cpu = float(params["num-cpus"]) if "num-cpus" in params else math.ceil(_cpu(limits.get("cpu", "0")))
    gpu = float(params["num-gpus"]) if "num-gpus" in params else float(limits.get("nvidia.com/gpu", 0))
    return cpu, gpu


def _cpu(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def replica_demand(config: AppConfig, cluster_has_gpus: bool, peak: bool) -> list[Item]:
    """One item per replica: the ingress's (which hold the engines of the models placed in it)
    and each `placement: deployment` model's."""
    options, _ = ingress_options(config, cluster_has_gpus)
    actor = options["ray_actor_options"]
    auto = options.get("autoscaling_config")
    count = (auto["max_replicas"] if peak else auto["min_replicas"]) if auto else options["num_replicas"]
    items = [(f"ingress#{i}", actor.get("num_cpus", 0), actor.get("num_gpus", 0)) for i in range(count)]
    for model in config.models:
        if model.placement == "ingress":
            continue
        options, _ = replica_options(model, cluster_has_gpus)
        if "placement_group_bundles" in options:
            bundles = options["placement_group_bundles"]
            cpu, gpu = sum(b.get("CPU", 0) for b in bundles), sum(b.get("GPU", 0) for b in bundles)
        else:
            actor = options["ray_actor_options"]
            cpu, gpu = actor.get("num_cpus", 0), actor.get("num_gpus", 0)
        scaling = model.scaling
        if scaling.autoscaling:
            count = scaling.max_replicas if peak else scaling.min_replicas
        else:
            count = scaling.num_replicas
        items += [(f"{model.name}#{i}", cpu, gpu) for i in range(count)]
    return items


def pack(items: list[Item], pods: list[list[float]]) -> list[str]:
    """First-fit decreasing; returns the labels that found no pod."""
    unplaced = []
    for label, cpu, gpu in sorted(items, key=lambda it: (it[2], it[1]), reverse=True):
        pod = next((p for p in pods if p[0] + 1e-9 >= cpu and p[1] + 1e-9 >= gpu), None)
        if pod is None:
            unplaced.append(label)
        else:
            pod[0] -= cpu
            pod[1] -= gpu
    return unplaced


def unplaced_replicas(values: dict[str, Any], peak: bool) -> list[str]:
    (service,) = of_kind(objects(values), "RayService")
    spec = service["spec"]["rayClusterConfig"]
    autoscaler = spec["enableInTreeAutoscaling"]
    pods, has_gpus = [], False
    for group in spec.get("workerGroupSpecs", []):
        cpu, gpu = pod_capacity(group)
        has_gpus |= gpu > 0
        count = group["maxReplicas"] if (peak and autoscaler) else group["replicas"]
        pods += [[cpu, gpu] for _ in range(count)]
    config = AppConfig(**yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["config"])
    return pack(replica_demand(config, has_gpus, peak), pods)


SERVICE_CASES = ["values.yaml"] + [p.name for p in sorted((CHART / "ci").glob("*.yaml"))
                                   if "rayjob" not in p.name]


def _values(name: str) -> dict[str, Any]:
    return {} if name == "values.yaml" else load_values(CHART / "ci" / name)


@pytest.mark.parametrize("peak", [False, True], ids=["base", "peak"])
@pytest.mark.parametrize("name", SERVICE_CASES)
def test_worker_groups_hold_every_model_replica(name, peak):
    assert unplaced_replicas(_values(name), peak) == []


def test_gpu_shapes_reserve_gpus_for_every_model():
    """On the GPU shapes every model replica really asks for GPUs (so the check above is about GPUs)."""
    for name in ("values.yaml", "gpu-0.6b-values.yaml", "gpu-8b-tp2-values.yaml"):
        (service,) = of_kind(objects(_values(name)), "RayService")
        config = AppConfig(**yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["config"])
        assert all(gpu > 0 for _, _, gpu in replica_demand(config, True, peak=False)), name


def test_too_few_gpus_is_caught():
    # gpu-0.6b: four ingress replicas, two per GPU (each holding both models on half of it), on two
    # 1-GPU pods; one pod holds two of them.
    values = load_values(CHART / "ci" / "gpu-0.6b-values.yaml")
    values["workerGroups"]["gpu"].update(replicas=1, minReplicas=1)
    assert len(unplaced_replicas(values, peak=False)) == 2


def test_tp2_replica_must_fit_on_one_pod():
    # 8B TP=2 needs two GPUs on one node: four 1-GPU pods have the GPUs but not on one node.
    values = load_values(CHART / "ci" / "gpu-8b-tp2-values.yaml")
    values["workerGroups"]["gpu-x2"]["resources"] = {"limits": {"cpu": "8", "nvidia.com/gpu": "1"},
                                                     "requests": {"cpu": "8", "nvidia.com/gpu": "1"}}
    values["workerGroups"]["gpu-x2"].update(replicas=4, maxReplicas=4)
    assert any(label.startswith("Qwen/Qwen3-Embedding-8B") for label in unplaced_replicas(values, peak=False))


def test_autoscaled_peak_needs_the_ray_autoscaler():
    # gpu-0.6b peaks at 16 half-GPU ingress replicas; without the Ray autoscaler the 2 pods stay 2
    # and hold 4 of them.
    values = load_values(CHART / "ci" / "gpu-0.6b-values.yaml")
    values["autoscaling"]["enabled"] = False
    assert unplaced_replicas(values, peak=False) == []
    assert len(unplaced_replicas(values, peak=True)) == 12


def test_cluster_specs_cover_rayjob_too():
    # The bulk RayJob's cluster has GPUs the encode command can use.
    docs = objects(load_values(CHART / "ci" / "bulk-rayjob-values.yaml"))
    ((kind, spec),) = cluster_specs(docs)
    assert kind == "RayJob"
    assert any(pod_capacity(g)[1] > 0 for g in spec["workerGroupSpecs"])
