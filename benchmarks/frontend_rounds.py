"""Medians over repeated HTTP benchmark runs: ours against `vllm serve` per point, as ratios.

    python -m benchmarks.frontend_rounds benchmarks/results/http-tiny-frontend-r*.json

`--ours` and `--against` compare two other peers of the same runs (e.g. `--against vllm-spin10k`).

One run on a noisy 2-core machine can move a point by 10-20% (a stray process, the client's share of
the cores), so issue 27's front-end runs were repeated and are reported as the median of each
point's ratio, with the per-process CPU per request (median) that explains it. Processes are
grouped by role: the front end (our ingress replica / vLLM's API server), the engine (vLLM's engine
core and workers), HAProxy, Ray's HAProxy manager, Ray's agent and other Ray processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

ROLES = (("ServeReplica", "front end"), ("api_server", "front end"), ("EngineCore", "engine"), ("Worker", "engine"),
         ("spawn_main", "engine"), ("HAProxyManager", "haproxy manager"), ("haproxy", "haproxy"),
         ("DashboardAgent", "ray agent"))


def role(process: str, tree: str) -> str:
    if tree != "server":
        return "client"
    return next((name for key, name in ROLES if key in process), "ray other")


def cpu_ms_per_request(point: dict) -> dict[str, float]:
    by_role = Counter()
    for sample in point["cpu"]:
        by_role[role(sample["process"], sample["tree"])] += sample["cpu_s"]
    return {name: seconds / point["completed"] * 1000 for name, seconds in by_role.items()}


def summarise(paths: list[Path], ours_peer: str = "ours", against: str = "vllm") -> dict:
    runs = [json.loads(p.read_text()) for p in paths]
    keys = sorted({(p["workload"], p["concurrency"]) for run in runs for p in run["points"]})
    table = []
    for workload, concurrency in keys:
        per_peer: dict[str, list[dict]] = {}
        for run in runs:
            for p in run["points"]:
                if (p["workload"], p["concurrency"]) == (workload, concurrency) and p["completed"]:
                    per_peer.setdefault(p["peer"], []).append(p)
        ours, vllm = per_peer.get(ours_peer, []), per_peer.get(against, [])
        if not ours or not vllm:
            continue
        metric = "p50_ms" if workload == "embed-short" else "req_per_s"
        ratios = [o[metric] / v[metric] for o, v in zip(ours, vllm)]  # each run's own pair, side by side
        row = {"workload": workload, "concurrency": concurrency, "metric": metric, "rounds": len(ratios),
               "peers": [ours_peer, against],
               "ours": statistics.median(o[metric] for o in ours), "vllm": statistics.median(v[metric] for v in vllm),
               "ratio_median": statistics.median(ratios), "ratios": [round(r, 3) for r in ratios]}
        for peer, points in (("ours", ours), ("vllm", vllm)):
            shares = [cpu_ms_per_request(p) for p in points]
            names = sorted({n for s in shares for n in s})
            row[f"{peer}_cpu_ms"] = {n: round(statistics.median(s.get(n, 0.0) for s in shares), 3) for n in names}
        table.append(row)
    return {"runs": [str(p) for p in paths], "machine": runs[0].get("machine"), "versions": runs[0].get("versions"),
            "points": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--ours", default="ours", help="the peer in the numerator (default: ours)")
    parser.add_argument("--against", default="vllm", help="the peer in the denominator (default: vllm)")
    args = parser.parse_args()
    summary = summarise(args.runs, args.ours, args.against)
    print(f"{args.ours} (\"ours\") against {args.against} (\"vllm\")")
    for row in summary["points"]:
        path = {peer: sum(v for k, v in row[f"{peer}_cpu_ms"].items() if k not in ("engine", "client"))
                for peer in ("ours", "vllm")}
        fe = {peer: row[f"{peer}_cpu_ms"].get("front end", 0.0) for peer in ("ours", "vllm")}
        print(f"{row['workload']:11} c{row['concurrency']:<3} {row['metric']:9} ours {row['ours']:7.1f} vllm "
              f"{row['vllm']:7.1f}  ratio {row['ratio_median']:.2f} {row['ratios']}  path ms {path['ours']:.2f} / "
              f"{path['vllm']:.2f}  front end {fe['ours']:.2f} / {fe['vllm']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
