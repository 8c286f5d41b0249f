"""Faults on the live app with one replica: SIGKILL the TP=2 model deployment's only replica while
a caller keeps requests in flight. Nothing hangs, no caller gets a wrong answer, /ready tracks the
outage, no engine process outlives its replica, and Ray's replacement serves again. Runs last in
the package (it disrupts the app). Losing one of two replicas, ingress or deployment, is
tests/integration/replicas/."""

import os
import signal
import time
from collections import Counter

import httpx
import numpy as np
import psutil
import pytest

from tests.faults import Callers, replica_processes
from tests.net import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.disruptive]

QUERY = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity attracts bodies.", "def f(): pass"]


def model_state(base_url: str, name: str) -> str | None:
    """The model's state in /ready; None while the ingress does not answer within 10 s (the proxy
    holds requests while no router replica exists)."""
    try:
        return httpx.get(f"{base_url}/ready", timeout=10).json()["models"].get(name)
    except (httpx.HTTPError, ValueError):
        return None


def replica_process(deployment: str) -> psutil.Process:
    found = replica_processes(deployment)
    assert len(found) == 1, f"expected one replica process of {deployment}, found {len(found)}"
    return found[0]


def kill_and_recover(base_url: str, deployment: str, model: str, measurements: dict) -> dict:
    process = replica_process(deployment)
    engine_processes = process.children(recursive=True)
    killed_at = time.monotonic()
    os.kill(process.pid, signal.SIGKILL)
    went_down = wait_for(lambda: model_state(base_url, model) != "ready", 30, 0.2)
    recovered = wait_for(lambda: model_state(base_url, model) == "ready", 600, 1)
    recovery_s = time.monotonic() - killed_at
    measurements[f"SIGKILL of the {deployment} replica: recovered after (s)"] = round(recovery_s, 1)
    orphans = [p.pid for p in engine_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return {"went_down": went_down, "recovered": recovered, "orphans": orphans}


def test_killing_a_model_replica_mid_request(base_url, auth, measurements):
    # tiny-embed-tp2 is `placement: deployment`: its replica is a process of its own. Its queue bound
    # is 1 running + 1 queued (for the 429 test): while the replica is down, a request waiting for the
    # replacement fills it, and the caller's next ones are told to retry (429 with Retry-After).
    def send(client, caller=0):
        return client.post(f"{base_url}/v1/embeddings", headers=auth,
                           json={"model": "tiny-embed-tp2", "input": DOCS})

    expected = np.array([d["embedding"] for d in send(httpx.Client(timeout=60)).json()["data"]])
    with Callers(send, n=1) as callers:
        time.sleep(2)  # requests in flight
        outcome = kill_and_recover(base_url, "tiny-embed-tp2", "tiny-embed-tp2", measurements)
        time.sleep(2)  # and some after recovery
    statuses = callers.statuses
    measurements["SIGKILL of the tiny-embed-tp2 replica: answers during the test"] = dict(Counter(statuses))
    assert outcome["went_down"] and outcome["recovered"], outcome
    assert not outcome["orphans"], f"engine processes of the killed replica still run: {outcome['orphans']}"
    assert set(statuses) <= {200, 429, 503}, sorted(set(map(str, statuses)))
    assert all(body["error"]["code"] == "model_unavailable" for _, s, body in callers.results if s == 503)
    assert all(body["error"]["code"] == "overloaded" for _, s, body in callers.results if s == 429)
    for _, status, body in callers.results:
        if status == 200:
            np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-6)
    assert send(httpx.Client(timeout=60)).status_code == 200
