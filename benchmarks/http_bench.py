"""HTTP throughput and latency: our server against `vllm serve`, Infinity and sentence-transformers, in one run.

    python -m benchmarks.http_bench                      # 0.6B-shaped model, every peer, full sweep
    python -m benchmarks.http_bench --smoke              # tiny model; ours, vllm serve, in-process, two at a time
    python -m benchmarks.http_bench --peers ours,vllm --concurrency 1,8,32 --requests-scale 0.5

Every peer is started by the harness on the same checkpoint (bf16, same engine settings for
the vLLM-based ones), swept, and stopped before the next one starts, so each runs on a quiet
machine of its own (except in smoke mode, which checks the harness, not the numbers, and runs
two at a time). Load comes from `vllm bench serve` (benchmarks.loadgen), a client none of
us wrote, with the same request files for every peer; the in-process EmbedEngine/RerankEngine
get the same requests at the same concurrency as the ceiling. During each point the CPU share
of every process of the server's and the client's trees is sampled. Results go to
benchmarks/results/http-<shape>-<timestamp>.json with versions, the machine, every point,
the prompt-token agreement and issue 15's goals; PNG plots are drawn next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks import http_report
from benchmarks.engine_bench import MODELS_DIR, RESULTS_DIR, SHAPES, ensure_models, machine_info, versions
from benchmarks.http_peers import ALL_PEERS, EMBED_NAME, INPROCESS, PEERS, RERANK_NAME, EngineSettings, Peer, prepare
from benchmarks.http_workloads import Corpus, Task, HttpWorkload, Point, describe, full_workloads, smoke_workloads, write_points
from benchmarks.loadgen import Measurement, parse_result, run_points
from benchmarks.procs import clean_env, last_line, sample_rss, stop, wait_ready
from benchmarks.venvs import REPO_ROOT, VenvUnavailable, ensure_venv, package_versions, plot
from serving.ports import reserve_port

logger = logging.getLogger("benchmarks.http_bench")

SMOKE_PEERS = ("ours", "vllm", INPROCESS)
STARTUP_TIMEOUT_S = 900
# A second start when the first fails: on a busy machine Ray's node registration can time out once.
# A peer that cannot run here fails both, with the same reason.
START_ATTEMPTS = 2


def run_server(peer: Peer, tasks: tuple[Task, ...], points: list[Point], models: dict[str, Path],
               settings: EngineSettings, work: Path) -> tuple[list[Measurement], dict[str, Any]]:
    """Start the peer's server for the tasks, drive every point, stop it. Never raises for the peer's failures."""
    task = "+".join(tasks)
    status: dict[str, Any] = {"peer": peer.name, "task": task}
    try:
        prepare(peer)
    except VenvUnavailable as exc:
        return [], status | {"ran": False, "reason": f"venv: {exc}"}
    port = reserve_port()
    peer_dir = work / f"{peer.name}-{task}"
    peer_dir.mkdir(parents=True, exist_ok=True)
    try:
        launch = peer.launch(tasks, models, port, peer_dir, settings)
    except (OSError, subprocess.SubprocessError, VenvUnavailable) as exc:
        return [], status | {"ran": False, "reason": f"could not prepare: {type(exc).__name__}: {exc}"}
    for name, content in launch.files.items():
        (peer_dir / name).write_text(content)
    measurements: list[Measurement] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        log = peer_dir / f"server-{attempt}.log"
        logger.info("[%s/%s] starting (attempt %d): %s", peer.name, task, attempt, " ".join(launch.command))
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(launch.command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                    env=clean_env(**launch.env), start_new_session=True)
        try:
            wait_ready(launch.ready_url, proc, STARTUP_TIMEOUT_S, log=log)
        except (RuntimeError, TimeoutError) as exc:
            stop(proc)
            status |= {"ran": False, "reason": str(exc), "start_attempts": attempt}
            logger.warning("[%s/%s] did not start: %s", peer.name, task, exc)
            continue
        try:
            status |= {"ran": True, "reason": None, "start_attempts": attempt,
                       "startup_s": round(time.monotonic() - started, 1), "command": launch.command, "env": launch.env}
            rss = sample_rss(psutil.Process(proc.pid))
            status["rss_mib_after_start"] = round(sum(r for _, r in rss.values()) / 2**20, 1)
            measurements = run_points(
                points, peer=peer.name, base_url=f"http://127.0.0.1:{port}", server_pid=proc.pid, work_dir=peer_dir,
                client_for=lambda p: {"backend": peer.backend[p.workload.task],
                                      "endpoint": peer.endpoint[p.workload.task],
                                      "model": EMBED_NAME if p.workload.task == "embed" else RERANK_NAME,
                                      "tokenizer": str(models["embedding" if p.workload.task == "embed"
                                                              else "reranker"])})
            if proc.poll() is not None:
                status["reason"] = f"server exited during the run: {last_line(log)}"
        finally:
            stop(proc)
        break
    return measurements, status


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_inprocess(task: str, points: list[Point], models: dict[str, Path], settings: EngineSettings,
                  work: Path) -> tuple[list[Measurement], dict[str, Any]]:
    """The engines in a subprocess of our venv (its memory goes when it exits), same requests and concurrency."""
    model = models["embedding" if task == "embed" else "reranker"]
    plan = {"task": task, "engine": settings.engine(task, model),  # type: ignore[arg-type]
            "points": [{"dataset": str(p.dataset), "concurrency": p.concurrency, "requests": p.requests,
                        "warmups": p.workload.warmups} for p in points]}
    peer_dir = work / f"{INPROCESS}-{task}"
    peer_dir.mkdir(parents=True, exist_ok=True)
    (peer_dir / "plan.json").write_text(json.dumps(plan))
    log, out = peer_dir / "run.log", peer_dir / "out.json"
    status: dict[str, Any] = {"peer": INPROCESS, "task": task}
    logger.info("[%s/%s] starting", INPROCESS, task)
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.inprocess", str(peer_dir / "plan.json"), str(out)],
                              stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=clean_env(), timeout=7200)
    if proc.returncode != 0 or not out.exists():
        return [], status | {"ran": False, "reason": f"exited {proc.returncode}: {last_line(log)}"}
    measurements = []
    for point, result in zip(points, json.loads(out.read_text())):
        m = Measurement(INPROCESS, point.workload.name, task, point.concurrency, point.workload.client_batch,
                        point.requests, expected_tokens=sum(point.expected_tokens), cpu=result["cpu"],
                        load_avg_1m=result["load_avg_1m"])
        parse_result(m, result, point)
        logger.info("[%s] %s: %.1f req/s, %.0f tok/s, p50 %s ms", INPROCESS, point.key, m.req_per_s, m.tok_per_s,
                    _ms(m.p50_ms))
        measurements.append(m)
    return measurements, status | {"ran": True}


def all_versions(peers: list[str]) -> dict[str, Any]:
    import ray

    out: dict[str, Any] = {**versions(), "ray": ray.__version__}
    out["load_generator"] = f"vllm bench serve (vllm.benchmarks.serve of vllm {out['vllm']})"
    for venv, names in (("infinity", ("infinity-emb", "torch", "transformers", "sentence-transformers")),
                        ("st", ("sentence-transformers", "torch", "transformers"))):
        if venv in peers:
            try:
                out[f"{venv}_venv"] = package_versions(ensure_venv(venv), names)
            except VenvUnavailable as exc:
                out[f"{venv}_venv"] = {"unavailable": str(exc)}
    return out


def servers_at_once(smoke: bool) -> int:
    """Smoke mode (the CI check of this harness on the tiny model) runs two servers at a time: a
    start-up is mostly one core importing Python, so two share this 2-core machine's start-up time.
    Its numbers are then not those of a quiet machine; a full run starts one server at a time."""
    return 2 if smoke else 1


def server_groups(peer: Peer | None, smoke: bool) -> list[tuple[Task, ...]]:
    """Which tasks each server start covers: one task per start (nothing else running on the server),
    except in smoke mode, where a multi-model peer starts once with both models to save a start-up."""
    if smoke and peer is not None and peer.multi_model:
        return [("embed", "rerank")]
    return [("embed",), ("rerank",)]


def write_result(out: Path, *, args: argparse.Namespace, argv: list[str] | None, shape: str, started: datetime,
                 load_start: float, peers: list[str], settings: EngineSettings, concurrency: list[int],
                 workloads: list[HttpWorkload], points: list[Point], models: dict[str, Path],
                 statuses: list[dict[str, Any]], measurements: list[Measurement], complete: bool) -> dict[str, Any]:
    """The result JSON; written after every server too (complete=False), so a late crash keeps the rest."""
    finished = datetime.now(timezone.utc)
    result = {
        "benchmark": "http", "mode": "smoke" if args.smoke else "full", "shape": shape, "complete": complete,
        "command": [sys.executable, "-m", "benchmarks.http_bench", *(argv if argv is not None else sys.argv[1:])],
        "started_at": started.isoformat(timespec="seconds"), "duration_s": round((finished - started).total_seconds()),
        # Other work on the machine slows every peer; the load average says how busy it was.
        "machine": {**machine_info(), "load_avg_1m_start": round(load_start, 2),
                    "load_avg_1m_end": round(os.getloadavg()[0], 2)},
        "versions": all_versions(peers) if complete else versions(),
        "settings": {"engine": settings.__dict__, "concurrency": concurrency,
                     "servers_at_once": servers_at_once(args.smoke), "requests_scale": args.requests_scale,
                     "workloads": [w.__dict__ for w in workloads], "points": describe(points),
                     "throughput": "req/s and prompt tokens/s (the server's usage.prompt_tokens) over the timed "
                                   "run; latency is end to end per request at the client",
                     "cpu_share": "CPU seconds of each process during the timed run / (wall seconds x usable CPUs)",
                     "models": {k: str(v) for k, v in models.items()}},
        "peers": statuses,
        "goals": http_report.goals(measurements),  # the defaults
        "goals_ours_routed": http_report.goals(measurements, "ours-routed") if any(
            m.peer == "ours-routed" for m in measurements) else None,
        "token_agreement": http_report.token_agreement(measurements),
        "points": [m.to_json() for m in measurements],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, few requests, ours + vllm + in-process")
    parser.add_argument("--peers", default=None, help=f"comma-separated, from {','.join(ALL_PEERS)}")
    parser.add_argument("--concurrency", default=None, help="sweep for client batch 1 and 32 (default 1,8,16,32,64; batch 32 stops at 32)")
    parser.add_argument("--shape", choices=list(SHAPES), default=None, help="model shape (default 0.6b-shaped)")
    parser.add_argument("--requests-scale", type=float, default=1.0, help="multiply every point's request count")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="every vLLM-based peer's dtype; float32 on CPUs without AVX-512 bf16, where bf16 is "
                             "emulated (a 0.6B-shaped point then takes minutes)")
    parser.add_argument("--workloads", default=None,
                        help="comma-separated subset of embed-b1,embed-q32,embed-b32,embed-short,rerank-50")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/http-...)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--no-plots", action="store_true")
    return parser


def scaled(workloads: list[HttpWorkload], scale: float, only: str | None) -> list[HttpWorkload]:
    keep = set(only.split(",")) if only else None
    return [replace(w, requests=max(2, round(w.requests * scale)),
                    requests_per_concurrency=math.ceil(w.requests_per_concurrency * scale))
            for w in workloads if keep is None or w.name in keep]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    shape = args.shape or ("tiny" if args.smoke else "0.6b-shaped")
    peers = args.peers.split(",") if args.peers else list(SMOKE_PEERS if args.smoke else ALL_PEERS)
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; choose from {ALL_PEERS}")
    concurrency = [int(c) for c in (args.concurrency or ("1,8" if args.smoke else "1,8,16,32,64")).split(",")]
    workloads = scaled((smoke_workloads if args.smoke else full_workloads)(concurrency), args.requests_scale,
                       args.workloads)
    settings = EngineSettings(dtype=args.dtype, enforce_eager=args.smoke)
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()[0]

    models = ensure_models(shape, args.models_dir)
    work = Path(tempfile.mkdtemp(prefix="http-bench-"))
    logger.info("work dir (request files, server and client logs): %s", work)
    points = write_points(workloads, Corpus(models, settings.max_model_len), work / "datasets")

    measurements: list[Measurement] = []
    statuses: list[dict[str, Any]] = []
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS_DIR / f"http-{'smoke-' if args.smoke else ''}{shape}-{stamp}.json"

    def save(complete: bool) -> dict[str, Any]:
        return write_result(out, args=args, argv=argv, shape=shape, started=started, load_start=load_start,
                            peers=peers, settings=settings, concurrency=concurrency, workloads=workloads,
                            points=points, models=models, statuses=statuses, measurements=measurements,
                            complete=complete)

    def run_group(name: str, tasks: tuple[Task, ...], group: list[Point]) -> tuple[list[Measurement], dict[str, Any]]:
        peer = PEERS.get(name)
        if peer is None:
            ms, status = run_inprocess(tasks[0], group, models, settings, work)
        elif not set(tasks) <= set(peer.tasks):
            reason = (peer.unsupported or {}).get(tasks[0], "not run for this task")
            ms, status = [], {"peer": name, "task": tasks[0], "ran": False, "reason": reason}
        else:
            ms, status = run_server(peer, tasks, group, models, settings, work)
        return ms, status | {"note": peer.note if peer else
                             "EmbedEngine/RerankEngine in one process, asyncio at the same concurrency"}

    groups = [(name, tasks, [p for p in points if p.workload.task in tasks])
              for name in peers for tasks in server_groups(PEERS.get(name), args.smoke)]
    done: dict[int, tuple[list[Measurement], dict[str, Any]]] = {}
    with ThreadPoolExecutor(max_workers=servers_at_once(args.smoke)) as pool:
        futures = {pool.submit(run_group, *g): i for i, g in enumerate(groups) if g[2]}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            measurements[:] = [m for i in sorted(done) for m in done[i][0]]
            statuses[:] = [done[i][1] for i in sorted(done)]
            save(complete=False)

    result = save(complete=True)
    pngs = [] if args.no_plots else plot(out)
    print(http_report.table(measurements))
    print()
    print(http_report.goals_table(result["goals"]))
    if result["goals_ours_routed"]:
        print("\nthe path before issue 15 (ours-routed: proxy -> router -> model replica):")
        print(http_report.goals_table(result["goals_ours_routed"]))
    for s in statuses:
        if not s.get("ran"):
            print(f"not run: {s['peer']}/{s['task']}: {s.get('reason')}")
    print(f"\nwrote {out}" + "".join(f"\nwrote {p}" for p in pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
