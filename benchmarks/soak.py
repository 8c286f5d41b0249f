"""Soak: minutes of mixed embed/rerank load at saturation against `qwen3-serve serve`.

Starts the server itself (tiny models, CPU), drives it with concurrent httpx clients, samples the
resident memory of every process of the server's tree (driver, Ray's GCS/raylet/proxy, the router
and model replicas, vLLM engine cores) and reports growth after warm-up and every non-200 answer.
A benchmark, not a test: it writes JSON to benchmarks/results/ and asserts nothing.

    python -m benchmarks.soak [--duration-s 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml

from benchmarks.engine_bench import machine_info, versions
from benchmarks.procs import sample_rss, wait_ready
from benchmarks.workloads import stdlib_snippets

RESULTS = Path(__file__).parent / "results"


def app_config(models: dict[str, Path], port: int, kv_cache_gib: float) -> dict[str, Any]:
    # A small KV cache is fully touched during warm-up, so later growth is not pages of it being
    # committed for the first time (prefix caching cycles the reranker through every block).
    engine = {"dtype": "float32", "max_model_len": 1024, "cpu_kvcache_space_gib": kv_cache_gib,
              "cpu_omp_threads_bind": "0-1"}
    # Bounded queues: under saturation the documented answer is 429, never a lost request.
    scaling = {"max_ongoing_requests": 16, "max_queued_requests": 64}
    cpu = {"accelerator": "cpu", "cpus_per_shard": 0.5}
    return {
        "models": [
            {"name": "soak-embed", "kind": "embed", "engine": {"model": str(models["embedding"])} | engine,
             "scaling": scaling, "resources": cpu},
            {"name": "soak-rerank", "kind": "rerank", "scaling": scaling, "resources": cpu,
             "engine": {"model": str(models["reranker"]), "block_size": 32} | engine},
        ],
        "http": {"host": "127.0.0.1", "port": port},
        "fallback_to_tiny_models": False,
    }


async def drive(url: str, texts: list[str], duration_s: float, concurrency: int, seed: int) -> dict[str, Any]:
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    deadline = time.monotonic() + duration_s

    async def worker(i: int) -> None:
        rng = random.Random(seed + i)
        async with httpx.AsyncClient(timeout=300) as client:
            while time.monotonic() < deadline:
                if rng.random() < 0.6:
                    path, body = "/v1/embeddings", {"model": "soak-embed",
                                                    "input": rng.sample(texts, rng.randint(1, 48)),
                                                    "dimensions": rng.choice([None, 64, 128])}
                else:
                    path, body = "/v1/rerank", {"model": "soak-rerank", "query": rng.choice(texts)[:200],
                                                "documents": rng.sample(texts, rng.randint(2, 40))}
                started = time.perf_counter()
                try:
                    response = await client.post(url + path, json=body)
                    key = f"{path} {response.status_code}"
                    if response.status_code == 429:
                        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    elif response.status_code != 200:
                        errors[f"{response.status_code}: {response.text[:200]}"] += 1
                except httpx.HTTPError as exc:
                    key = f"{path} {type(exc).__name__}"
                    errors[key] += 1
                counts[key] += 1
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"answers": dict(counts), "errors": dict(errors),
            "latency_s": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99))}
            if latencies else {}}


def memory_report(samples: list[tuple[float, dict[int, tuple[str, int]]]], warmup_s: float) -> list[dict[str, Any]]:
    """Per process alive from the end of warm-up to the end: RSS then and at the end, and the slope."""
    start = next((i for i, (t, _) in enumerate(samples) if t >= warmup_s), 0)
    steady = samples[start:]
    report = []
    for pid, (label, first) in steady[0][1].items():
        series = [(t, s[pid][1]) for t, s in steady if pid in s]
        if len(series) < 2 or pid not in steady[-1][1]:
            continue
        ts, rss = np.array([t for t, _ in series]), np.array([r for _, r in series], dtype=float)
        slope = float(np.polyfit(ts / 60, rss / 2**20, 1)[0])
        half = len(ts) // 2  # the second half's slope says whether growth is levelling off
        late = float(np.polyfit(ts[half:] / 60, rss[half:] / 2**20, 1)[0]) if len(ts) - half >= 2 else slope
        report.append({"pid": pid, "process": label, "rss_mib_start": round(first / 2**20, 1),
                       "rss_mib_end": round(rss[-1] / 2**20, 1), "growth_mib": round((rss[-1] - first) / 2**20, 1),
                       "slope_mib_per_min": round(slope, 2), "second_half_slope_mib_per_min": round(late, 2),
                       "series_s_mib": [[round(t, 1), round(r / 2**20, 1)] for t, r in series]})
    return sorted(report, key=lambda r: -r["rss_mib_end"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=300)
    parser.add_argument("--warmup-s", type=float, default=60, help="excluded from the memory growth")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every-s", type=float, default=5)
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="CPU KV cache per engine")
    parser.add_argument("--models-dir", default=".tiny-models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from serving.models.tiny import ensure_tiny_models

    models = ensure_tiny_models(Path(args.models_dir).resolve())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    texts = [s.text[:2000] for s in stdlib_snippets()]
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    (workdir / "app.yaml").write_text(yaml.safe_dump(app_config(models, port, args.kv_cache_gib)))
    log = open(workdir / "serve.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "QWEN3_SERVE_", "RAY_"))}
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(workdir / "app.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    samples: list[tuple[float, dict[int, tuple[str, int]]]] = []
    try:
        wait_ready(url + "/ready", proc)
        root = psutil.Process(proc.pid)
        started = time.monotonic()

        async def run() -> dict[str, Any]:
            load = asyncio.create_task(drive(url, texts, args.duration_s, args.concurrency, args.seed))
            while not load.done():
                samples.append((time.monotonic() - started, await asyncio.to_thread(sample_rss, root)))
                await asyncio.wait([load], timeout=args.sample_every_s)
            samples.append((time.monotonic() - started, sample_rss(root)))
            return load.result()

        traffic = asyncio.run(run())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    memory = memory_report(samples, args.warmup_s)
    non_200 = {k: v for k, v in traffic["answers"].items() if not k.endswith(" 200")}
    result = {
        "benchmark": "soak", "created": datetime.now(timezone.utc).isoformat(), "machine": machine_info(),
        "versions": versions(), "settings": vars(args), "traffic": traffic, "non_200": non_200,
        "undocumented_non_200": {k: v for k, v in non_200.items() if not k.endswith(" 429")},
        "memory": memory, "total_rss_growth_mib": round(sum(m["growth_mib"] for m in memory), 1),
        "server_exit_code": proc.returncode,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("non_200", "undocumented_non_200", "total_rss_growth_mib")}))
    for m in memory:
        print(f"{m['process'][:50]:50s} {m['rss_mib_start']:8.1f} -> {m['rss_mib_end']:8.1f} MiB "
              f"({m['slope_mib_per_min']:+.2f} MiB/min, second half {m['second_half_slope_mib_per_min']:+.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
