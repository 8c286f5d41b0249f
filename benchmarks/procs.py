"""Servers as subprocesses: a clean environment, readiness, stopping, CPU and memory per process.

Shared by the soak run and the HTTP benchmark, which both start servers they measure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


def clean_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment (nothing of vLLM's, Ray's or ours set), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "QWEN3_SERVE_", "RAY_"))}
    return env | extra


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 600, ok: Callable[[int], bool] | None = None,
               log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; raise with the log's last line if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {last_line(log)}")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the server did not answer {url} within {timeout_s:.0f} s: {last_line(log)}")


def last_line(log: Path | None, markers: tuple[str, ...] = ("Error", "error", "ERROR", "Traceback")) -> str:
    """The last line of a log that looks like the cause (an error line if there is one)."""
    if log is None or not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if any(m in line for m in markers)]
    return (errors or lines or [""])[-1][:400]


def stop(proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """SIGTERM the server (so it shuts down cleanly), then SIGKILL whatever of its tree is left.

    Only the tree of ``proc`` (started by us, in a session of its own) is touched.
    """
    try:
        leftovers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        leftovers = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    for child in leftovers:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=30)


def process_label(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return f"pid {p.pid}"
    head = cmd[0] if cmd else p.name()
    if head.startswith("ray::") or head.startswith("VLLM"):
        return head.split(" ")[0]
    if cmd[1:2] == ["-c"]:  # an inline script: its first words say what it is
        return Path(head).name + " -c " + " ".join(cmd[2].split())[:50]
    args = " ".join(Path(c).name for c in cmd[1:4] if not c.startswith("-"))  # a script by its file name
    return f"{Path(head).name} {args[:60]}".rstrip()


def session_processes(sid: int) -> list[psutil.Process]:
    """The processes of session ``sid`` (a server started with ``start_new_session=True``: its pid).
    Unlike `tree`, this finds what left the server's process tree, such as an orphaned HAProxy."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                found.append(process)
        except OSError:  # gone meanwhile
            pass
    return found


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def sample_rss(root: psutil.Process) -> dict[int, tuple[str, int]]:
    out = {}
    for p in tree(root):
        try:
            out[p.pid] = (process_label(p), p.memory_info().rss)
        except psutil.Error:
            pass
    return out


@dataclass
class CpuWindow:
    """CPU seconds each process of some trees used between start() and stop(), as a share of the machine.

    A share of 1.0 is every usable core busy for the whole window, so on 2 cores one busy
    single-threaded process shows 0.5. Processes that start inside the window count from zero.
    """

    roots: dict[str, int]  # name -> root pid, e.g. {"server": ..., "load generator": ...}
    _start: dict[int, float] = field(default_factory=dict)
    _t0: float = 0.0

    def _times(self) -> dict[int, tuple[str, str, float]]:
        out = {}
        for name, pid in self.roots.items():
            try:
                procs = tree(psutil.Process(pid))
            except psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    out[p.pid] = (name, process_label(p), t.user + t.system)
                except psutil.Error:
                    pass
        return out

    def start(self) -> None:
        self._start = {pid: cpu for pid, (_, _, cpu) in self._times().items()}
        self._t0 = time.monotonic()

    def stop(self) -> list[dict[str, object]]:
        wall = time.monotonic() - self._t0
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        rows = []
        for pid, (name, label, cpu) in self._times().items():
            used = cpu - self._start.get(pid, 0.0)
            if used > 0.01 * wall:  # idle helpers are noise in the report
                rows.append({"tree": name, "pid": pid, "process": label, "cpu_s": round(used, 2),
                             "cpu_share": round(used / (wall * cpus), 3)})
        return sorted(rows, key=lambda r: -float(r["cpu_s"]))  # type: ignore[arg-type]
