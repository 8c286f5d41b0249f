"""Ingress autoscaling end to end: `qwen3-serve serve` with configs/cpu-autoscale.yaml's scaling (tiny
fallback models, engines in eager mode and the reranker in a deployment of its own, so a replica
starts in reasonable time on 2 busy cores) goes from 1 to 2 running ingress replicas under 16
closed-loop callers, serves on both, and back to 1 when the load drops: Ray Serve drains the
replica that served and stops it. Every request of the ramp, including those around both changes,
must be answered 200 and well-formed. Reuses the ramp benchmark's parts (benchmarks/ramp.py) with
shorter phases."""

from __future__ import annotations

import asyncio
import json

import pytest

import yaml

from benchmarks.ramp import CONFIG, ReplicaWatch, follow_load, run_phases, start_server, stop_server, summarize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Low; high until the second replica has served for 20 s (at most 900 s: its engines start on two
# cores the load keeps busy, 422 s in one ramp here); low until Ray Serve is back at one replica
# (at most 240 s).
PHASES = (("low", 1, 20), ("high", 16, 900), ("low", 1, 240))


@pytest.fixture
def autoscaling_server(tiny_models, tmp_path):
    # The session's tiny models: their folder carries the manifest the fallback's cache check reads,
    # so the server reuses them instead of building its own.
    config = yaml.safe_load(CONFIG.read_text())
    for model in config["models"]:
        model["engine"]["enforce_eager"] = True
        if model["kind"] == "rerank":
            # One replica of its own, reached through a handle: an ingress replica then starts one engine,
            # not two in turn, which halves the wait for the second replica on cores the load keeps busy.
            # The scale-down then drains both paths: engine calls in the replica and handle calls.
            model["placement"] = "deployment"
    path = tmp_path / "cpu-autoscale-eager.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, url = start_server(path, log_path=tmp_path / "serve.log", tiny_models_dir=tiny_models["embedding"].parent)
    try:
        yield proc, url
    finally:
        stop_server(proc)


def test_ingress_scales_up_under_load_and_back_down_without_failed_requests(autoscaling_server, tmp_path,
                                                                             measurements):
    proc, url = autoscaling_server
    watch = ReplicaWatch(proc.pid)
    run = asyncio.run(run_phases(url, PHASES, watch, advance_when=follow_load(hold_s=20)))
    s = summarize(run, watch.events_since(run["t0_wall"]))
    (tmp_path / "ramp.json").write_text(json.dumps({"summary": s, "requests": run["records"]}, indent=1))
    measurements["autoscaling ramp"] = {k: s[k] for k in (
        "requests", "time_to_scale_up_s", "time_to_scale_down_s", "peak_running", "time_to_running_s")} | {
        "serve_events": [f"{e['t']:.0f}s {e['kind']} {e.get('state') or e.get('ongoing') or ''}".strip()
                         for e in s["serve_events"] if e["kind"] != "starting"]}
    high = s["phases"][1]
    context = (s["replica_changes"], s["serve_events"])

    assert s["timeline"] and s["timeline"][0]["replicas"] == 1, s["timeline"][:5]
    assert s["time_to_scale_up_s"] is not None and s["time_to_scale_up_s"] <= high["end"] - high["start"], context
    assert s["peak_replicas"] == 2 and s["peak_running"] == 2, context
    assert s["time_to_running_scale_down_s"] is not None and s["final_replicas"] == 1, context
    # The replica that went away had served: Ray Serve stopped it from RUNNING (draining it).
    assert any(e["kind"] == "stopping" and e.get("state") == "RUNNING" for e in s["serve_events"]), context
    # ... within its grace period: drained and its engines stopped, not killed.
    assert not any(e["kind"] == "force_killed" for e in s["serve_events"]), context
    assert s["failures"] == 0, (s["failures_by_kind"], s["failed_requests"][:10], context)
    assert s["requests"] == s["ok"] > 0
    assert s["malformed"] == 0 and len(s["embedding_lengths"]) == 1, (s["malformed"], s["embedding_lengths"])
