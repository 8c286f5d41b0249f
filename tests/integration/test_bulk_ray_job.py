"""`qwen3-serve score` as a Ray job: `ray job submit` to a `ray start --head` on loopback, stopped
with `ray job stop` mid-run (no engine process may survive it), then submitted again: it
finishes the rest and the output has every id once.

The head is this module's own (its own temp dir and ports); only its processes are stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.bulk import (alive, committed_checkpoints, descendants, is_engine_process, kill_all, read_output,
                        score_rows, write_engine_config, write_parquet)
from tests.integration.conftest import engine_fields
from tests.net import clean_env, free_port, wait_for
from tests.texts import QUERIES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
N_GOOD = 300
BAD_ROWS = [({"id": None, "query": "q", "document": "a pair without an id"}, None, "missing id"),
            ({"id": "bad-null-document", "query": "q", "document": None}, "bad-null-document", "missing `document`"),
            ({"id": "bad-empty-query", "query": "", "document": "d"}, "bad-empty-query", "`query` is an empty string")]


def head_env() -> dict[str, str]:
    # Ray 2.60 turns token auth on for a new head by default; this loopback test cluster opts out.
    return clean_env() | {"PYTHONPATH": str(REPO_ROOT), "RAY_AUTH_MODE": "disabled"}


def own_processes(tag: str) -> list[psutil.Process]:
    """The head's processes (their command lines name its temp dir) and everything they started."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tag in a for a in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found + [c for p in found for c in descendants(p.pid)]


@pytest.fixture(scope="module")
def head():
    temp_dir = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths live under it
    dashboard = free_port()
    proc = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
                           f"--temp-dir={temp_dir}", "--num-cpus=4", "--disable-usage-stats",
                           # Other Ray clusters on this machine hold Ray's default ports.
                           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                           f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
                           f"--object-manager-port={free_port()}"],
                          env=head_env(), capture_output=True, text=True, timeout=180)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield {"address": f"http://127.0.0.1:{dashboard}", "temp_dir": temp_dir}
    finally:
        kill_all(own_processes(temp_dir))  # not `ray stop`: that would stop every Ray on the machine


def submit(head, submission_id: str, args: list[str], wait: bool) -> subprocess.CompletedProcess:
    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    deadline = time.monotonic() + 120
    while True:
        proc = subprocess.run([RAY, "job", "submit", "--address", head["address"], "--submission-id", submission_id,
                               "--runtime-env-json", runtime_env, *([] if wait else ["--no-wait"]), "--", *args],
                              env=head_env(), capture_output=True, text=True, timeout=900)
        # A fresh head answers before its job agent is up.
        if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def job_status(head, submission_id: str) -> str:
    proc = subprocess.run([RAY, "job", "status", "--address", head["address"], submission_id], env=head_env(),
                          capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def jobs(head, tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bulk-job")
    rows = score_rows(N_GOOD, QUERIES) + [row for row, _, _ in BAD_ROWS]
    write_parquet(tmp / "pairs.parquet", rows)
    out = tmp / "out"
    config = write_engine_config(tmp / "engines.yaml", tiny_models, engine_fields())
    args = [sys.executable, "-m", "serving.cli", "score", "--config", str(config), "--input",
            str(tmp / "pairs.parquet"), "--output", str(out), "--batch-size", "32", "--batches-in-flight", "1",
            "--no-progress"]

    first = submit(head, "bulk-stopped", args, wait=False)
    assert first.returncode == 0, first.stderr[-3000:]
    committed = wait_for(lambda: len(committed_checkpoints(out)) >= 2, 600, interval_s=0.5)
    engines = [p for p in own_processes(head["temp_dir"]) if is_engine_process(p)]
    stop = subprocess.run([RAY, "job", "stop", "--address", head["address"], "bulk-stopped"], env=head_env(),
                          capture_output=True, text=True, timeout=180)
    wait_for(lambda: not alive(engines), 60)
    stopped = {"committed": committed, "engines_before": len(engines), "stop": stop,
               "engines_after": [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in alive(engines)],
               "status": job_status(head, "bulk-stopped"), "ids_at_stop": len(committed_checkpoints(out))}
    kill_all(alive(engines))

    second = submit(head, "bulk-resubmitted", args, wait=True)
    return {"stopped": stopped, "second": second, "status": job_status(head, "bulk-resubmitted"), "out": out}


def test_ray_job_stop_leaves_no_engine_process_behind(jobs):
    stopped = jobs["stopped"]
    assert stopped["committed"] and stopped["engines_before"] >= 2, stopped  # the actor and its engine core
    assert "stopped" in stopped["status"].lower(), stopped["status"]
    assert stopped["engines_after"] == [], stopped


def test_resubmitted_job_succeeds(jobs):
    assert "succeeded" in jobs["status"].lower(), jobs["second"].stdout[-3000:]
    assert "done: rows ok" in jobs["second"].stdout


def test_every_id_once_after_stop_and_resubmit(jobs):
    table = read_output(jobs["out"])
    counts = Counter(v for v in table["id"].to_pylist() if v is not None)
    expected = {f"pair-{i:05d}" for i in range(N_GOOD)} | {rid for _, rid, _ in BAD_ROWS if rid}
    assert [i for i, n in counts.items() if n > 1] == [] and set(counts) == expected
    assert table["id"].null_count == 1


def test_score_rows_have_scores_and_bad_rows_have_reasons(jobs):
    rows = read_output(jobs["out"]).to_pylist()
    good = [r for r in rows if r["error"] is None]
    assert len(good) == N_GOOD and all(0.0 <= r["score"] <= 1.0 and r["n_tokens"] > 0 for r in good)
    errors = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    for _, rid, reason in BAD_ROWS:
        assert reason in errors[rid] and errors[rid] is not None
    assert all(r["score"] is None for r in rows if r["error"] is not None)
