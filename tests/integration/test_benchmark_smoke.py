"""The benchmarks' smoke modes, which check the harnesses (not the numbers) on the tiny model.

- ``python -m benchmarks.engine_bench --smoke``: real vLLM engines and the reference, in a
  subprocess (vLLM reads its CPU settings from the environment, which the benchmark sets).
- ``python -m benchmarks.http_bench --smoke``: ours, `vllm serve` and the in-process engines, in a
  subprocess with a clean environment (the servers it starts read their CPU settings from theirs).
  Peers that need their own venvs (Infinity, sentence-transformers) are not part of smoke mode.

Both run at once in the module fixture: a start-up is mostly one core importing Python, so the two
share this 2-core machine's start-up time (about 10 min, longer on a busy box).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tests.bench import run_benchmark
from tests.net import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future]:
    tmp = tmp_path_factory.mktemp("bench")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "engine": pool.submit(run_benchmark, "benchmarks.engine_bench", tmp / "engine-smoke.json",
                                  "--models-dir", str(tmp / "models"), timeout_s=1500),
            "http": pool.submit(run_benchmark, "benchmarks.http_bench", tmp / "http-smoke.json", "--no-plots",
                                timeout_s=1500, env=clean_env()),
        }


@pytest.fixture(scope="module")
def report(runs: dict[str, Future]) -> dict[str, Any]:
    return runs["engine"].result()


@pytest.fixture(scope="module")
def http_report(runs: dict[str, Future]) -> dict[str, Any]:
    return runs["http"].result()


# --- the engine benchmark ---------------------------------------------------------------------------------------

def _cases(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for shape in report["shapes"].values() for case in shape["cases"]]


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_every_case_ran_without_failures(report):
    assert [(c["task"], c["name"], c["failures"], c["errors"]) for c in _cases(report)] == [
        (c["task"], c["name"], 0, []) for c in _cases(report)]


def test_every_backend_read_the_whole_workload(report):
    assert all(c["input_tokens"] == c["expected_tokens"] > 0 for c in _cases(report))


def test_throughputs_and_ratios_are_positive(report):
    values = [c["tokens_per_s"] for c in _cases(report)]
    values += [r for shape in report["shapes"].values() for r in shape["ratios"].values()]
    assert values and all(_positive(v) for v in values), values


def test_prefix_cache_is_reported_only_when_enabled(report):
    cached = {c["name"]: c["cached_tokens"] for c in _cases(report) if c["backend"] == "vllm-rerank"}
    assert cached["vllm"] > 0 and cached["vllm-no-prefix-cache"] == 0, cached


def test_report_records_machine_versions_and_workload(report):
    assert report["mode"] == "smoke"
    assert {"platform", "cpu_count", "cpu_model", "ram_gib"} <= report["machine"].keys()
    assert all(report["versions"][k] for k in ("python", "vllm", "torch", "transformers", "serving"))
    lengths = report["shapes"]["tiny"]["workload"]["embed"]["tokens_per_text"]
    assert lengths["min"] <= lengths["median"] <= lengths["p90"] <= lengths["max"]


# --- the HTTP benchmark -----------------------------------------------------------------------------------------

def test_every_smoke_peer_ran_every_point_without_failures(http_report):
    points = {(p["peer"], p["workload"], p["concurrency"]): (p["completed"], p["failed"], p["errors"])
              for p in http_report["points"]}
    expected = {(peer, s["point"].split("@c")[0], int(s["point"].split("@c")[1]))
                for peer in ("ours", "vllm", "inprocess") for s in http_report["settings"]["points"]}
    assert {k: (v[1], v[2]) for k, v in points.items()} == {k: (0, []) for k in expected}


def test_ours_and_vllm_report_the_tokens_the_serving_tokenizer_counts(http_report):
    rows = http_report["token_agreement"]
    assert rows and all(r["per_request_match"].get(peer) for r in rows for peer in ("ours", "vllm", "inprocess")), rows


def test_each_point_records_throughput_latency_and_server_cpu(http_report):
    # The CPU window opens and closes with the timed run inside the load generator, so even a run
    # shorter than a polling interval (a fast CPU, a few requests) finds the server at work.
    for p in http_report["points"]:
        server_cpu = sum(r["cpu_share"] for r in p["cpu"] if r["tree"] in ("server", "in-process"))
        assert p["req_per_s"] > 0 and p["tok_per_s"] > 0 and 0 < p["p50_ms"] <= p["p99_ms"] and server_cpu > 0, p
        assert p["cpu_ms_per_request_outside_engine"] > 0, p


def test_goals_are_judged_against_vllm_and_the_in_process_engines(http_report):
    judged = {g["goal"].split(":")[0]: g["met"] for g in http_report["goals"]}
    for goal in ("small requests (embed-b1)", "batched requests", "rerank", "request path CPU"):
        assert judged[goal] in (True, False), judged


def test_report_records_versions_and_machine(http_report):
    assert http_report["mode"] == "smoke"
    assert all(http_report["versions"][k] for k in ("vllm", "ray", "serving", "load_generator"))
    assert {"cpu_count", "cpus_usable", "load_avg_1m_start"} <= http_report["machine"].keys()
