"""Helpers for tests that kill parts of a live app: its replica and engine processes, and callers
that keep requests in flight and record every answer."""

import threading

import httpx
import psutil

CALLER_TIMEOUT_S = 300  # a replacement starts its engines again (TP=2: 94 s in one run here)


def replica_processes(deployment: str, app: str = "qwen3") -> list[psutil.Process]:
    """The replica actors' processes of the Ray instance this process started (its raylet's workers,
    not another test run's on the machine): Ray titles them `ray::ServeReplica:<app>:<deployment>`."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if (p.cmdline() or [""])[0].startswith(title) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def engine_core(replica: psutil.Process) -> psutil.Process:
    """The vLLM engine-core process of a replica that holds one engine."""
    cores = [p for p in replica.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [p.name()])]
    if not cores:  # its title was not set (seen once): the engine core is the replica's own spawned child
        cores = [p for p in replica.children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(cores) == 1, [p.cmdline() for p in replica.children(recursive=True)]
    return cores[0]


class Callers:
    """Threads that each send their own request in a loop and record (status, body) per answer."""

    def __init__(self, send, n: int = 4):
        self.send, self.stop = send, threading.Event()
        self.pause_s = 0.0  # between a caller's requests: > 0 leaves the cores to a starting replica
        self.results: list[tuple[int, object, object]] = []  # (caller, status, body)
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(n)]

    def _loop(self, caller: int):
        with httpx.Client(timeout=CALLER_TIMEOUT_S) as client:
            while not self.stop.is_set():
                try:
                    response = self.send(client, caller)
                    body = response.json() if response.headers.get("content-type", "").startswith(
                        "application/json") else response.text
                    self.results.append((caller, response.status_code, body))
                except httpx.TimeoutException:
                    self.results.append((caller, "timeout", None))
                except httpx.TransportError as exc:
                    self.results.append((caller, "transport", repr(exc)))
                if self.pause_s:
                    self.stop.wait(self.pause_s)

    @property
    def statuses(self) -> list:
        return [status for _, status, _ in self.results]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(CALLER_TIMEOUT_S + 10)
        assert not any(t.is_alive() for t in self.threads), "a caller hung"
