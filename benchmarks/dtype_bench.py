"""The same embed engine in float32 and in bfloat16 on this CPU, side by side in one run.

    python -m benchmarks.dtype_bench                  # 0.6B-shaped model; a few minutes on 2 cores
    python -m benchmarks.dtype_bench --shape tiny

What `dtype: auto` chooses on a CPU rests on this ratio (serving.engines.startup.resolved_dtype):
bf16 where the CPU has it natively, else float32. Each variant runs in a process of its own, on the
engine benchmark's embed requests (real text, up to 512 tokens); throughput is input tokens per
second after a warm-up. A CPU with native bf16 can also be run with oneDNN held to AVX2
(`ONEDNN_MAX_CPU_ISA=AVX2`, the `--avx2` variants): oneDNN's matrix products then run as on a CPU
without AVX-512 or AMX, where bf16 is emulated. Only oneDNN obeys that variable, so it approximates
such a CPU rather than being one. Results go to ``benchmarks/results/dtype-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.engine_bench import (
    FULL,
    MODELS_DIR,
    RESULTS_DIR,
    SHAPES,
    ensure_models,
    machine_info,
    make_workload,
    versions,
)

VARIANTS = {  # name: (dtype, extra environment)
    "float32": ("float32", {}),
    "bfloat16": ("bfloat16", {}),
    "float32-onednn-avx2": ("float32", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "bfloat16-onednn-avx2": ("bfloat16", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
}


async def measure(shape: str, dtype: str, requests: int) -> dict[str, Any]:
    """One engine in ``dtype``: tokens/s over the timed requests, and the vectors of the first one."""
    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine

    settings = replace(FULL, workload=replace(FULL.workload, embed_requests=requests, rerank_requests=0))
    paths = ensure_models(shape, MODELS_DIR)
    workload = make_workload(paths, settings)
    engine = EmbedEngine(EmbedModelConfig(
        model=str(paths["embedding"]), dtype=dtype, max_model_len=settings.max_model_len,
        cpu_kvcache_space_gib=settings.cpu_kvcache_space_gib, cpu_omp_threads_bind=settings.cpu_omp_threads_bind))
    try:
        for request in workload.warmup_embed:
            await engine.embed(list(request.texts))
        start = time.perf_counter()
        first = None
        for request in workload.embed:
            result = await engine.embed(list(request.texts))
            first = first if first is not None else np.asarray(result.embeddings, dtype=np.float32)
        elapsed = time.perf_counter() - start
    finally:
        engine.shutdown()
    tokens = sum(sum(r.token_counts) for r in workload.embed)
    return {"dtype": dtype, "requests": len(workload.embed), "texts": sum(len(r.texts) for r in workload.embed),
            "tokens": tokens, "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 1),
            "first_request_vectors": first.tolist()}


def run_variant(name: str, shape: str, requests: int) -> dict[str, Any]:
    dtype, extra = VARIANTS[name]
    out = subprocess.run([sys.executable, "-m", "benchmarks.dtype_bench", "--one", dtype, "--shape", shape,
                          "--requests", str(requests)], env=os.environ | extra, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"variant": name, "error": out.stderr[-3000:]}
    return {"variant": name, "env": extra} | json.loads(out.stdout.strip().splitlines()[-1])


def cosines(a: list[list[float]], b: list[list[float]]) -> list[float]:
    x, y = np.asarray(a), np.asarray(b)
    return (np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="0.6b-shaped")
    parser.add_argument("--requests", type=int, default=8, help="timed requests of 32 texts per variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)  # a variant's process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(measure(args.shape, args.one, args.requests))))
        return 0

    from serving.engines.startup import cpu_has_native_bf16, resolved_dtype

    results = [run_variant(name, args.shape, args.requests) for name in args.variants]
    by_name = {r["variant"]: r for r in results if "error" not in r}
    ratios = {}
    for left, right in (("bfloat16", "float32"), ("bfloat16-onednn-avx2", "float32-onednn-avx2")):
        if left in by_name and right in by_name:
            ratios[f"{left} / {right} tokens/s"] = round(by_name[left]["tokens_per_s"] / by_name[right]["tokens_per_s"], 3)
    if "bfloat16" in by_name and "float32" in by_name:
        cos = cosines(by_name["bfloat16"]["first_request_vectors"], by_name["float32"]["first_request_vectors"])
        ratios["min cosine bf16 vs fp32 (first request)"] = round(min(cos), 5)
    for r in results:
        r.pop("first_request_vectors", None)
    report = {"benchmark": "dtype", "shape": args.shape, "created": datetime.now(timezone.utc).isoformat(),
              "machine": machine_info() | {"native_bf16": cpu_has_native_bf16()},
              "auto_resolves_to": resolved_dtype("auto"), "versions": versions(), "results": results,
              "ratios": ratios}
    out = args.out or RESULTS_DIR / f"dtype-{args.shape}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for r in results:
        print(r["variant"], r.get("tokens_per_s", r.get("error", "")[-300:]))
    print(json.dumps(ratios, indent=1))
    print(f"wrote {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
