"""Losing one of two replicas loses no request. Callers keep requests in flight (each its own
inputs, so a mixed-up answer would show) while one replica, or only its vLLM engine-core process,
is SIGKILLed; every answer must be a 200 equal to what that caller got before. Calls through a
handle are sent again by the ingress; requests to a dead ingress replica are sent again by HAProxy.
After each kill the test waits for Ray's replacement, so every test starts with two replicas."""

import glob
import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from tests.faults import Callers, engine_core, replica_processes
from tests.integration.replicas.conftest import AUTH, DEPLOYED, INGRESS
from tests.net import wait_for

pytestmark = [pytest.mark.slow]

CALLERS = 4
PAUSE_WHILE_REPLACED_S = 1.0  # each caller one request a second: the replacement gets the cores, callers keep sending


def inputs(caller: int, model: str) -> list[str]:
    # DEPLOYED: 24 inputs, 6 chunks of 4 per request, so each caller keeps calls running on both
    # replicas and the kill always catches some mid-call (Ray resends by itself only calls no
    # replica had accepted yet; the ingress must resend the others).
    n = 24 if model == DEPLOYED else 6
    return [f"caller {caller} sentence {k}: the quick brown fox" for k in range(n)]


def sender(url: str, model: str):
    """Even callers post as most clients do; odd ones write the body a moment after the headers, so
    that it reaches HAProxy in a packet of its own (a request HAProxy cannot resend unless it waits
    for the body: see serving.config.HAPROXY_RETRY_ON)."""
    def send(client: httpx.Client, caller: int) -> httpx.Response:
        body = json.dumps({"model": model, "input": inputs(caller, model)}).encode()
        if caller % 2 == 0:
            return client.post(f"{url}/v1/embeddings", content=body, headers={"Content-Type": "application/json"} | AUTH)

        def late():
            time.sleep(0.005)
            yield body
        return client.post(f"{url}/v1/embeddings", content=late(),
                           headers={"Content-Type": "application/json", "Content-Length": str(len(body))} | AUTH)
    return send


def running_replicas(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications["qwen3"].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def kill_under_load(url: str, model: str, deployment: str, victim, measurements: dict, label: str,
                    cut_answers_allowed: int = 0, stall_engine_s: float = 0.0) -> Callers:
    """Run callers, SIGKILL ``victim(replica)`` of one replica, keep calling until the replica process
    is gone and Ray runs two replicas again, and check every answer.

    ``stall_engine_s``: first stop the replica's engine core (SIGSTOP) for that long, so that the calls
    the replica accepts meanwhile are surely in flight when it dies. Without it the kill caught 0 to 11
    calls mid-call in CI runs: the tiny model answers a chunk in milliseconds."""
    send = sender(url, model)
    with httpx.Client(timeout=120) as client:
        expected = {c: np.array([d["embedding"] for d in send(client, c).json()["data"]]) for c in range(CALLERS)}
    assert running_replicas(deployment) == 2
    replica = replica_processes(deployment)[0]
    engine_processes = replica.children(recursive=True)
    others = {p.pid for p in replica_processes(deployment)} - {replica.pid}
    with Callers(send, n=CALLERS) as callers:
        time.sleep(2)  # requests in flight on both replicas
        killed = victim(replica)
        stalled = engine_core(replica) if stall_engine_s else None
        if stalled:
            stalled.suspend()
            time.sleep(stall_engine_s)
        killed_at = time.monotonic()
        os.kill(killed.pid, signal.SIGKILL)
        if stalled:
            stalled.resume()  # so that it sees its replica gone and exits
        gone = wait_for(lambda: not replica.is_running() or replica.status() == psutil.STATUS_ZOMBIE, 60, 0.05)
        measurements[f"{label}: replica process gone after (s)"] = round(time.monotonic() - killed_at, 2)
        time.sleep(5)  # full load while Ray and HAProxy drop the lost replica
        # Slower callers while the replacement starts (it needs the two cores the load would take),
        # still sending when it joins.
        callers.pause_s = PAUSE_WHILE_REPLACED_S
        replaced = wait_for(lambda: running_replicas(deployment) == 2
                            and {p.pid for p in replica_processes(deployment)} - others - {replica.pid}, 300, 1)
        measurements[f"{label}: two replicas running again after (s)"] = round(time.monotonic() - killed_at, 1)
        callers.pause_s = 0
        time.sleep(3)  # full load on both again
    measurements[f"{label}: answers"] = dict(Counter(map(str, callers.statuses)))
    assert gone and replaced, (gone, replaced)
    orphans = [p.pid for p in engine_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert engine_processes and not orphans, f"engine processes of the lost replica still run: {orphans}"
    failed = [(c, s, str(b)[:200]) for c, s, b in callers.results if s != 200]
    cut = [f for f in failed if f[1] == "transport" and "without sending complete message body" in f[2]]
    measurements[f"{label}: answers cut off after their headers"] = len(cut)
    assert len(failed) == len(cut) <= cut_answers_allowed, f"{len(failed)} of {len(callers.results)} failed: {failed[:5]}"
    for caller, _, body in callers.results:
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected[caller], atol=1e-6)
    assert len(callers.results) >= 4 * CALLERS
    return callers


def retries(url: str) -> dict[str, float]:
    """The ingress's count of resent handle calls to DEPLOYED, by reason."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("ray_qwen3_retries_total{") and f'model="{DEPLOYED}"' in line:
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def retried_since(url: str, before: dict[str, float], measurements: dict, label: str) -> bool:
    def more() -> bool:
        now = retries(url)
        measurements[f"{label}: calls resent by the ingress, by reason"] = {
            k: v - before.get(k, 0) for k, v in now.items() if v > before.get(k, 0)}
        return sum(now.values()) > sum(before.values())
    return wait_for(more, 30, 1)


def test_haproxy_waits_for_whole_requests_so_that_it_can_resend_them(replicas_app):
    port = replicas_app.rsplit(":", 1)[1]
    configs = [open(path).read() for path in glob.glob("/tmp/q3h-*/*/haproxy.cfg")]
    [config] = [c for c in configs if f"bind 127.0.0.1:{port}\n" in c]
    defaults = config.split("\ndefaults\n", 1)[1].split("\nfrontend ", 1)[0].splitlines()
    assert "    retry-on conn-failure empty-response junk-response 503" in defaults
    assert "    option http-buffer-request" in defaults and "    retries 2" in defaults


def test_sigkill_of_a_model_deployment_replica_loses_nothing(replicas_app, measurements):
    # The replica's engine stalls first, so the kill catches calls it accepted: only the ingress can
    # resend those (Ray resends by itself only calls no replica had accepted).
    label = "SIGKILL of one of two deployment replicas"
    before = retries(replicas_app)
    kill_under_load(replicas_app, DEPLOYED, DEPLOYED, lambda replica: replica, measurements, label,
                    stall_engine_s=1.0)
    assert retried_since(replicas_app, before, measurements, label), "no resent call was counted"


def test_engine_death_in_a_model_deployment_replica_loses_nothing(replicas_app, measurements):
    # The replica exits at the first call its dead engine fails, so Ray routes around it at once.
    label = "SIGKILL of the engine core of one of two deployment replicas"
    before = retries(replicas_app)
    kill_under_load(replicas_app, DEPLOYED, DEPLOYED, engine_core, measurements, label)
    assert retried_since(replicas_app, before, measurements, label), "no resent call was counted"


def test_every_series_of_the_grafana_dashboard_is_in_the_apps_metrics(replicas_app):
    """The chart's dashboard (helm/qwen3-serving/dashboards/) against this live app's /metrics. Runs
    here: the counters of resent calls exist once the kills above made some, and the ingress
    replicas that counted them are still alive. The quota panel's series comes from test_quotas.py."""
    assert httpx.post(f"{replicas_app}/v1/embeddings", json={"model": "nope", "input": "a"}, headers=AUTH,
                      timeout=30).status_code == 404  # an error, for the errors panel
    # a query twice in one request: a cache miss and a hit, for the cache panel
    assert httpx.post(f"{replicas_app}/v1/embeddings", json={"model": INGRESS, "input": ["q", "q"], "input_type": "query"},
                      headers=AUTH, timeout=30).status_code == 200
    wanted = dashboard_series()

    def exported() -> set[str]:
        text = httpx.get(f"{replicas_app}/metrics", timeout=30).text
        return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}

    wait_for(lambda: wanted <= exported(), 60, 1)
    assert wanted - exported() == set()


def dashboard_series() -> set[str]:
    dashboard = json.loads((Path(__file__).parents[3] / "helm/qwen3-serving/dashboards/qwen3-serving.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\bray_[a-z0-9_]+", expr)}


def test_engine_death_in_an_ingress_replica_loses_nothing(replicas_app, measurements):
    # The ingress replica answers 503 from the first failed call on (HAProxy sends those requests
    # to the other replica), lets its other calls finish, and exits.
    kill_under_load(replicas_app, INGRESS, "router", engine_core, measurements,
                    "SIGKILL of the engine core of one of two ingress replicas")


def test_sigkill_of_an_ingress_replica_loses_nothing(replicas_app, measurements):
    # HAProxy sends the requests the dead replica held, and those it refuses, to the other one.
    # Except one whose answer the replica had begun: HAProxy has passed its status line and headers
    # on, so it cannot send the request again, and the client sees the body cut off (1 of 1,882 in
    # one run, 0 in the others). Only this SIGKILL case has shown it; a replica whose engine died
    # exits by itself once its engine calls are done.
    kill_under_load(replicas_app, INGRESS, "router", lambda replica: replica, measurements,
                    "SIGKILL of one of two ingress replicas", cut_answers_allowed=1)
