"""`qwen3-serve encode` run as a user runs it (a subprocess with its own local Ray), killed with
SIGKILL after some rows are committed and run again: every id exactly once, committed rows not
recomputed, bad rows as error rows; an engine killed during the rerun restarts its actor; a
finished output's rerun is a no-op; a second writer is refused.

One engine starts per run (about a minute each here); the module runs three jobs in all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.bulk import (BAD_ENCODE_ROWS, TOO_LONG, alive, committed_checkpoints, committed_ids, descendants,
                        is_engine_process, kill_all, read_output, write_encode_jsonl, write_engine_config)
from tests.integration.conftest import engine_fields
from tests.net import clean_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO_ROOT = Path(__file__).resolve().parents[2]
N_GOOD = 600
BAD = BAD_ENCODE_ROWS + [TOO_LONG]


def cli_env() -> dict[str, str]:
    # The worktree's code in the driver and in Ray's workers (which inherit the driver's environment).
    return clean_env() | {"PYTHONPATH": str(REPO_ROOT)}


def encode_args(corpus: Path, out: Path, config: Path) -> list[str]:
    # Small batches, one at a time: many commits, so the kill lands mid-run.
    return [sys.executable, "-m", "serving.cli", "encode", "--config", str(config), "--input", str(corpus),
            "--output", str(out), "--no-truncate", "--batch-size", "16", "--batches-in-flight", "1", "--no-progress"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO_ROOT, env=cli_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def engine_cores(pid: int) -> list:
    """The vLLM engine-core processes under ``pid`` (vLLM titles them VLLM::EngineCore)."""
    found = []
    for p in alive(descendants(pid)):
        try:
            if "EngineCore" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def job(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bulk-cli")
    corpus, out = tmp / "corpus.jsonl", tmp / "out"
    good = write_encode_jsonl(corpus, N_GOOD, BAD)
    config = write_engine_config(tmp / "engines.yaml", tiny_models, engine_fields())
    args = encode_args(corpus, out, config)

    # Run 1: SIGKILL the driver once a few batches are committed.
    first = start(args, tmp / "run1.log")
    try:
        committed = wait_for(lambda: len(committed_checkpoints(out)) >= 3 or first.poll() is not None, 600)
        tree = descendants(first.pid)
        assert committed and first.poll() is None, "run 1 ended before it could be killed:\n" + (
            tmp / "run1.log").read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait()
        # Whatever the driver left running (Ray, the engine actor, vLLM) must go away by itself.
        engines = [p for p in tree if is_engine_process(p)]
        wait_for(lambda: not alive(engines), 60)
    finally:
        if first.poll() is None:
            first.kill()
    # Ray's own agents of the dead driver's local instance may linger a while; they are ours, so
    # they go now. Engines must not be among them.
    leftovers = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in alive(engines)]
    kill_all(alive(tree))
    after_kill = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.glob("*.parquet")}
    ids_after_kill = committed_ids(out)

    # Run 2 (the resume): kill its engine process once that engine has committed a batch. (Counted
    # from the engine's start: Ray Data's checkpoint filter may write checkpoint files before it.)
    second = start(args, tmp / "run2.log")
    killed_engine = None
    try:
        if wait_for(lambda: engine_cores(second.pid) or second.poll() is not None, 600) and second.poll() is None:
            before = set(committed_checkpoints(out))
            wait_for(lambda: len(set(committed_checkpoints(out)) - before) >= 1 or second.poll() is not None, 600)
            engines = engine_cores(second.pid)
            if engines and second.poll() is None:
                killed_engine = engines[0].pid
                os.kill(killed_engine, signal.SIGKILL)
        second.wait(timeout=900)
    finally:
        if second.poll() is None:
            second.kill()
    started = time.monotonic()
    third = subprocess.run(args, cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    return {"good": good, "out": out, "after_kill": after_kill, "ids_after_kill": ids_after_kill,
            "leftovers": leftovers, "second": second, "run2_log": (tmp / "run2.log").read_text(),
            "killed_engine": killed_engine, "third": third, "third_s": time.monotonic() - started,
            "args": args, "tmp": tmp}


def test_the_killed_driver_leaves_no_engine_process_behind(job):
    assert job["leftovers"] == []


def test_resumed_run_succeeds_after_its_engine_is_killed(job):
    assert job["second"].returncode == 0, job["run2_log"][-3000:]
    assert job["killed_engine"] is not None, "the engine finished before it could be killed"
    assert "engine died" in job["run2_log"]  # the actor exited, Ray restarted it and retried the batch


def test_every_id_exactly_once_after_kill_and_resume(job):
    table = read_output(job["out"])
    counts = Counter(v for v in table["id"].to_pylist() if v is not None)
    expected = set(job["good"]) | {row["id"] for row, _ in BAD if isinstance(row, dict) and "id" in row}
    assert [i for i, n in counts.items() if n > 1] == []
    assert set(counts) == expected
    # Rows without an id cannot be checkpointed; these come after the kill point, so exactly once.
    assert table["id"].null_count == sum(1 for row, _ in BAD if not isinstance(row, dict) or "id" not in row)


def test_committed_rows_were_not_recomputed(job):
    assert len(job["ids_after_kill"]) >= 3 * 16
    # Files committed before the kill are untouched, and the rerun processed only the rest.
    now = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in job["out"].glob("*.parquet")}
    committed_files = {name for name in job["after_kill"]
                       if any(name.startswith(c.stem) for c in committed_checkpoints(job["out"]))}
    assert committed_files and all(now.get(name) == job["after_kill"][name] for name in committed_files)
    # The summary line, wherever it is: Ray's raylet may still log the killed engine's worker after it.
    summary = [line for line in job["run2_log"].splitlines() if "qwen3-serve encode: done:" in line][-1:] or [""]
    summary = summary[0]
    total = N_GOOD + len(BAD)
    processed = total - len(job["ids_after_kill"])
    assert f"rows ok {processed - len(BAD):,}, rows failed {len(BAD)}," in summary, summary


def test_bad_rows_are_error_rows_with_reasons_and_null_results(job):
    rows = read_output(job["out"]).to_pylist()
    errors = [(r["id"], r["error"]) for r in rows if r["error"] is not None]
    assert len(errors) == len(BAD)
    for (row, reason) in BAD:
        rid = row.get("id") if isinstance(row, dict) else None
        match = [e for i, e in errors if i == rid and reason in e]
        assert match, (row, reason, errors)
    assert all(r["embedding"] is None and r["n_tokens"] is None for r in rows if r["error"] is not None)
    good = [r for r in rows if r["error"] is None]
    assert len(good) == N_GOOD and all(len(r["embedding"]) == 128 and r["n_tokens"] > 0 for r in good)


def test_rerun_of_a_finished_output_is_a_noop_that_says_so(job):
    third = job["third"]
    assert third.returncode == 0, third.stderr[-3000:]
    assert "already complete, nothing to do" in third.stderr.strip().splitlines()[-1]
    assert job["third_s"] < 60  # no Ray, no engine


def test_a_second_writer_of_the_same_output_is_refused(job):
    from serving.batch.bookkeeping import OutputLock

    with OutputLock(str(job["out"])):  # as a running job holds it
        proc = subprocess.run(job["args"], cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2
    assert "is being written by another job" in proc.stderr.strip().splitlines()[-1]


def test_a_missing_model_path_exits_2_before_ray_starts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "serving.cli", "encode", "--model", "/no/such/model", "--input",
                           str(tmp_path), "--output", str(tmp_path / "out")], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "qwen3-serve: error: no such model directory: /no/such/model"
