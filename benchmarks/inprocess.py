"""The ceiling: EmbedEngine / RerankEngine driven in-process with the same requests and concurrency.

Run by the HTTP benchmark as a subprocess of our venv, so the engine's memory is released when it
exits; reads a plan (model, engine config, points) as JSON and writes one measurement per point,
in the same shape as the load generator's. Each point: the first request `warmups` times (as
`vllm bench serve` warms up), then every request with at most `concurrency` in flight.

    python -m benchmarks.inprocess PLAN.json OUT.json
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.procs import CpuWindow


async def run_point(call: Any, rows: list[list[str]], concurrency: int, warmups: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(row: list[str]) -> tuple[float, int, str | None]:
        async with gate:
            start = time.perf_counter()
            try:
                tokens = await call(row)
            except Exception as exc:  # counted, not raised
                return time.perf_counter() - start, 0, f"{type(exc).__name__}: {exc}"
            return time.perf_counter() - start, tokens, None

    await asyncio.gather(*(one(rows[0]) for _ in range(warmups)))
    window = CpuWindow({"in-process": os.getpid()})
    window.start()
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(row) for row in rows))
    duration = time.perf_counter() - start
    cpu = window.stop()
    ok = [(latency, tokens) for latency, tokens, error in outcomes if error is None]
    latencies = np.array([latency for latency, _ in ok]) * 1000
    return {
        "completed": len(ok), "duration": duration, "request_throughput": len(ok) / duration,
        "input_sequence_throughput": sum(len(r) for r, (_, _, e) in zip(rows, outcomes) if e is None) / duration,
        "total_token_throughput": sum(t for _, t in ok) / duration, "total_input_tokens": sum(t for _, t in ok),
        "p50_e2el_ms": float(np.percentile(latencies, 50)) if ok else None,
        "p99_e2el_ms": float(np.percentile(latencies, 99)) if ok else None,
        "mean_e2el_ms": float(latencies.mean()) if ok else None,
        "input_lens": [t for _, t, _ in outcomes], "errors": [e for _, _, e in outcomes], "cpu": cpu,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


async def main(plan: dict[str, Any]) -> list[dict[str, Any]]:
    if plan["task"] == "embed":
        from serving.config import EmbedModelConfig
        from serving.engines.embed import EmbedEngine

        engine: Any = EmbedEngine(EmbedModelConfig(**plan["engine"]))

        async def call(row: list[str]) -> int:
            return (await engine.embed(row)).prompt_tokens
    else:
        from serving.config import RerankModelConfig
        from serving.engines.rerank import RerankEngine

        engine = RerankEngine(RerankModelConfig(**plan["engine"]))

        async def call(row: list[str]) -> int:
            return (await engine.rerank(row[0], row[1:])).prompt_tokens
    results = []
    try:
        for point in plan["points"]:
            lines = Path(point["dataset"]).read_text().splitlines()
            rows = [json.loads(line)["prompt"] for line in lines][:point["requests"]]
            results.append(await run_point(call, rows, point["concurrency"], point["warmups"]))
    finally:
        engine.shutdown()
    return results


if __name__ == "__main__":  # vLLM spawns engine-core processes that re-import this module
    plan_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    out_path.write_text(json.dumps(asyncio.run(main(json.loads(plan_path.read_text())))))
