"""Bulk encoding throughput: `qwen3-serve encode`'s Ray Data pipeline against the in-process
engine on the same passages, in one run.

    python -m benchmarks.bulk_bench            # 0.6B-shaped model, 2,000 passages; ~15 min on 2 cores
    python -m benchmarks.bulk_bench --smoke    # tiny model, 64 passages

Backends (same passages, same engine settings):

- ``engine``: ``EmbedEngine.embed`` in this process, every passage in one call (vLLM batches them
  as it likes: the engine's own best), after a warm-up call on other passages.
- ``bulk``: the whole job (``serving.batch.job.run_job``): JSON Lines read, Ray Data checkpoint
  filter, one engine actor (async UDF, batches in flight), Parquet write with Ray's two-phase
  checkpoint commit. Timed from the moment its engine was ready to the end of the job (engine
  start-up is the same cost for both and excluded); the end-to-end time, start-up included, is
  recorded too.

The ratio bulk/engine in tokens/s is the overhead of Ray Data, Parquet I/O and checkpointing.
Results, with the machine and versions, go to ``benchmarks/results/bulk-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.engine_bench import MODELS_DIR, RESULTS_DIR, SHAPES, ensure_models, machine_info, versions
from benchmarks.workloads import STDLIB_MODULES, clip_to_tokens, length_stats, stdlib_snippets

logger = logging.getLogger("benchmarks.bulk_bench")
GOAL_RATIO = 0.9


@dataclass(frozen=True)
class BulkBenchSettings:
    shape: str = "0.6b-shaped"
    passages: int = 2000
    warmup_passages: int = 32
    max_doc_tokens: int = 512
    dtype: str = "bfloat16"  # both sides; ~4x faster than fp32 on this CPU (avx512_bf16)
    max_model_len: int = 1024
    cpu_kvcache_space_gib: int = 2
    cpu_omp_threads_bind: str = "0-1"
    batch_size: int = 256
    batches_in_flight: int = 4
    seed: int = 0


SMOKE = BulkBenchSettings(shape="tiny", passages=64, warmup_passages=8, batch_size=16)


def passages(settings: BulkBenchSettings, tokenizer: Any) -> tuple[list[str], list[str]]:
    """(timed passages, warm-up passages): docstrings and source of the standard library."""
    pool = [s.text for s in stdlib_snippets(STDLIB_MODULES)]
    rng = random.Random(settings.seed)
    need = settings.passages + settings.warmup_passages
    if need > len(pool):
        raise ValueError(f"the corpus has {len(pool)} snippets, the benchmark needs {need}")
    chosen = clip_to_tokens([pool[i] for i in rng.sample(range(len(pool)), need)], tokenizer,
                            settings.max_doc_tokens)
    return chosen[settings.warmup_passages:], chosen[:settings.warmup_passages]


def model_entry(path: Path, settings: BulkBenchSettings):
    from serving.config import EmbedDeploymentConfig

    return EmbedDeploymentConfig.model_validate({
        "name": f"bench-{settings.shape}", "resources": {"accelerator": "cpu", "cpus_per_shard": 1},
        "engine": {"model": str(path), "dtype": settings.dtype, "max_model_len": settings.max_model_len,
                   "cpu_kvcache_space_gib": settings.cpu_kvcache_space_gib,
                   "cpu_omp_threads_bind": settings.cpu_omp_threads_bind}})


def _case(name: str, rows: int, tokens: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "rows": rows, "tokens": tokens, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 2), "tokens_per_s": round(tokens / seconds, 1), **extra}


async def run_engine(model, texts: list[str], warmup: list[str]) -> dict[str, Any]:
    from serving.engines.embed import EmbedEngine

    started = time.perf_counter()
    engine = EmbedEngine(model.engine)
    startup_s = time.perf_counter() - started
    try:
        await engine.embed(warmup)
        t0 = time.perf_counter()
        result = await engine.embed(texts)
        seconds = time.perf_counter() - t0
    finally:
        engine.shutdown()
        gc.collect()
    return _case("engine", len(texts), result.prompt_tokens, seconds, engine_startup_s=round(startup_s, 1))


def run_bulk(model, texts: list[str], settings: BulkBenchSettings, work_dir: Path) -> dict[str, Any]:
    import ray

    from serving.batch.job import init_ray, run_job
    from serving.config import BulkJobConfig

    corpus = work_dir / "passages.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i:06d}", "text": t}) + "\n" for i, t in enumerate(texts)))
    job = BulkJobConfig(kind="encode", input=str(corpus), output=str(work_dir / "out"),
                        batch_size=settings.batch_size, batches_in_flight=settings.batches_in_flight)
    init_ray(job, model)
    try:
        summary, _ = run_job(job, model, progress=False)
    finally:
        ray.shutdown()
    if summary.rows_failed or summary.rows_ok != len(texts):
        raise RuntimeError(f"bulk job did not encode every passage: {summary.line()}")
    steady_s = summary.wall_s - (summary.engine_ready_s or 0.0)
    return _case("bulk", summary.rows_ok, summary.tokens, steady_s, end_to_end_s=summary.wall_s,
                 engine_ready_s=summary.engine_ready_s,
                 end_to_end_tokens_per_s=round(summary.tokens / summary.wall_s, 1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, 64 passages")
    p.add_argument("--passages", type=int, default=None, help="passages to encode (default: 2000; smoke: 64)")
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/bulk-*.json)")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = SMOKE if args.smoke else BulkBenchSettings()
    if args.passages:
        settings = BulkBenchSettings(**(asdict(settings) | {"passages": args.passages}))
    from serving.engines.base import load_tokenizer

    paths = ensure_models(settings.shape, args.models_dir)
    model = model_entry(paths["embedding"], settings)
    texts, warmup = passages(settings, load_tokenizer(str(paths["embedding"])))
    engine = asyncio.run(run_engine(model, texts, warmup))
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        bulk = run_bulk(model, texts, settings, Path(tmp))
    if bulk["tokens"] != engine["tokens"]:
        raise RuntimeError(f"the backends read different tokens: bulk {bulk['tokens']}, engine {engine['tokens']}")
    ratio = round(bulk["tokens_per_s"] / engine["tokens_per_s"], 3)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "benchmark": "bulk", "mode": "smoke" if args.smoke else "full", "created": stamp,
        "machine": machine_info(), "versions": versions(), "settings": asdict(settings),
        "model_shape": asdict(SHAPES[settings.shape]),
        "workload": {"passages": len(texts), "tokens": engine["tokens"],
                     "chars_per_passage": length_stats([len(t) for t in texts])},
        "cases": [engine, bulk], "ratio_bulk_to_engine": ratio, "goal_ratio": GOAL_RATIO,
        "goal_met": ratio >= GOAL_RATIO,
    }
    out = args.out or RESULTS_DIR / f"bulk-{settings.shape}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for case in (engine, bulk):
        print(f"{case['name']:>6}: {case['rows_per_s']:,.1f} rows/s, {case['tokens_per_s']:,.0f} tokens/s "
              f"({case['rows']:,} rows, {case['tokens']:,} tokens, {case['seconds']:.1f} s)")
    print(f"bulk / engine: {ratio:.3f} (goal >= {GOAL_RATIO}); {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
