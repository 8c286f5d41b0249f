"""`qwen3-serve serve` end to end: hub unreachable -> tiny fallback, said in the first log line and
in /v1/models; serves HTTP; exits cleanly on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import yaml

from benchmarks.procs import session_processes
from serving.ports import reserve_port
from tests.net import clean_env, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cannot_load(broken_embedding_checkpoint, tmp_path_factory):
    """`qwen3-serve serve` with a model that cannot load, run while the other test's server starts:
    each has a Ray instance of its own (a start-up is mostly one core importing Python)."""
    broken = broken_embedding_checkpoint
    config = {"models": [{"name": "broken", "kind": "embed", "engine": {"model": str(broken)},
                          "resources": {"accelerator": "cpu"}}],
              "http": {"host": "127.0.0.1", "port": reserve_port()}}
    path = tmp_path_factory.mktemp("cannot-load") / "app.yaml"
    path.write_text(yaml.safe_dump(config))

    def run() -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--config", str(path)],
                              capture_output=True, text=True, env=clean_env(), timeout=600)
        return proc, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=1) as pool:
        yield broken, pool.submit(run)


def session_commands(sid: int) -> list[str]:
    """The command lines of the processes in session ``sid``."""
    commands = []
    for process in session_processes(sid):
        try:
            commands.append(" ".join(process.cmdline()))
        except psutil.Error:  # gone meanwhile
            pass
    return commands


def test_serve_falls_back_to_tiny_models_and_stops_on_sigterm(tmp_path, cannot_load):
    port = reserve_port()
    engine = {"cpu_kvcache_space_gib": 1, "enforce_eager": True}  # max_model_len: the checkpoint's
    config = {
        "models": [
            {"name": "Qwen/Qwen3-Embedding-0.6B", "kind": "embed", "resources": {"accelerator": "cpu"},
             "engine": {"model": "Qwen/Qwen3-Embedding-0.6B"} | engine},
            {"name": "Qwen/Qwen3-Reranker-0.6B", "kind": "rerank", "resources": {"accelerator": "cpu"},
             "engine": {"model": "Qwen/Qwen3-Reranker-0.6B", "block_size": 32} | engine},
        ],
        "tiny_models_dir": str(tmp_path / "tiny"),
        "http": {"host": "127.0.0.1", "port": port},
    }
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--config", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, env=clean_env() | {"HF_HUB_OFFLINE": "1"},
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, alive=lambda: proc.poll() is None)
        assert ready, (tmp_path / "serve.log").read_text()[-3000:]
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
        assert {m["id"]: m["fallback"] for m in models} == {
            "Qwen/Qwen3-Embedding-0.6B": True, "Qwen/Qwen3-Reranker-0.6B": True}
        # What the engines run with: the tiny checkpoints' 32,768 positions, not a configured number.
        assert {m["max_model_len"] for m in models} == {32768}
        embed = httpx.post(f"{url}/v1/embeddings", json={"model": "Qwen/Qwen3-Embedding-0.6B", "input": "hi"},
                           timeout=60)
        assert embed.status_code == 200 and len(embed.json()["data"][0]["embedding"]) == 128
        # Ray's dashboard (its web front end and a process per module) is not started unless asked for:
        # only the API server Ray itself needs, without its front end and with one module.
        session = session_commands(proc.pid)
        assert any("raylet" in cmd for cmd in session), session
        assert [cmd for cmd in session if "dashboard.py" in cmd and "--disable-frontend" not in cmd] == [], session
        assert not any(cmd.startswith("ray-dashboard-") for cmd in session), session
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        # A clean exit leaves nothing of its session running (HAProxy, in a process group of its own,
        # could outlive it holding the port).
        deadline = time.monotonic() + 30
        while session_commands(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert session_commands(proc.pid) == []
    finally:
        try:  # its own Ray instance is in its process group; `ray stop` would kill every Ray on the machine
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first_line = (tmp_path / "serve.log").read_text().splitlines()[0]
    assert "FALLBACK" in first_line and "Qwen/Qwen3-Embedding-0.6B" in first_line


def test_serve_exits_with_the_cause_when_a_model_cannot_load(cannot_load):
    """No endless replica restarts: the deployment fails after one start-up failure and the
    last stderr line names the model and the cause raised inside its replica's engine process."""
    broken, run = cannot_load
    proc, elapsed = run.result()
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert last.startswith(f"qwen3-serve: error: model 'broken' ({broken}) failed to start: SafetensorError"), last
    assert elapsed < 240, f"took {elapsed:.0f} s to give up"
