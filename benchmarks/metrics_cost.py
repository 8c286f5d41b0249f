"""What observing a request costs the ingress process, and what the HTTP benchmark saw of it.

    python -m benchmarks.metrics_cost                            # the process's own CPU per request
    python -m benchmarks.metrics_cost --ab RUN.json [RUN.json ...]  # summarise http_bench A/B runs

The first part drives the request path's observability without HTTP or an engine: a `RequestClock`
per request (TEI's headers built), and `RequestMetrics.record` on or off, at a server's pace
(200 requests/s for a while, alternating off/on/off/on). The CPU of the whole process is counted,
Ray's metric threads included: each Ray metric call costs about as much again in the background.

The second summarises `python -m benchmarks.http_bench --peers ours,ours-nometrics` runs (run them in
both orders: on these machines the second server of a run is often faster): the geometric mean of
ours / ours-nometrics req/s per point, and the ingress replica's CPU per request in each.
Results go to ``benchmarks/results/metrics-cost-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.engine_bench import RESULTS_DIR, machine_info, versions


async def paced_cpu_us(record: bool, seconds: float, rate: int) -> float:
    """The process's CPU microseconds per request, observing ``rate`` requests a second."""
    from serving.api.timing import RequestClock
    from serving.engines.timing import StageTimes

    metrics = _metrics()

    class Result:
        times = StageTimes(1, 1e-4, 1e-4, 1e-3, 2e-3, 1, 2)

    async def model():
        return Result()

    n, cpu0, wall0 = 0, time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < seconds:
        for _ in range(rate // 50):
            clock = RequestClock()
            with clock.track("embeddings", ("model-a", "model-b", "model-c")[n % 3]):
                await clock.call_model("embed", model())
                clock.tokens = 7
            clock.respond(200)
            clock.tei_headers()
            if record:
                metrics.record(clock)
            n += 1
        await asyncio.sleep(0.02)
    return (time.process_time() - cpu0) / n * 1e6


_METRICS: list[Any] = []


def _metrics():
    if not _METRICS:
        from serving.metrics import RequestMetrics

        _METRICS.append(RequestMetrics())
    return _METRICS[0]


def process_cost(seconds: float, rate: int) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        runs = [(label, asyncio.run(paced_cpu_us(record, seconds, rate)))
                for label, record in (("off", False), ("on", True), ("off", False), ("on", True))]
    finally:
        ray.shutdown()
    mean = {label: sum(v for name, v in runs if name == label) / 2 for label in ("off", "on")}
    return {"rate_per_s": rate, "seconds_each": seconds, "runs_cpu_us_per_request": runs,
            "recording_cpu_us_per_request": round(mean["on"] - mean["off"], 1)}


def ab_summary(paths: list[Path]) -> dict[str, Any]:
    ratios: dict[str, list[float]] = defaultdict(list)
    router_ms: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in paths:
        points = {(p["peer"], p["workload"], p["concurrency"]): p for p in json.loads(path.read_text())["points"]}
        for (peer, workload, concurrency), on in points.items():
            off = points.get(("ours-nometrics", workload, concurrency))
            if peer != "ours" or off is None:
                continue
            key = f"{workload}@c{concurrency}"
            ratios[key].append(on["req_per_s"] / off["req_per_s"])
            router_ms[key].append((_router_ms(on), _router_ms(off)))
    return {key: {"req_per_s_ratio_geomean": round(math.exp(sum(map(math.log, r)) / len(r)), 3),
                  "req_per_s_ratios": [round(x, 3) for x in r],
                  "router_cpu_ms_per_request_on_off": [(round(a, 3), round(b, 3)) for a, b in router_ms[key]],
                  "router_cpu_ms_diff_mean": round(sum(a - b for a, b in router_ms[key]) / len(r), 3)}
            for key, r in ratios.items()}


def _router_ms(point: dict[str, Any]) -> float:
    """CPU ms per request of the ingress replica (the process that records the series)."""
    cpu = sum(r["cpu_s"] for r in point["cpu"] if r["tree"] == "server" and ":router" in str(r["process"]))
    return cpu / max(point["completed"], 1) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12, help="each off/on run (default 12)")
    parser.add_argument("--rate", type=int, default=200, help="requests per second (default 200)")
    parser.add_argument("--ab", type=Path, nargs="*", default=[], help="http_bench JSON results to summarise")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {"benchmark": "metrics_cost", "started_at": stamp, "machine": machine_info(), "versions": versions(),
              "process": process_cost(args.seconds, args.rate)}
    if args.ab:
        result["http_ab"] = {"runs": [p.name for p in args.ab], "points": ab_summary(args.ab)}
    out = args.out or RESULTS_DIR / f"metrics-cost-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "versions")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
