"""A tenant's quota with two ingress replicas: each keeps half of it, so the cluster admits at most
the quota, and all of it when HAProxy spreads the requests over both."""

import time

import httpx
import pytest

from tests.integration.replicas.conftest import INGRESS, PACED

pytestmark = [pytest.mark.slow]


def test_two_ingress_replicas_admit_the_tenants_quota_and_no_more(replicas_app, measurements):
    rate, key = PACED["requests_per_s"], PACED["keys"][0]
    depth = 2 * max(1, rate / 2 * PACED["burst_s"])  # each replica's bucket holds its half's burst
    body = {"model": INGRESS, "input": "paced"}
    statuses, waits = [], []
    started = time.monotonic()
    while time.monotonic() - started < 6:
        # a connection per request, as many clients do: HAProxy balances each one
        response = httpx.post(f"{replicas_app}/v1/embeddings", json=body, timeout=60,
                              headers={"Authorization": f"Bearer {key}", "Connection": "close"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "quota_exceeded"
            waits.append(int(response.headers["retry-after-ms"]))
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    measurements["quota of 4 req/s over two ingress replicas"] = (
        f"{admitted} of {len(statuses)} admitted in {elapsed:.1f} s: {admitted / (rate * elapsed + depth):.2f} of the "
        f"quota and burst")
    assert set(statuses) == {200, 429}
    assert admitted <= rate * elapsed + depth  # never more than the quota
    assert admitted >= 0.8 * rate * elapsed  # one replica alone would admit half
    assert max(waits) <= 1000 / (rate / 2)  # a replica's next token is at most one interval away
