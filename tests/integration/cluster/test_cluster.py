"""The chart's RayService and RayJob on a local multi-node Ray cluster (conftest.py), in order:
the service's answers, a worker node lost under load, then the bulk job as KubeRay submits it,
with a worker node lost mid-job."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import httpx
import numpy as np
import psutil
import pytest

from tests.faults import Callers
from tests.integration.cluster.conftest import WORKERS
from tests.kuberay import job_info, service_status, submitter_command
from tests.net import wait_for, wait_ready
from tests.texts import DOCUMENTS, QUERIES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

EMBED, RERANK = "Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Reranker-0.6B"
COSINE_MIN = 0.9999


def replicas(cluster) -> list[dict]:
    """The running replicas of the ingress deployment (which holds both engines), from the head's
    dashboard: Serve's own record of each replica's node."""
    status = httpx.get(f"{cluster.dashboard}/api/serve/applications/", timeout=30).json()
    router = status["applications"]["qwen3"]["deployments"]["router"]
    return [r for r in router["replicas"] if r["state"] == "RUNNING"]


def node_of(cluster, node_id: str) -> str:
    return next(n.name for n in cluster.nodes if cluster.node_id(n) == node_id)


def test_every_application_runs_and_the_head_says_healthy(cluster, rendered):
    apps = service_status(cluster)["applications"]
    assert {name: a["status"] for name, a in apps.items()} == {"qwen3": "RUNNING"}
    assert httpx.get(f"{rendered['url']}/-/healthz", timeout=10).text == "success"
    assert httpx.get(f"{rendered['url']}/ready", timeout=10).status_code == 200


def test_replicas_run_on_the_workers_one_each_and_none_on_the_head(cluster, measurements):
    nodes = sorted(node_of(cluster, r["node_id"]) for r in replicas(cluster))
    measurements["cluster: ingress replicas by node"] = nodes
    assert nodes == [f"cpu-{i}" for i in range(WORKERS)]


def test_answers_through_the_head_equal_the_reference(rendered, reference_embedder, reference_reranker):
    url = rendered["url"]
    body = httpx.post(f"{url}/v1/embeddings", json={"model": EMBED, "input": DOCUMENTS}, timeout=120).json()
    got = np.array([d["embedding"] for d in body["data"]])
    want = np.asarray(reference_embedder.embed(DOCUMENTS))
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= COSINE_MIN, cos
    ranked = httpx.post(f"{url}/v1/rerank", json={"model": RERANK, "query": QUERIES[0], "documents": DOCUMENTS},
                        timeout=120).json()
    expected = reference_reranker.rerank(QUERIES[0], DOCUMENTS)
    assert sorted(r["index"] for r in ranked["results"]) == list(range(len(DOCUMENTS)))
    for r in ranked["results"]:
        assert abs(r["relevance_score"] - expected[r["index"]]) <= 1e-4


def test_losing_a_worker_node_under_load(cluster, rendered, measurements):
    """SIGKILL one worker (its raylet, replica and engines at once, as when a pod's machine dies)
    while callers are in flight; the replica is replaced on the other worker. Every answer must be
    the caller's own; the failures are counted (the README quotes them). Then the node comes back."""
    url = rendered["url"]
    inputs = {c: [f"caller {c} sentence {k}: the quick brown fox" for k in range(6)] for c in range(4)}

    def send(client: httpx.Client, caller: int) -> httpx.Response:
        return client.post(f"{url}/v1/embeddings", json={"model": EMBED, "input": inputs[caller]})

    with httpx.Client(timeout=120) as client:
        expected = {c: np.array([d["embedding"] for d in send(client, c).json()["data"]]) for c in inputs}
    victim = next(n for n in cluster.nodes if n.name == f"cpu-{WORKERS - 1}")
    label = "cluster: worker node SIGKILLed under load"
    with Callers(send, n=len(inputs)) as callers:
        time.sleep(3)
        victim.kill()
        killed_at = time.monotonic()
        dead = wait_for(lambda: cluster.node_id(victim) is None, 120, 0.5)
        measurements[f"{label}: Ray saw the node dead after (s)"] = round(time.monotonic() - killed_at, 1)
        time.sleep(10)  # full load on the surviving replica after Ray and HAProxy dropped the lost one
    # The replacement starts its engines on the two cores the callers would otherwise take.
    replaced = wait_for(lambda: len(replicas(cluster)) == WORKERS, 600, 1)
    measurements[f"{label}: two replicas running again after (s)"] = round(time.monotonic() - killed_at, 1)
    ready = wait_ready(url, 120)
    measurements[f"{label}: /ready 200 after (s)"] = round(time.monotonic() - killed_at, 1)
    statuses = Counter(map(str, callers.statuses))
    measurements[f"{label}: answers"] = dict(statuses)
    measurements[f"{label}: replicas by node after"] = sorted(node_of(cluster, r["node_id"]) for r in replicas(cluster))
    failed = [(c, s, str(b)[:200]) for c, s, b in callers.results if s != 200]
    measurements[f"{label}: failures"] = failed[:5]
    assert dead and replaced and ready, (dead, replaced, ready)
    assert "timeout" not in statuses, "a request hung"
    # As for one replica's SIGKILL (tests/integration/replicas): HAProxy resends every request the
    # lost replica held or refused, except one whose answer it had begun to pass on.
    cut = [f for f in failed if f[1] == "transport" and "without sending complete message body" in f[2]]
    assert len(failed) == len(cut) <= 1, f"{len(failed)} of {len(callers.results)} failed: {failed[:5]}"
    for caller, status, body in callers.results:
        if status == 200:
            np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected[caller], atol=1e-6)
    assert statuses["200"] >= 4 * len(inputs)

    started = time.monotonic()
    cluster.start_node(victim)  # the pod comes back
    measurements[f"{label}: node rejoined in (s)"] = round(time.monotonic() - started, 1)


def job_actors(cluster) -> list[str]:
    """The nodes of the bulk job's alive engine actors (Ray Data titles them
    `MapWorker(MapBatches(EncodeWorker))`; its checkpoint filter is a MapWorker too)."""
    actors = httpx.get(f"{cluster.dashboard}/api/v0/actors", params={"detail": "true", "limit": 1000},
                       timeout=30).json()["data"]["result"]["result"]
    return [node_of(cluster, a["node_id"]) for a in actors
            if a["state"] == "ALIVE" and "EncodeWorker" in (a.get("repr_name") or "")]


def submissions(cluster) -> list[str]:
    return sorted(j["submission_id"] for j in httpx.get(f"{cluster.dashboard}/api/jobs/", timeout=30).json())


def job_engine_processes(cluster) -> list:
    """The bulk job's engine actors (Ray Data's MapWorker) on every node, with their engine cores."""
    from tests.bulk import alive

    found = []
    for node in cluster.nodes:
        for p in alive(node.processes()):
            try:
                if "MapWorker" in " ".join(p.cmdline()):
                    found += [p, *p.children(recursive=True)]
            except psutil.Error:
                pass
    return found


def run_submitter(cluster, job, sid: str) -> subprocess.Popen:
    return subprocess.Popen(["/bin/sh", "-c", submitter_command(cluster, job, sid)], env=cluster.shell_env(),
                            cwd=cluster.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def bulk_job(cluster, rendered, measurements):
    """The RayJob as KubeRay runs it, through its submitter command, in three steps:
    1. suspended mid-job (KubeRay stops the job with POST /api/jobs/ID/stop): no engine may survive;
    2. resumed (KubeRay submits it again under a new id), and a worker node SIGKILLed once it has
       committed more, its pod coming back 5 s later;
    3. if that attempt failed, retried as backoffLimit allows. Then the submitter runs once more with
       the last id, as a restarted submitter pod would: it must follow the job, not submit it again."""
    from tests.bulk import alive, committed_checkpoints

    job, out = rendered["job"], rendered["out"]
    name = job["metadata"]["name"]
    label = "cluster: RayJob"
    result: dict = {"out": out}

    submitter = run_submitter(cluster, job, f"{name}-suspended")
    assert wait_for(lambda: len(committed_checkpoints(out)) >= 2, 900, 0.5), submitter.communicate()[0][-3000:]
    result["placements"] = job_actors(cluster)
    engines = job_engine_processes(cluster)
    stop = httpx.post(f"{cluster.dashboard}/api/jobs/{name}-suspended/stop", timeout=60)
    wait_for(lambda: not alive(engines), 120)
    submitter.communicate(timeout=300)
    result["suspended"] = {"stop": stop.status_code, "engines_before": len(engines),
                           "status": job_info(cluster, f"{name}-suspended").get("status"),
                           "engines_after": [" ".join(p.cmdline())[:100] for p in alive(engines)]}

    attempts = []
    for attempt in range(1 + job["spec"]["backoffLimit"]):
        sid = f"{name}-{attempt}"
        committed = len(committed_checkpoints(out))
        submitter = run_submitter(cluster, job, sid)
        if attempt == 0:
            assert wait_for(lambda: len(committed_checkpoints(out)) >= committed + 2, 900, 0.5), \
                submitter.communicate()[0][-3000:]
            measurements[f"{label}: batches committed when a worker node was SIGKILLed"] = len(
                committed_checkpoints(out))
            victim = next(n for n in cluster.nodes if n.name == "cpu-0")
            victim.kill()
            time.sleep(5)
            cluster.start_node(victim)
        logs, _ = submitter.communicate(timeout=1500)
        attempts.append({"submission_id": sid, "status": job_info(cluster, sid).get("status"), "logs": logs[-3000:]})
        if attempts[-1]["status"] == "SUCCEEDED":
            break
    measurements[f"{label}: attempts after the suspension"] = [(a["submission_id"], a["status"]) for a in attempts]
    result["attempts"] = attempts
    result["before"] = submissions(cluster)
    result["again"] = cluster.shell(submitter_command(cluster, job, attempts[-1]["submission_id"]), timeout_s=600)
    result["after"] = submissions(cluster)
    return result


def test_job_suspended_mid_run_leaves_no_engine_process(bulk_job):
    suspended = bulk_job["suspended"]
    assert suspended["stop"] == 200 and suspended["status"] == "STOPPED", suspended
    assert suspended["engines_before"] >= 2 and suspended["engines_after"] == [], suspended


def test_job_engine_actors_ran_on_the_workers(bulk_job):
    # Any worker (both may share one: the one that lost its replica has the free CPUs), never the head.
    placements = bulk_job["placements"]
    assert placements and set(placements) <= {f"cpu-{i}" for i in range(WORKERS)}, placements


def test_job_succeeded_after_the_node_loss(bulk_job):
    last = bulk_job["attempts"][-1]
    assert last["status"] == "SUCCEEDED", bulk_job["attempts"]
    assert "done: rows ok" in last["logs"], last["logs"]


def test_submitter_run_again_follows_the_job_without_submitting_it(bulk_job):
    again = bulk_job["again"]
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert bulk_job["after"] == bulk_job["before"]
    assert "done: rows ok" in again.stdout


def test_job_output_has_every_id_once_and_equals_the_reference(bulk_job, rendered, reference_embedder):
    from tests.bulk import read_output

    table = read_output(bulk_job["out"]).to_pylist()
    counts = Counter(r["id"] for r in table)
    assert set(counts) == set(rendered["texts"]) and max(counts.values()) == 1
    assert all(r["error"] is None for r in table)
    ids = sorted(counts)[::25]
    got = {r["id"]: np.array(r["embedding"]) for r in table}
    want = np.asarray(reference_embedder.embed([rendered["texts"][i] for i in ids], dimensions=64))
    for i, w in zip(ids, want):
        g = got[i]
        assert g.shape == (64,) and float(g @ w / (np.linalg.norm(g) * np.linalg.norm(w))) >= COSINE_MIN
