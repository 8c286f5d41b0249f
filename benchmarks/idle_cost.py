"""What an idle `qwen3-serve serve` costs per second, process by process.

    python -m benchmarks.idle_cost [--config configs/cpu.yaml] [--seconds 60] [--variants default,dashboard]

A host with a small model and modest traffic pays this whatever its load: Ray's GCS, raylet,
dashboard and its agent, the log monitor, Serve's controller, HAProxy's manager and the fallback
proxy, and the engines' own idle threads. Each variant starts the server as a user would (a clean
environment, its own local Ray instance), waits until it is ready and has settled, and counts the
CPU of every process in its session over ``--seconds``. Variants run one after the other in one
run, so they are compared on the same machine state. Results go to ``benchmarks/results/idle-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.engine_bench import RESULTS_DIR, machine_info, versions
from benchmarks.procs import clean_env, process_label, session_processes, stop, wait_ready
from benchmarks.venvs import REPO_ROOT

VARIANTS = {"default": [], "dashboard": ["--dashboard"]}
SETTLE_S = 20  # after /ready: deployments finish starting, first metric pushes go out


def session_cpu(sid: int) -> dict[int, tuple[str, str, float]]:
    """Label, command line and CPU seconds so far of each process in session ``sid``."""
    out = {}
    for process in session_processes(sid):
        try:
            times = process.cpu_times()
            out[process.pid] = (process_label(process), " ".join(process.cmdline())[:200], times.user + times.system)
        except psutil.Error:  # gone meanwhile
            pass
    return out


def measure(config: Path, flags: list[str], seconds: float, work: Path) -> dict[str, Any]:
    from serving.ports import reserve_port

    port = reserve_port()
    app = yaml.safe_load(config.read_text())
    app.setdefault("http", {})["port"] = port
    path = work / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    log = work / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(path), *flags],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            start_new_session=True, env=clean_env())
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", proc, 900, log=log)
        time.sleep(SETTLE_S)
        before = session_cpu(proc.pid)
        time.sleep(seconds)
        after = session_cpu(proc.pid)
    finally:
        stop(proc)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rows = sorted(({"process": after[pid][0], "command": after[pid][1],
                    "cpu_ms_per_s": round((after[pid][2] - before[pid][2]) / seconds * 1000, 2)}
                   for pid in after if pid in before), key=lambda row: -row["cpu_ms_per_s"])
    return {"flags": flags, "processes": len(rows), "cpu_ms_per_s": round(sum(r["cpu_ms_per_s"] for r in rows), 1),
            "by_process": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--variants", default="default,dashboard", help=f"from {','.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    results = {}
    for name in args.variants.split(","):
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"qwen3-idle-{os.getpid()}-{name}"
        work.mkdir(parents=True, exist_ok=True)
        results[name] = measure(args.config, VARIANTS[name], args.seconds, work)
        print(f"{name:10s} {results[name]['cpu_ms_per_s']:7.1f} ms of CPU per second, "
              f"{results[name]['processes']} processes", flush=True)
        for row in results[name]["by_process"][:12]:
            print(f"    {row['cpu_ms_per_s']:6.1f}  {row['process']}")
    out = args.out or RESULTS_DIR / f"idle-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"benchmark": "idle_cost", "command": " ".join(sys.argv), "config": str(args.config),
                               "seconds": args.seconds, "settle_s": SETTLE_S, "started_at": started.isoformat(),
                               "machine": machine_info(), "versions": versions(), "variants": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
