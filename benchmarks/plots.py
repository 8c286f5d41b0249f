"""PNG plots of an HTTP benchmark or soak result; run in the plot venv (matplotlib), never in the serving venv.

    .bench-venvs/plot/bin/python benchmarks/plots.py benchmarks/results/http-....json
    .bench-venvs/plot/bin/python benchmarks/plots.py benchmarks/results/soak-....json
    .bench-venvs/plot/bin/python benchmarks/plots.py benchmarks/results/tenants-....json

For an HTTP result: <json stem>-throughput.png (throughput vs concurrency, client batch 1 and 32) and
<json stem>-latency.png (p99 latency vs throughput) next to the JSON. For a soak result:
<json stem>-rss.png (RSS over time of the largest processes). Standard library + matplotlib only.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("embed-b1", "req_per_s", "1 input (256 tokens) per request: requests/s"),
          ("embed-q32", "req_per_s", "1 short query (<= 32 tokens) per request: requests/s"),
          ("embed-b32", "tok_per_s", "32 inputs per request: tokens/s"))


def series(points, workload, peer, key):
    rows = sorted((p for p in points if p["workload"] == workload and p["peer"] == peer and p["completed"] > 0),
                  key=lambda p: p["concurrency"])
    return rows, [p["concurrency"] for p in rows], [p[key] for p in rows]


def soak(path, result, top=6):
    """RSS over time (warm-up included) of the `top` processes largest at the end, one line each."""
    memory = result["memory"][:top]
    names = [m["process"] for m in result["memory"]]
    window = result.get("late_window")
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for m in memory:
        points = m.get("warmup_series_s_mib", []) + m["series_s_mib"]
        label = m["process"] + (f" [pid {m['pid']}]" if names.count(m["process"]) > 1 else "")
        late = m.get("late_slope_mib_per_min", m["second_half_slope_mib_per_min"])
        ax.plot([t / 60 for t, _ in points], [r for _, r in points],
                label=f"{label}: {m['slope_mib_per_min']:+.1f}, late {late:+.1f} MiB/min")
    ax.axvline(result["settings"]["warmup_s"] / 60, color="grey", linestyle=":", label="end of warm-up")
    if window:
        ax.axvspan(window["from_s"] / 60, window["to_s"] / 60, color="grey", alpha=0.1,
                   label=f"late window ({window['kind']})")
    ax.set_xlabel("minutes since load started")
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    malloc = result.get("malloc", {}).get("setting", "system")
    ax.set_title(f"Soak: RSS of the {len(memory)} largest server processes, malloc {malloc}, "
                 f"{result['settings']['duration_s'] / 60:.0f} min, concurrency {result['settings']['concurrency']}")
    fig.tight_layout()
    out = Path(path).with_name(Path(path).stem + "-rss.png")
    fig.savefig(out, dpi=110)
    print(out)


def tenants(path, result):
    """Three panels: the search queries' p50/p99 alone and beside the flood with and without lanes
    (log scale), the cache stream's req/s, and the neighbour's req/s beside an over-quota tenant."""
    phases = result["phases"]
    lanes, cache, quotas = phases["lanes"], phases["cache"], phases["quotas"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    cases = [("alone", lanes["alone"]), ("flood, lanes", lanes["with_lanes"]["search"])]
    if "with_lanes_vllm_steps" in lanes:  # results since the lane scheduler
        cases.append(("flood, lanes,\nvLLM's steps", lanes["with_lanes_vllm_steps"]["search"]))
    cases.append(("flood, no lanes", lanes["without_lanes"]["search"]))
    xs = range(len(cases))
    ax.bar([x - 0.2 for x in xs], [c["p50_ms"] for _, c in cases], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [c["p99_ms"] for _, c in cases], 0.4, label="p99")
    ax.set_xticks(list(xs), [n for n, _ in cases])
    ax.set_yscale("log")
    ax.set_ylabel("search query latency (ms)")
    budget = result.get("max_num_batched_tokens") or phases.get("engines", {}).get("embed", {}).get(
        "max_num_batched_tokens")
    ax.set_title(f"Lanes: 1-query requests beside a 32x32 flood (step budget {budget})")
    ax.legend()
    ax = axes[1]
    names = ["uncached", "cached"] + (["vllm serve"] if "vllm_serve" in cache else [])
    values = [cache["embed"]["ok_per_s"], cache["embed-cached"]["ok_per_s"]] + (
        [cache["vllm_serve"]["ok_per_s"]] if "vllm_serve" in cache else [])
    ax.bar(names, values, color=["grey", "tab:green", "tab:blue"][:len(names)])
    ax.set_ylabel("requests/s")
    ax.set_title(f"Cache: Zipf(1.1) stream, {cache['stream_requests']} requests, "
                 f"hit ratio {cache['embed-cached'].get('hit_ratio')}")
    ax = axes[2]
    names = ["alone", "beside 4x over quota", "beside a retry loop"]
    values = [quotas["neighbour_alone"]["ok_per_s"], quotas["neighbour_beside_limited"]["ok_per_s"],
              quotas["neighbour_beside_hammering"]["ok_per_s"]]
    ax.bar(names, values, color="tab:purple")
    ax.set_ylabel("neighbour requests/s")
    ax.set_title(f"Quotas: limited tenant admitted {quotas['limited']['ok_per_s']}/s of its 5/s")
    for a in axes:
        a.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Tenants: {result['shape']} model, {result['dtype']}, "
                 f"{result['machine'].get('cpus_usable')} CPUs")
    fig.tight_layout()
    out = Path(path).with_name(Path(path).stem + ".png")
    fig.savefig(out, dpi=100)
    print(out)


def main(path):
    result = json.loads(Path(path).read_text())
    if result.get("benchmark") == "soak":
        return soak(path, result)
    if result.get("benchmark") == "tenants":
        return tenants(path, result)
    points = result["points"]
    peers = list(dict.fromkeys(p["peer"] for p in points))
    mode = result["mode"] + ("" if result.get("complete", True) else ", incomplete")
    title = f"{result['shape']} model, {result['machine'].get('cpus_usable')} CPUs ({mode} run)"
    out = []

    fig, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5))
    for ax, (workload, key, label) in zip(axes, PANELS):
        for peer in peers:
            _, xs, ys = series(points, workload, peer, key)
            if xs:
                ax.plot(xs, ys, marker="o", label=peer)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Throughput vs concurrency: {title}")
    fig.tight_layout()
    out.append(Path(path).with_name(Path(path).stem + "-throughput.png"))
    fig.savefig(out[-1], dpi=110)

    fig, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5))
    for ax, (workload, key, label) in zip(axes, PANELS):
        for peer in peers:
            rows, xs, ys = series(points, workload, peer, key)
            if rows:
                ax.plot(ys, [p["p99_ms"] for p in rows], marker="o", label=peer)
                for p, x in zip(rows, ys):
                    ax.annotate(f"c{p['concurrency']}", (x, p["p99_ms"]), fontsize=7, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("p99 latency (ms)")
        ax.set_title(f"p99 latency vs throughput, {workload}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Latency vs throughput: {title}")
    fig.tight_layout()
    out.append(Path(path).with_name(Path(path).stem + "-latency.png"))
    fig.savefig(out[-1], dpi=110)
    print("\n".join(str(p) for p in out))


if __name__ == "__main__":
    main(sys.argv[1])
