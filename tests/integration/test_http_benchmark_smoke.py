"""The HTTP benchmark's smoke mode: ours, `vllm serve` and the in-process engines on the tiny model.

Runs ``python -m benchmarks.http_bench --smoke`` once, in a subprocess with a clean environment
(the servers it starts read their CPU settings from theirs), and checks the JSON it writes.
Peers that need their own venvs (Infinity, sentence-transformers) are not part of smoke mode.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench import run_benchmark
from tests.net import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("http-bench")
    return run_benchmark("benchmarks.http_bench", tmp / "smoke.json", "--no-plots", timeout_s=1400, env=clean_env())


def test_every_smoke_peer_ran_every_point_without_failures(report):
    points = {(p["peer"], p["workload"], p["concurrency"]): (p["completed"], p["failed"], p["errors"])
              for p in report["points"]}
    expected = {(peer, s["point"].split("@c")[0], int(s["point"].split("@c")[1]))
                for peer in ("ours", "vllm", "inprocess") for s in report["settings"]["points"]}
    assert {k: (v[1], v[2]) for k, v in points.items()} == {k: (0, []) for k in expected}


def test_ours_and_vllm_report_the_tokens_the_serving_tokenizer_counts(report):
    rows = report["token_agreement"]
    assert rows and all(r["per_request_match"].get(peer) for r in rows for peer in ("ours", "vllm", "inprocess")), rows


def test_each_point_records_throughput_latency_and_server_cpu(report):
    # The CPU window opens and closes with the timed run inside the load generator, so even a run
    # shorter than a polling interval (a fast CPU, a few requests) finds the server at work.
    for p in report["points"]:
        server_cpu = sum(r["cpu_share"] for r in p["cpu"] if r["tree"] in ("server", "in-process"))
        assert p["req_per_s"] > 0 and p["tok_per_s"] > 0 and 0 < p["p50_ms"] <= p["p99_ms"] and server_cpu > 0, p
        assert p["cpu_ms_per_request_outside_worker"] > 0, p


def test_goals_are_judged_against_vllm_and_the_in_process_engines(report):
    judged = {g["goal"].split(":")[0]: g["met"] for g in report["goals"]}
    for goal in ("small requests (embed-b1)", "batched requests", "rerank", "request path CPU"):
        assert judged[goal] in (True, False), judged


def test_report_records_versions_and_machine(report):
    assert report["mode"] == "smoke"
    assert all(report["versions"][k] for k in ("vllm", "ray", "serving", "load_generator"))
    assert {"cpu_count", "cpus_usable", "load_avg_1m_start"} <= report["machine"].keys()
