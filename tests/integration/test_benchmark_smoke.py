"""The engine benchmark's smoke mode: real vLLM engines and the reference on the tiny model.

Runs ``python -m benchmarks.engine_bench --smoke`` once, in a subprocess (vLLM reads its CPU
settings from the environment, which the benchmark sets), and checks the JSON it writes.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.bench import run_benchmark

# The first test also pays for the benchmark run in the module fixture (~4 min, longer on a busy box).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    return run_benchmark("benchmarks.engine_bench", tmp / "smoke.json", "--models-dir", str(tmp / "models"),
                         timeout_s=1200)


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
