"""One local multi-node Ray cluster for this package, started from the rendered chart the way
KubeRay would start its pods (tests/kuberay.py): a head with `num-cpus 0` and two CPU workers.
The RayService's serveConfigV2 runs on it; the RayJob's entrypoint is submitted to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.ports import reserve_port
from tests.helm.conftest import CHART, load_values, objects
from tests.kuberay import LocalCluster, deploy_service, healthz
from tests.net import wait_for

WORKERS = 2
ENGINE = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True, "cpu_kvcache_space_gib": 0.25,
          "cpu_omp_threads_bind": "0-1"}


def chart_values(tiny_models: dict[str, Path], port: int, entrypoint: str) -> dict:
    """ci/cpu-values.yaml, with what a user changes to run it here: the tiny weights (local paths,
    float32 for exactness), two ingress replicas on two worker pods, the Serve port on the head only
    (every "pod" shares this host's IP), and the bulk job as a RayJob with our entrypoint."""
    values = load_values(CHART / "ci" / "cpu-values.yaml")
    app = values["appConfig"]
    for model in app["models"]:
        kind = "embedding" if model["kind"] == "embed" else "reranker"
        model["engine"] = {**model["engine"], **ENGINE, "model": str(tiny_models[kind])}
    app["router"] = {"num_replicas": WORKERS}
    app["http"] = {"port": port}
    values["serve"] = {"proxyLocation": "HeadOnly"}
    # Four logical CPUs per worker (the engines share the two cores anyway): room for an ingress
    # replica (one CPU), the lost one's replacement and the bulk job's actors and tasks at once.
    values["workerGroups"]["cpu"].update(replicas=WORKERS, maxReplicas=WORKERS, rayStartParams={"num-cpus": "4"})
    # One retry, as ci/bulk-rayjob-values.yaml allows: KubeRay submits a failed job again.
    values["rayJob"] = {"enabled": True, "entrypoint": entrypoint, "backoffLimit": 1}
    return values


@pytest.fixture(scope="package")
def job_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster-job")


@pytest.fixture(scope="package")
def rendered(tiny_models, job_dir):
    import yaml

    from tests.bulk import write_encode_jsonl

    texts = write_encode_jsonl(job_dir / "corpus.jsonl", 600, [])
    # Half a CPU per engine actor: with the two ingress replicas (one CPU each) on the workers' four,
    # the job's read and write tasks still get a CPU.
    config = job_dir / "engines.yaml"
    config.write_text(yaml.safe_dump({"models": [
        {"name": "tiny-embed", "kind": "embed", "engine": {"model": str(tiny_models["embedding"]), **ENGINE},
         "resources": {"accelerator": "cpu", "cpus_per_shard": 0.5}}]}))
    entrypoint = (f"qwen3-serve encode --config {config} --config-model tiny-embed --input {job_dir / 'corpus.jsonl'} "
                  f"--output {job_dir / 'embeddings'} --dimensions 64 --replicas 2 --batch-size 16 "
                  "--batches-in-flight 1 --no-progress")
    port = reserve_port()
    docs = objects(chart_values(tiny_models, port, entrypoint))
    return {"service": next(d for d in docs if d["kind"] == "RayService"),
            "job": next(d for d in docs if d["kind"] == "RayJob"),
            "url": f"http://127.0.0.1:{port}", "texts": texts, "out": job_dir / "embeddings"}


@pytest.fixture(scope="package")
def cluster(rendered, tmp_path_factory, measurements):
    import time

    workdir = tmp_path_factory.mktemp("cluster")
    spec = rendered["service"]["spec"]["rayClusterConfig"]
    started = time.monotonic()
    with LocalCluster(spec, workdir, cache_dir=workdir / "hf") as local:
        measurements["cluster: nodes started in (s)"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        deploy_service(local, rendered["service"]["spec"]["serveConfigV2"])
        assert wait_for(lambda: healthz(rendered["url"]), 120), "the head's /-/healthz never said success"
        measurements["cluster: serveConfigV2 RUNNING in (s)"] = round(time.monotonic() - started, 1)
        yield local
