"""Tenants under load (issue 24): lanes under a bulk flood, the query cache on a Zipf stream, quotas.

    python -m benchmarks.tenants_bench                      # tiny model, float32, 20 s per phase
    python -m benchmarks.tenants_bench --shape 0.6b-shaped --seconds 60

One server of ours runs every phase, with two copies of the embedding model in its ingress: `embed`
(no cache) and `embed-cached` (`cache: {max_bytes: 256 MiB}`, queries), and these tenants:
`search` (priority 0), `bulk` (priority 10), `bulk-same-lane` (priority 0), `limited` (5 requests/s)
and `neighbour` (no quota).

- **lanes**: `search` sends one-query requests at a steady rate (open loop) to `embed`, alone, then
  beside a flood of 32-input requests at concurrency 32 from `bulk` (its own lane), then from
  `bulk-same-lane` (the same lane: no lanes). Every query is new, so nothing is cached. Reported:
  the queries' p50 and p99, p99 under the flood / alone (the goal: <= 2), and the flood's inputs/s.
- **cache**: a Zipf(1.1) stream over 20,000 distinct real-text queries (sentences of the Python
  standard library's docstrings and comments), one query per request at concurrency 8, to `embed`
  and to `embed-cached` (the same stream; the goal: >= 2x the req/s). Reported: req/s, the hit
  ratio (the server's counters), the cache's bytes; and `vllm serve` on the same stream with
  `--vllm` (sent the instruction-formatted query text, so it reads the same tokens).
- **quotas**: `neighbour` at concurrency 4 alone, then beside `limited` sending 20 requests/s (4x
  its quota): the neighbour's req/s and p50 in both, and `limited`'s admitted and refused requests
  per second; then beside `limited` retrying at once at concurrency 4, ignoring Retry-After.

Machine noise: run it alone; phases of one run compare with each other. JSON goes to
benchmarks/results/tenants-<shape>-<stamp>.json.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from benchmarks.engine_bench import MODELS_DIR, RESULTS_DIR, SHAPES, ensure_models, machine_info, versions
from benchmarks.procs import clean_env, stop, wait_ready
from benchmarks.venvs import REPO_ROOT, plot
from serving.ports import reserve_port

logger = logging.getLogger("tenants_bench")
KEYS = {"search": "k-search", "bulk": "k-bulk", "bulk-same-lane": "k-bulk-same-lane", "limited": "k-limited",
        "neighbour": "k-neighbour"}
CACHE_BYTES = 256 << 20
URGENT_STEP_MS = 50.0  # `embed`'s lane scheduler, set explicitly (the config's default today)


def app_config(models: dict[str, Path], port: int, dtype: str, enforce_eager: bool,
               max_num_batched_tokens: int | None = None, urgent_step_ms: float | None = None) -> dict[str, Any]:
    engine = {"model": str(models["embedding"]), "dtype": dtype, "max_model_len": 1024, "cpu_kvcache_space_gib": 1,
              "cpu_omp_threads_bind": "0-1", "enforce_eager": enforce_eager}
    engine["urgent_step_ms"] = urgent_step_ms or URGENT_STEP_MS
    if max_num_batched_tokens:
        engine["max_num_batched_tokens"] = max_num_batched_tokens
    scaling = {"max_ongoing_requests": 64, "max_queued_requests": 1024}
    cpu = {"accelerator": "cpu", "cpus_per_shard": 0.5}
    return {
        "models": [{"name": "embed", "kind": "embed", "engine": engine, "scaling": scaling, "resources": cpu},
                   {"name": "embed-vllm-steps", "kind": "embed", "engine": engine | {"urgent_step_ms": None},
                    "scaling": scaling, "resources": cpu},
                   {"name": "embed-cached", "kind": "embed", "engine": engine, "scaling": scaling, "resources": cpu,
                    "cache": {"max_bytes": CACHE_BYTES}}],
        "tenants": [{"name": "search", "keys": [KEYS["search"]]},
                    {"name": "bulk", "keys": [KEYS["bulk"]], "priority": 10},
                    {"name": "bulk-same-lane", "keys": [KEYS["bulk-same-lane"]]},
                    {"name": "limited", "keys": [KEYS["limited"]], "requests_per_s": 5},
                    {"name": "neighbour", "keys": [KEYS["neighbour"]]}],
        "http": {"host": "127.0.0.1", "port": port}, "fallback_to_tiny_models": False,
    }


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct sentences (20-160 characters) of the standard library's docstrings and
    comments, in a seeded order: real text, as search queries are."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, None] = {}
    for path in sorted(lib.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for part in re.split(r"(?<=[.?!])\s+", " ".join(doc.split())):
                    if 20 <= len(part) <= 160:
                        found.setdefault(part)
        for line in source.splitlines():
            line = line.strip()
            if line.startswith("# ") and 20 <= len(line) <= 162:
                found.setdefault(line[2:])
        if len(found) >= 3 * count:
            break
    pool = list(found)
    if len(pool) < count:
        raise RuntimeError(f"only {len(pool)} distinct sentences in {lib}")
    return random.Random(seed).sample(pool, count)


def zipf_stream(n_distinct: int, length: int, s: float = 1.1, seed: int = 0) -> list[int]:
    """Indices into n_distinct items, rank r drawn with probability proportional to 1 / r^s."""
    weights = 1.0 / np.arange(1, n_distinct + 1) ** s
    rng = np.random.default_rng(seed)
    return rng.choice(n_distinct, size=length, p=weights / weights.sum()).tolist()


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


class Load:
    """Requests over one HTTP/1.1 connection pool; latencies in seconds per status."""

    def __init__(self, client: httpx.AsyncClient, path: str = "/v1/embeddings"):
        self.client, self.path = client, path

    async def post(self, tenant: str, body: dict[str, Any]) -> tuple[int, float]:
        started = time.perf_counter()
        response = await self.client.post(self.path, json=body, headers={"Authorization": f"Bearer {KEYS[tenant]}"})
        await response.aread()
        if response.status_code not in (200, 429):
            raise RuntimeError(f"{tenant}: {response.status_code} {response.text[:200]}")
        return response.status_code, time.perf_counter() - started

    async def closed_loop(self, tenant: str, bodies, concurrency: int, seconds: float) -> dict[str, Any]:
        """``concurrency`` callers, each sending the next body as soon as its last answer came."""
        results: list[tuple[int, float]] = []
        deadline = time.monotonic() + seconds
        source = iter(bodies)

        async def caller():
            while time.monotonic() < deadline:
                body = next(source, None)
                if body is None:  # a finite stream is done
                    return
                results.append(await self.post(tenant, body))

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return summary(results, time.monotonic() - started)

    async def open_loop(self, tenant: str, bodies, rate: float, seconds: float) -> dict[str, Any]:
        """One request every 1/rate seconds, whatever the answers do."""
        tasks = []
        started = time.monotonic()
        source = iter(bodies)
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(self.post(tenant, next(source))))
        results = await asyncio.gather(*tasks)
        return summary(results, time.monotonic() - started)


def summary(results: list[tuple[int, float]], seconds: float) -> dict[str, Any]:
    ok = [t for status, t in results if status == 200]
    return {"requests": len(results), "ok": len(ok), "refused": len(results) - len(ok), "seconds": round(seconds, 2),
            "ok_per_s": round(len(ok) / seconds, 2), "refused_per_s": round((len(results) - len(ok)) / seconds, 2),
            "p50_ms": pct(ok, 50), "p90_ms": pct(ok, 90), "p99_ms": pct(ok, 99), "max_ms": pct(ok, 100), "mean_ms": round(float(np.mean(ok)) * 1000, 1) if ok else None}


async def cache_counts(client: httpx.AsyncClient, inputs: float = 0) -> dict[str, float]:
    """The cache series of `embed-cached` once hits + misses reach ``inputs`` (counts reach /metrics
    seconds late) and two readings a few seconds apart agree."""
    async def read() -> dict[str, float]:
        text = (await client.get("/metrics")).text
        out = {}
        for name in ("hits_total", "misses_total", "evictions_total", "bytes", "entries"):
            match = re.search(rf'^ray_qwen3_cache_{name}\{{[^}}]*model="embed-cached"[^}}]*\}} (\S+)$', text, re.MULTILINE)
            out[name] = float(match.group(1)) if match else 0.0
        return out

    last = await read()
    for _ in range(40):
        await asyncio.sleep(3)
        now = await read()
        if now == last and now["hits_total"] + now["misses_total"] >= inputs:
            return now
        last = now
    raise RuntimeError(f"the cache's counts did not reach {inputs} inputs: {last}")


async def run_phases(base_url: str, args: argparse.Namespace, queries: list[str], stream: list[int]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        load = Load(client)
        fresh = iter(f"query {i}: {q}" for i, q in enumerate(queries * 100))
        def one(model: str = "embed"):
            return ({"model": model, "input": [next(fresh)], "input_type": "query"} for _ in iter(int, 1))

        docs = iter(f"passage {i}: " + " ".join(queries[(i + k) % len(queries)] for k in range(4))
                    for i in range(10**9))

        def batch(model: str = "embed"):
            return ({"model": model, "input": [next(docs) for _ in range(32)]} for _ in iter(int, 1))

        models = (await client.get("/v1/models", headers={"Authorization": f"Bearer {KEYS['search']}"})).json()
        out: dict[str, Any] = {"engines": {m["id"]: {k: m.get(k) for k in ("dtype", "max_num_batched_tokens", "max_num_seqs")}
                                           for m in models["data"]}}
        # warm-up: both engines, every request path
        await load.closed_loop("neighbour", ({"model": m, "input": ["warm up"], "input_type": "query"}
                                             for m in ("embed", "embed-cached", "embed-vllm-steps") * 10**6), 4, 6)
        for model in ("embed", "embed-vllm-steps"):
            await load.closed_loop("bulk", batch(model), 8, 5)

        logger.info("lanes: search alone")
        rate, seconds = args.query_rate, args.seconds
        out["lanes"] = {"query_rate": rate, "flood": "32 inputs per request, concurrency 32"}
        out["lanes"]["alone"] = await load.open_loop("search", one(), rate, seconds)
        # with_lanes: our lane scheduler (urgent_step_ms, the default); with_lanes_vllm_steps: vLLM's
        # scheduler with the same priorities; without_lanes: one priority for both tenants.
        for flood_tenant, model, label in (("bulk", "embed", "with_lanes"),
                                           ("bulk", "embed-vllm-steps", "with_lanes_vllm_steps"),
                                           ("bulk-same-lane", "embed", "without_lanes")):
            logger.info("lanes: search beside %s on %s", flood_tenant, model)
            flood = asyncio.create_task(load.closed_loop(flood_tenant, batch(model), 32, seconds + 4))
            await asyncio.sleep(2)  # the flood fills the engine's queue first
            searched = await load.open_loop("search", one(model), rate, seconds)
            flooded = await flood
            out["lanes"][label] = {"search": searched, "flood": flooded | {"inputs_per_s": round(32 * flooded["ok_per_s"], 1)}}
            alone_p99 = out["lanes"]["alone"]["p99_ms"]
            out["lanes"][label]["search_p99_over_alone"] = round(searched["p99_ms"] / alone_p99, 2)

        logger.info("cache: a Zipf(1.1) stream of %d requests over %d queries", len(stream), len(queries))
        out["cache"] = {"distinct_queries": len(queries), "stream_requests": len(stream), "zipf_s": 1.1,
                        "concurrency": 8, "distinct_in_stream": len(set(stream)),
                        "repeats_in_stream": round(1 - len(set(stream)) / len(stream), 3)}
        for model in ("embed", "embed-cached"):
            bodies = ({"model": model, "input": [queries[i]], "input_type": "query"} for i in stream)
            before = await cache_counts(client) if model == "embed-cached" else None
            out["cache"][model] = await load.closed_loop("search", bodies, 8, 10**6)
            if before is not None:
                after = await cache_counts(client, before["hits_total"] + before["misses_total"] + len(stream))
                hits, misses = after["hits_total"] - before["hits_total"], after["misses_total"] - before["misses_total"]
                out["cache"][model] |= {"hits": hits, "misses": misses, "hit_ratio": round(hits / max(hits + misses, 1), 3),
                                        "cache_bytes": after["bytes"], "cache_entries": after["entries"],
                                        "evictions": after["evictions_total"]}
        out["cache"]["req_per_s_cached_over_uncached"] = round(
            out["cache"]["embed-cached"]["ok_per_s"] / out["cache"]["embed"]["ok_per_s"], 2)

        logger.info("quotas")
        near = one()
        out["quotas"] = {"limited_quota_per_s": 5, "limited_sends_per_s": 20, "neighbour_concurrency": 4}
        out["quotas"]["neighbour_alone"] = await load.closed_loop("neighbour", near, 4, seconds)
        # `limited` sends 4x its quota at a steady rate: the over-quota tenant of the issue
        both = await asyncio.gather(load.closed_loop("neighbour", near, 4, seconds),
                                    load.open_loop("limited", near, 20, seconds))
        out["quotas"]["neighbour_beside_limited"], out["quotas"]["limited"] = both
        out["quotas"]["neighbour_req_per_s_beside_over_alone"] = round(
            both[0]["ok_per_s"] / out["quotas"]["neighbour_alone"]["ok_per_s"], 2)
        # and a tenant that retries at once, ignoring Retry-After: what each refusal costs the others
        both = await asyncio.gather(load.closed_loop("neighbour", near, 4, seconds),
                                    load.closed_loop("limited", near, 4, seconds))
        out["quotas"]["neighbour_beside_hammering"], out["quotas"]["hammering"] = both
        return out


def vllm_stream(models: dict[str, Path], args: argparse.Namespace, queries: list[str], stream: list[int],
                work: Path) -> dict[str, Any]:
    """`vllm serve` on the cache phase's stream, sent the instruction-formatted queries."""
    from serving.config import EmbedModelConfig
    from serving.reference import get_detailed_instruct

    task = EmbedModelConfig().default_instruction
    port = reserve_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--runner", "pooling", "--host", "127.0.0.1",
               "--port", str(port), "--dtype", args.dtype, "--max-model-len", "1024", "--disable-log-stats",
               "--uvicorn-log-level", "warning", "--model", str(models["embedding"]), "--served-model-name", "embed",
               "--hf-overrides", json.dumps({"is_matryoshka": True})]
    log = work / "vllm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
                                env=clean_env(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="0-1"))
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, 600, log=log)

        async def drive():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                load = Load(client)
                KEYS.setdefault("none", "none")
                await load.closed_loop("none", ({"model": "embed", "input": ["warm up"]} for _ in iter(int, 1)), 4, 5)
                bodies = ({"model": "embed", "input": [get_detailed_instruct(task, queries[i])]} for i in stream)
                return await load.closed_loop("none", bodies, 8, 10**6)

        return asyncio.run(drive())
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32", help="float32 (the default) unless the CPU has native bf16")
    parser.add_argument("--seconds", type=float, default=20, help="length of each lanes and quotas phase")
    parser.add_argument("--query-rate", type=float, default=4, help="search queries per second in the lanes phase")
    parser.add_argument("--stream", type=int, default=4000, help="requests in the cache phase's Zipf stream")
    parser.add_argument("--vllm", action="store_true", help="also run `vllm serve` on the cache phase's stream")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="the engines' token budget per step (vLLM's default if unset): the step an urgent "
                             "query waits for")
    parser.add_argument("--urgent-step-ms", type=float, default=None,
                        help=f"`embed`'s urgent_step_ms ({URGENT_STEP_MS:g} if unset; `embed-vllm-steps` has none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = datetime.now(timezone.utc)
    models = ensure_models(args.shape, MODELS_DIR)
    queries = sentences(20_000)
    stream = zipf_stream(len(queries), args.stream)
    work = Path(tempfile.mkdtemp(prefix="tenants-bench-"))
    port = reserve_port()
    (work / "app.yaml").write_text(yaml.safe_dump(app_config(models, port, args.dtype, args.enforce_eager,
                                                             args.max_num_batched_tokens, args.urgent_step_ms)))
    log = work / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(work / "app.yaml")],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
                                env=clean_env(RAY_ADDRESS="local"))
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", proc, 900, log=log)
        phases = asyncio.run(run_phases(f"http://127.0.0.1:{port}", args, queries, stream))
    finally:
        stop(proc)
    if args.vllm:
        phases["cache"]["vllm_serve"] = vllm_stream(models, args, queries, stream, work)
        phases["cache"]["cached_over_vllm_serve"] = round(
            phases["cache"]["embed-cached"]["ok_per_s"] / phases["cache"]["vllm_serve"]["ok_per_s"], 2)
    result = {"benchmark": "tenants", "started": started.isoformat(), "shape": args.shape, "dtype": args.dtype,
              "max_num_batched_tokens": args.max_num_batched_tokens,
              "urgent_step_ms": args.urgent_step_ms or URGENT_STEP_MS,
              "argv": argv if argv is not None else sys.argv[1:], "machine": machine_info(), "versions": versions(),
              "phases": phases}
    budget = f"-mnbt{args.max_num_batched_tokens}" if args.max_num_batched_tokens else ""
    out_path = RESULTS_DIR / f"tenants-{args.shape}{budget}-{started:%Y%m%dT%H%M%SZ}.json"
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    plot(out_path)
    print(json.dumps(phases, indent=1))
    print(f"wrote {out_path} (server logs in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
