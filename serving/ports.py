"""Ports this program must choose before another program binds them (HAProxy's listeners, a Ray
node's components, a test server's): never the same port twice, in this process or any other.

Binding port 0 and closing the socket, then passing the number on, is a race: the next call, or any
other process, can be handed the same number before the program it was meant for binds it. So a
port is leased here until the process that leased it exits:

- candidates lie below the kernel's ephemeral range (no outgoing connection is ever given one) and
  outside the ranges Ray binds on its own: workers 10002-19999 (Ray refuses a node whose component
  port lies there) and Serve's direct-ingress replicas 30000-31000;
- a lease is a file named for the port in one directory shared by every process on the machine,
  holding the leaser's pid and start time; it is written under an exclusive ``flock``, so two
  processes never lease one port, and a lease whose process is gone is taken over;
- a port is leased only if it can be bound right now, so ports held by programs that do not lease
  are skipped.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

import psutil

RAY_WORKER_PORTS = (10002, 19999)  # Ray's default --min/max-worker-port
RAY_SERVE_PORTS = (30000, 31000)  # Serve's direct-ingress HTTP ports (RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT)
FIRST_PORT = 20000
# One directory for every process on the machine (TMPDIR may differ between them).
LEASE_DIR = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / "qwen3-serve-ports"

_leased: list[Path] = []


def reserve_port() -> int:
    """A port free now and leased to this process: no other call, here or in another process that
    leases through this module, gets it while this process lives."""
    LEASE_DIR.mkdir(parents=True, exist_ok=True)
    me = _identity(os.getpid())
    with open(LEASE_DIR / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        candidates = _candidates()
        for port in random.sample(candidates, k=len(candidates)):
            lease = LEASE_DIR / str(port)
            if _held(lease) or not _bindable(port):
                continue
            lease.write_text(me)
            if not _leased:
                atexit.register(_release_all)
            _leased.append(lease)
            return port
    raise OSError(f"no free port left in {FIRST_PORT}-{_ephemeral_low() - 1}")


def _candidates() -> list[int]:
    return [p for p in range(FIRST_PORT, _ephemeral_low())
            if not RAY_WORKER_PORTS[0] <= p <= RAY_WORKER_PORTS[1] and not RAY_SERVE_PORTS[0] <= p <= RAY_SERVE_PORTS[1]]


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _identity(pid: int) -> str:
    """The pid with its start time: a pid reused by a later process is not the leaser."""
    try:
        return f"{pid} {psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return f"{pid} gone"


def _held(lease: Path) -> bool:
    """The lease exists and the process that wrote it still runs."""
    try:
        owner = lease.read_text()
    except OSError:
        return False
    pid = owner.split()[0] if owner.split() else ""
    return pid.isdigit() and _identity(int(pid)) == owner


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _release_all() -> None:
    me = _identity(os.getpid())
    for lease in _leased:
        try:
            if lease.read_text() == me:
                lease.unlink()
        except OSError:
            pass
