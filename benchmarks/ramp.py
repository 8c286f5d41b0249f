"""Ramp: the ingress's replica count following the load, against `qwen3-serve serve --config
configs/cpu-autoscale.yaml`.

Starts the server the way a user does (its own session, a clean environment, port and host from
QWEN3_SERVE_HTTP__*), drives it with a closed loop of httpx callers through phases of different
concurrency (default: 1 caller for 60 s; 16 until the second replica has served for 30 s, at most
600 s; 1 until Ray Serve is back at one replica, at most 300 s), samples the number of ingress
replica processes and of replicas Ray Serve runs every second, and records every request. A 429 counts as a failure here.
A benchmark, not a test: it writes JSON and a PNG to benchmarks/results/ and asserts nothing
(tests/integration/test_autoscaling.py reuses its parts and asserts).

    python -m benchmarks.ramp [--phases low:1:60,high:16:600,low:1:300] [--config configs/cpu-autoscale.yaml]

Imports at module level are standard library only: the PNG is drawn by this same file in the plot
venv (matplotlib, never in the serving venv): `.bench-venvs/plot/bin/python benchmarks/ramp.py --plot X.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
CONFIG = REPO_ROOT / "configs" / "cpu-autoscale.yaml"
# Ray titles a replica's process ray::ServeReplica:<app>:<deployment> (plus .method while it runs one).
ROUTER_TITLE = "ray::ServeReplica:qwen3:router"
EMBED_MODEL = "Qwen/Qwen3-Embedding-0.6B"
RERANK_MODEL = "Qwen/Qwen3-Reranker-0.6B"
# The high and final phases end early once the replicas followed the load (follow_load); their
# seconds are maxima. On 2 busy cores a new replica takes minutes to start its engines.
PHASES: tuple[tuple[str, int, float], ...] = (("low", 1, 60), ("high", 16, 600), ("low", 1, 300))
RERANK_SHARE = 0.2
TIMEOUT_S = 300


# --- the server -------------------------------------------------------------------------------------------------

def start_server(config_path: str | Path = CONFIG, *, log_path: Path | None = None,
                 tiny_models_dir: str | Path | None = None, ready_timeout_s: float = 900,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m serving.cli serve --config ...` in a session of its own; returns once /ready answers 200.

    Port and host come from the environment (which overrides the YAML), like a user's shell would set
    them; so does ``tiny_models_dir`` if given. The server is stopped again if it never becomes ready.
    """
    from benchmarks.procs import clean_env, wait_ready
    from serving.ports import reserve_port

    port = reserve_port()
    env = clean_env(HF_HUB_OFFLINE="1", QWEN3_SERVE_HTTP__PORT=str(port), QWEN3_SERVE_HTTP__HOST="127.0.0.1")
    if tiny_models_dir is not None:
        env["QWEN3_SERVE_TINY_MODELS_DIR"] = str(Path(tiny_models_dir).resolve())
    env |= extra_env or {}
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="ramp-")) / "serve.log"
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(config_path)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", proc, timeout_s=ready_timeout_s, log=log_path)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen, timeout_s: float = 120) -> int | None:
    """SIGTERM (the server shuts Ray down), then SIGKILL its process group if it has not exited in time.

    Whatever of the group outlives the server is killed too. Only our own group is touched: the server
    was started with start_new_session, so its group id is its pid.
    """
    import psutil

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait(30)
    leftovers = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and os.getpgid(p.pid) == proc.pid:
                leftovers.append(p)
        except (psutil.Error, OSError):
            pass
    if leftovers:
        _killpg(proc.pid)
        psutil.wait_procs(leftovers, timeout=30)
    return proc.returncode


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def count_replicas(root_pid: int | None = None, title: str = ROUTER_TITLE) -> int:
    """Processes titled ``title`` (ingress replicas), in ``root_pid``'s tree or, without it, machine-wide.

    A replica's own forks inherit its title until they set theirs, so a match whose parent also
    matches is not counted again.
    """
    import psutil

    if root_pid is None:
        procs = list(psutil.process_iter())
    else:
        try:
            root = psutil.Process(root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
    matches: dict[int, int] = {}  # pid -> parent pid
    for p in procs:
        try:
            cmd = p.cmdline()
            if cmd and cmd[0].startswith(title):
                matches[p.pid] = p.ppid()
        except psutil.Error:
            pass
    return sum(1 for ppid in matches.values() if ppid not in matches)


# --- the load ---------------------------------------------------------------------------------------------------

def short_texts() -> list[str]:
    from benchmarks.workloads import stdlib_snippets

    return [" ".join(s.text.split())[:400] for s in stdlib_snippets()]


def make_request(rng: random.Random, texts: Sequence[str]) -> tuple[str, dict[str, Any], int]:
    """(path, body, number of inputs or documents): mostly embeddings of 1-16 short inputs, some reranks."""
    def short() -> str:
        text = rng.choice(texts)
        return text[: rng.randint(min(20, len(text)), len(text))]

    if rng.random() < RERANK_SHARE:
        docs = [short() for _ in range(rng.randint(2, 10))]
        return "/v1/rerank", {"model": RERANK_MODEL, "query": short()[:120], "documents": docs}, len(docs)
    inputs = [short() for _ in range(rng.randint(1, 16))]
    return "/v1/embeddings", {"model": EMBED_MODEL, "input": inputs}, len(inputs)


def check_answer(path: str, n: int, body: Any) -> tuple[bool, int | None]:
    """(well-formed, embedding length): n embeddings of one length, or n rerank results over indices 0..n-1."""
    try:
        if path == "/v1/embeddings":
            lengths = {len(d["embedding"]) for d in body["data"]}
            return len(body["data"]) == n and len(lengths) == 1, next(iter(lengths)) if len(lengths) == 1 else None
        return len(body["results"]) == n and sorted(r["index"] for r in body["results"]) == list(range(n)), None
    except (KeyError, TypeError, ValueError):
        return False, None


async def run_phases(url: str, phases: Sequence[tuple[str, int, float]], sample: Callable[[], int | dict[str, Any]],
                     *, advance_when: Callable[[int, list[dict[str, Any]]], bool] | None = None, seed: int = 0,
                     timeout_s: float = TIMEOUT_S, sample_every_s: float = 1.0,
                     texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Closed-loop load through ``phases`` (name, callers, seconds), calling ``sample()`` every second.

    ``sample()`` returns the replica count, or a dict of numbers with a "replicas" key (e.g. from
    ReplicaWatch); each becomes a row of the result's samples. Caller i sends its next request when
    its last one has answered, while the current phase has more than i callers; a request belongs to
    the phase it started in. ``advance_when(phase_index, samples)``, checked after every sample, ends
    the current phase early (after the last phase, the run): the phase's seconds are then its maximum.
    Times are seconds from the start of the run; ``t0_wall`` is that start as a Unix time.
    """
    import httpx

    texts = list(texts) if texts is not None else short_texts()
    t0, t0_wall = time.monotonic(), time.time()
    starts = [0.0]  # start time of each phase begun so far
    records: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    in_flight = [0]

    def now() -> float:
        return time.monotonic() - t0

    def advance(t: float) -> None:
        starts.append(round(t, 2))

    def phase_at(t: float) -> int | None:
        while len(starts) <= len(phases) and t >= starts[-1] + phases[len(starts) - 1][2]:
            advance(starts[-1] + phases[len(starts) - 1][2])
        return len(starts) - 1 if len(starts) <= len(phases) else None

    async def caller(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            while (index := phase_at(now())) is not None:
                if phases[index][1] <= i:
                    await asyncio.sleep(0.1)
                    continue
                path, body, n = make_request(rng, texts)
                rec: dict[str, Any] = {"phase": index, "path": path, "n": n, "start": round(now(), 3)}
                in_flight[0] += 1
                try:
                    response = await client.post(url + path, json=body)
                    rec["status"] = response.status_code
                    if response.status_code == 200:
                        rec["well_formed"], dim = check_answer(path, n, response.json())
                        if dim is not None:
                            rec["dim"] = dim
                    else:
                        rec["body"] = response.text[:300]
                        rec["retry_after"] = response.headers.get("retry-after")
                except (httpx.HTTPError, ValueError) as exc:  # transport errors, timeouts, undecodable JSON
                    rec["status"] = type(exc).__name__
                    rec["body"] = str(exc)[:300]
                finally:
                    in_flight[0] -= 1
                rec["end"] = round(now(), 3)
                records.append(rec)
                if rec["status"] == 429:  # closed loop: wait as told instead of hammering
                    await asyncio.sleep(min(float(rec.get("retry_after") or 1), 10))

    async def sampler() -> None:
        while (index := phase_at(t := now())) is not None:
            value = await asyncio.to_thread(sample)
            row = {"t": round(t, 2), "phase": index, "in_flight": in_flight[0]}
            samples.append(row | (value if isinstance(value, dict) else {"replicas": value}))
            if advance_when is not None and phase_at(now()) == index and advance_when(index, samples):
                advance(now())
            await asyncio.sleep(max(0.0, sample_every_s - (now() - t)))

    await asyncio.gather(sampler(), *(caller(i) for i in range(max(c for _, c, _ in phases))))
    phase_rows = [{"name": name, "concurrency": c, "max_s": d, "start": starts[i], "end": starts[i + 1]}
                  for i, (name, c, d) in enumerate(phases) if i + 1 < len(starts)]
    return {"phases": phase_rows, "records": records, "samples": samples, "t0_wall": t0_wall,
            "duration_s": round(now(), 2)}


def follow_load(high: int = 1, final: int = 2, hold_s: float = 30, min_replicas: int = 1,
                max_replicas: int = 2) -> Callable[[int, list[dict[str, Any]]], bool]:
    """An ``advance_when`` for run_phases with ReplicaWatch samples: ends the ``high`` phase once Ray
    Serve has run ``max_replicas`` replicas for ``hold_s`` seconds (so the new one served under load),
    and the ``final`` phase once it is back at ``min_replicas`` running replicas and processes (so
    a replica that served was drained and stopped). A phase's seconds are then its maximum."""
    def done(index: int, samples: list[dict[str, Any]]) -> bool:
        if index == high:
            full = [s["t"] for s in samples if s.get("running", 0) >= max_replicas]
            return bool(full) and samples[-1].get("running", 0) >= max_replicas and full[-1] - full[0] >= hold_s
        if index == final:
            return (any(s.get("running", 0) >= max_replicas for s in samples)
                    and samples[-1].get("running", 0) <= min_replicas and samples[-1]["replicas"] <= min_replicas)
        return False
    return done


def back_at_min(phase: int, min_replicas: int = 1,
                max_replicas: int = 2) -> Callable[[int, list[dict[str, Any]]], bool]:
    """An ``advance_when`` for run_phases: ends phase ``phase`` once the replica processes, having
    reached ``max_replicas`` during the run, are back at ``min_replicas``."""
    def done(index: int, samples: list[dict[str, Any]]) -> bool:
        return (index == phase and any(s["replicas"] >= max_replicas for s in samples)
                and samples[-1]["replicas"] <= min_replicas)
    return done


# --- what Ray Serve did -----------------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(INFO|WARNING|ERROR) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) controller \d+ -- (.*)")
_EVENTS = (  # (kind, pattern with the deployment's id as {d})
    ("upscale", r"Upscaling {d} from (?P<old>\d+) to (?P<new>\d+) replicas\. Current ongoing requests: "
                r"(?P<ongoing>[\d.]+), current running replicas: (?P<running>\d+)"),
    ("downscale", r"Downscaling {d} from (?P<old>\d+) to (?P<new>\d+) replicas\. Current ongoing requests: "
                  r"(?P<ongoing>[\d.]+), current running replicas: (?P<running>\d+)"),
    ("starting", r"Starting Replica\(id='(?P<replica>\w+)', {r}\)"),
    ("running", r"Replica\(id='(?P<replica>\w+)', {r}\) started successfully .*? after (?P<init_s>[\d.]+)s"),
    ("stopping", r"Stopping Replica\(id='(?P<replica>\w+)', {r}\) \(currently ReplicaState\.(?P<state>\w+)\)"),
    ("force_killed", r"Replica\(id='(?P<replica>\w+)', {r}\) did not shut down after grace period"),
    ("stopped", r"Replica\(id='(?P<replica>\w+)', {r}\) is stopped"),
)


class ReplicaWatch:
    """Ingress replicas of one server, every sample: processes (ROUTER_TITLE in its tree) and what Ray
    Serve's controller logged about them (read as it grows from the server's Ray session folder,
    /tmp/ray/session_*_<server pid>/logs/serve/controller_*.log). "running" counts replicas the
    controller reported started and has not begun stopping: only those get requests; a replica
    process can exist for minutes while its engines start."""

    def __init__(self, server_pid: int, app: str = "qwen3", deployment: str = "router",
                 ray_tmp: Path = Path(tempfile.gettempdir()) / "ray"):
        self.server_pid, self.ray_tmp = server_pid, ray_tmp
        r = re.escape(f"deployment='{deployment}', app='{app}'")
        d = re.escape(f"Deployment(name='{deployment}', app='{app}')")
        self._patterns = [(kind, re.compile(p.format(r=r, d=d))) for kind, p in _EVENTS]
        self.events: list[dict[str, Any]] = []
        self._running: set[str] = set()
        self._log: Path | None = None
        self._offset = 0
        self._partial = ""

    def _find_log(self) -> Path | None:
        """The server's controller log. Session folders outlive their processes and pids are
        reused: an older session of another process with the same pid may be there too. The
        server's own is the newest (its name starts with its start time), and none newer can
        appear while the server lives."""
        if self._log is None:
            logs = sorted(self.ray_tmp.glob(f"session_*_{self.server_pid}/logs/serve/controller_*.log"))
            self._log = logs[-1] if logs else None
        return self._log

    def read(self) -> None:
        log = self._find_log()
        if log is None:
            return
        with open(log, errors="replace") as f:
            f.seek(self._offset)
            text = self._partial + f.read()
            self._offset = f.tell()
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            m = _LOG_LINE.match(line)
            if not m:
                continue
            for kind, pattern in self._patterns:
                e = pattern.search(m.group(3))
                if e:
                    wall = datetime.strptime(m.group(2), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    self.events.append({"wall": wall, "kind": kind} | e.groupdict())
                    if kind == "running":
                        self._running.add(e["replica"])
                    elif kind in ("stopping", "stopped"):
                        self._running.discard(e["replica"])
                    break

    def __call__(self) -> dict[str, int]:
        self.read()
        return {"replicas": count_replicas(self.server_pid), "running": len(self._running)}

    def events_since(self, t0_wall: float) -> list[dict[str, Any]]:
        """The events, with t: seconds since ``t0_wall`` (the load's start; negative before it)."""
        self.read()
        return [{"t": round(e["wall"] - t0_wall, 2)} | {k: v for k, v in e.items() if k != "wall"}
                for e in self.events]


# --- the report -------------------------------------------------------------------------------------------------

def failure_kind(status: int | str) -> str:
    if status == 429:
        return "429"
    return f"http {status}" if isinstance(status, int) else status


def summarize(run: dict[str, Any], events: list[dict[str, Any]] | None = None, min_replicas: int = 1,
              max_replicas: int = 2) -> dict[str, Any]:
    """Counts, failures by kind, scale-up/-down times and the per-sample timeline of a run_phases result.

    Times are from the start of the high phase (the one with the most callers) to scale up, and from
    the start of the final phase to scale down: by replica processes ("replicas") and, where the
    samples have it, by replicas Ray Serve runs ("running"). ``events``: ReplicaWatch.events_since.
    """
    records, samples, phases = run["records"], run["samples"], run["phases"]
    events = events or []
    by_status = collections.Counter(str(r["status"]) for r in records)
    failures = [r for r in records if r["status"] != 200]
    malformed = [r for r in records if r["status"] == 200 and not r.get("well_formed")]

    def at(t: float) -> dict[str, Any]:
        before = [s for s in samples if s["t"] <= t]
        return {k: before[-1].get(k) for k in ("replicas", "running")} if before else {}

    def first(key: str, start: float, ok: Callable[[int], bool]) -> dict[str, Any] | None:
        return next((s for s in samples if s["t"] >= start and key in s and ok(s[key])), None)

    times: dict[str, float | None] = {"time_to_scale_up_s": None, "time_to_scale_down_s": None,
                                      "time_to_running_s": None, "time_to_running_scale_down_s": None}
    if phases:
        high = max(range(len(phases)), key=lambda i: phases[i]["concurrency"])
        start, final = phases[high]["start"], phases[-1]["start"]
        for key, up_name, down_name in (("replicas", "time_to_scale_up_s", "time_to_scale_down_s"),
                                        ("running", "time_to_running_s", "time_to_running_scale_down_s")):
            up = first(key, start, lambda n: n >= max_replicas)
            times[up_name] = round(up["t"] - start, 2) if up else None
            if up and high + 1 < len(phases):
                down = first(key, max(final, up["t"]), lambda n: n <= min_replicas)
                times[down_name] = round(down["t"] - final, 2) if down else None
    changes = [{"t": b["t"], "what": key, "from": a[key], "to": b[key]} for key in ("replicas", "running")
               for a, b in zip(samples, samples[1:]) if key in a and key in b and a[key] != b[key]]
    timeline, previous = [], 0.0
    ends = sorted(r["end"] for r in records)
    for i, s in enumerate(samples):
        done = sum(1 for e in ends if previous < e <= s["t"])
        timeline.append({k: s[k] for k in ("t", "replicas", "running", "in_flight") if k in s}
                        | {"completions_per_s": round(done / max(s["t"] - previous, 1e-6), 2) if i else 0.0})
        previous = s["t"]
    per_phase = []
    for i, p in enumerate(phases):
        rs = [r for r in records if r["phase"] == i]
        span = max(p["end"] - p["start"], 1e-6)
        lat = sorted(r["end"] - r["start"] for r in rs if r["status"] == 200)
        per_phase.append({"name": p["name"], "concurrency": p["concurrency"], "start": p["start"], "end": p["end"],
                          "requests": len(rs), "ok": len(lat), "ok_per_s": round(len(lat) / span, 2),
                          "p50_s": round(lat[len(lat) // 2], 3) if lat else None,
                          "p99_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None})
    return {
        "requests": len(records),
        "ok": by_status.get("200", 0),
        "by_status": dict(by_status),
        "failures": len(failures),
        "failures_by_kind": dict(collections.Counter(failure_kind(r["status"]) for r in failures)),
        "rejected_429": sum(1 for r in records if r["status"] == 429),
        "failed_requests": [r | {"at_start": at(r["start"]), "at_end": at(r["end"])} for r in failures[:50]],
        "malformed": len(malformed),
        "embedding_lengths": sorted({r["dim"] for r in records if "dim" in r}),
        "peak_replicas": max((s["replicas"] for s in samples), default=None),
        "peak_running": max((s["running"] for s in samples if "running" in s), default=None),
        "final_replicas": samples[-1]["replicas"] if samples else None,
        **times,
        "replica_changes": changes,
        "serve_events": [e for e in events if e["kind"] != "starting" or e["t"] >= 0],
        "phases": per_phase,
        "timeline": timeline,
    }


def plot(json_path: Path) -> Path | None:
    """The PNG next to the JSON, drawn by this file in the plot venv; a failure is printed, not fatal."""
    from benchmarks.venvs import VenvUnavailable, ensure_venv

    try:
        python = ensure_venv("plot")
    except VenvUnavailable as exc:
        print(f"no plot: {exc}", file=sys.stderr)
        return None
    proc = subprocess.run([str(python), str(Path(__file__).resolve()), "--plot", str(json_path)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"plotting failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return Path(proc.stdout.strip())


def draw(json_path: Path) -> Path:
    """Replica count (top) and requests per second (bottom) over time, phases shaded and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(Path(json_path).read_text())
    s = result["summary"]
    rows = s["timeline"]
    ts = [row["t"] for row in rows]
    peak = max(2, s["peak_replicas"] or 1)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1, 2]})
    top.step(ts, [row["replicas"] for row in rows], where="post", color="tab:blue", label="replica processes")
    if rows and "running" in rows[0]:
        top.step(ts, [row["running"] for row in rows], where="post", color="tab:purple", ls="--",
                 label="running (Serve controller)")
    top.set_ylabel("ingress replicas")
    top.set_ylim(0, peak + 0.6)
    top.set_yticks(range(0, peak + 1))
    for e in s.get("serve_events", []):
        if e["kind"] in ("upscale", "downscale"):
            top.axvline(e["t"], color="tab:red", ls=":", lw=1)
            top.annotate(f"{e['kind']} ({float(e['ongoing']):.1f} ongoing)", (e["t"], peak + 0.3), fontsize=7,
                         color="tab:red", ha="left")
    top.legend(loc="upper left", fontsize=8)
    rate = [row["completions_per_s"] for row in rows]
    bottom.plot(ts, rate, color="tab:green", lw=0.6, alpha=0.5, label="completed/s")
    smooth = [sum(rate[max(0, i - 4):i + 1]) / len(rate[max(0, i - 4):i + 1]) for i in range(len(rate))]
    bottom.plot(ts, smooth, color="tab:green", lw=1.5, label="completed/s, 5-sample mean")
    bottom.plot(ts, [row["in_flight"] for row in rows], color="tab:gray", lw=1, alpha=0.7, label="in flight (client)")
    fails = [r["end"] for r in s["failed_requests"]]
    if fails:
        bottom.plot(fails, [0] * len(fails), "rx", label=f"failed ({s['failures']})")
    bottom.set_ylabel("requests")
    bottom.set_xlabel("seconds since the load started")
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        for p in s["phases"]:
            if p["concurrency"] > 1:
                ax.axvspan(p["start"], p["end"], color="tab:orange", alpha=0.12)
    for p in s["phases"]:
        bottom.annotate(f"{p['name']}: {p['concurrency']} caller{'s' if p['concurrency'] > 1 else ''}",
                        ((p["start"] + p["end"]) / 2, 0.95), xycoords=("data", "axes fraction"), ha="center",
                        fontsize=8)

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} s"

    fig.suptitle(f"Ingress autoscaling ramp, {result['machine'].get('cpus_usable')} CPUs: 2nd replica process after "
                 f"{secs(s['time_to_scale_up_s'])}, running after {secs(s.get('time_to_running_s'))}; back to 1 "
                 f"after {secs(s['time_to_scale_down_s'])}; {s['requests']} requests, {s['failures']} failed",
                 fontsize=10)
    fig.tight_layout()
    out = Path(json_path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


# --- the command ------------------------------------------------------------------------------------------------

def parse_phases(text: str) -> list[tuple[str, int, float]]:
    return [(name, int(c), float(d)) for name, c, d in (item.split(":") for item in text.split(","))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--phases", type=parse_phases, default=list(PHASES), help="name:callers:seconds,...")
    parser.add_argument("--tiny-models-dir", default=None,
                        help="where the fallback tiny models are cached (QWEN3_SERVE_TINY_MODELS_DIR); default: "
                             "the engine benchmark's .tiny-models/tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="JSON", help=argparse.SUPPRESS)  # run by plot() in the plot venv
    args = parser.parse_args(argv)
    if args.plot:
        print(draw(Path(args.plot)))
        return 0

    from benchmarks.engine_bench import MODELS_DIR, machine_info, versions

    # The config's default tiny_models_dir, .tiny-models, holds the engine benchmark's per-shape
    # caches (no manifest at its top): a fallback build there would replace the whole folder.
    tiny_dir = Path(args.tiny_models_dir) if args.tiny_models_dir else MODELS_DIR / "tiny"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ramp-{stamp}.json"
    log_path = Path(tempfile.mkdtemp(prefix="ramp-")) / "serve.log"
    info, vers = machine_info(), versions()
    started = time.monotonic()
    proc, url = start_server(args.config, log_path=log_path, tiny_models_dir=tiny_dir)
    ready_s = time.monotonic() - started
    watch = ReplicaWatch(proc.pid)
    try:
        run = asyncio.run(run_phases(url, args.phases, watch, seed=args.seed, advance_when=follow_load()))
        events = watch.events_since(run["t0_wall"])
    finally:
        exit_code = stop_server(proc)
    summary = summarize(run, events)
    settings = {"config": args.config, "phases": args.phases, "tiny_models_dir": str(tiny_dir), "seed": args.seed,
                "rerank_share": RERANK_SHARE, "timeout_s": TIMEOUT_S, "replica_title": ROUTER_TITLE,
                "config_text": Path(args.config).read_text()}
    result = {"benchmark": "ramp", "created": datetime.now(timezone.utc).isoformat(), "machine": info,
              "versions": vers, "settings": settings, "server_ready_s": round(ready_s, 1),
              "server_exit_code": exit_code, "server_log": str(log_path), "summary": summary,
              "requests": run["records"]}
    out.write_text(json.dumps(result, indent=1))
    png = plot(out)
    keys = ("requests", "ok", "failures", "failures_by_kind", "rejected_429", "malformed", "embedding_lengths",
            "peak_replicas", "peak_running", "time_to_scale_up_s", "time_to_running_s", "time_to_scale_down_s",
            "time_to_running_scale_down_s")
    print(json.dumps({k: summary[k] for k in keys} | {"server_ready_s": result["server_ready_s"],
                                                      "server_exit_code": exit_code}))
    for e in summary["serve_events"]:
        print(f"  t={e['t']:7.1f} s  " + " ".join(f"{k}={v}" for k, v in e.items() if k != "t"))
    for p in summary["phases"]:
        print(f"{p['name']:>5} c{p['concurrency']:<3} {p['start']:6.0f}-{p['end']:<6.0f} s  "
              f"{p['requests']:5d} requests {p['ok_per_s']:6.2f} ok/s  p50 {p['p50_s']} s  p99 {p['p99_s']} s")
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
