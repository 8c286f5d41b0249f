"""serving.ports: a port is leased to one caller, in this process or any other, until its process exits."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from serving import ports

# Leases {n} ports, prints them, and lives on until its stdin closes (a lease ends with its process).
LEASE_MANY = ("import sys; from serving.ports import reserve_port; "
              "print(' '.join(str(reserve_port()) for _ in range({n})), flush=True); sys.stdin.read()")


@pytest.fixture
def small_range(monkeypatch, tmp_path):
    """A private lease directory, so this test's leases never meet a real run's."""
    monkeypatch.setattr(ports, "LEASE_DIR", tmp_path / "leases")
    return tmp_path / "leases"


def test_one_process_never_gets_a_port_twice(small_range):
    got = [ports.reserve_port() for _ in range(300)]
    assert len(set(got)) == len(got)
    assert all(ports.FIRST_PORT <= p < ports._ephemeral_low() for p in got)
    assert not any(lo <= p <= hi for p in got for lo, hi in (ports.RAY_WORKER_PORTS, ports.RAY_SERVE_PORTS))


def test_processes_leasing_at_once_get_disjoint_ports(small_range):
    script = f"from serving import ports; from pathlib import Path; ports.LEASE_DIR = Path({str(small_range)!r}); " \
             + LEASE_MANY.format(n=200)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    sets = [set(map(int, p.stdout.readline().split())) for p in procs]
    for p in procs:
        p.communicate(timeout=60)
    assert all(len(s) == 200 for s in sets)
    assert len(set().union(*sets)) == 800


def test_a_dead_process_lease_is_taken_over_and_a_live_one_is_not(small_range, monkeypatch):
    small_range.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    monkeypatch.setattr(ports, "_candidates", lambda: [24001, 24002])
    (small_range / "24001").write_text(f"{pid} 1.000")  # its process has exited
    (small_range / "24002").write_text(ports._identity(1))  # a live process (init)
    assert ports.reserve_port() == 24001
    with pytest.raises(OSError, match="no free port"):
        ports.reserve_port()


def test_a_port_bound_by_a_program_that_does_not_lease_is_skipped(small_range, monkeypatch):
    with socket.socket() as s:
        s.bind(("", 0))
        bound = s.getsockname()[1]
        monkeypatch.setattr(ports, "_candidates", lambda: [bound])
        with pytest.raises(OSError, match="no free port"):
            ports.reserve_port()
