"""The HTTP benchmark's verdict: issue 15's goals as ratios against `vllm serve` and the in-process
engines, and a plain-text table of every point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from benchmarks.loadgen import Measurement


def _find(ms: Sequence[Measurement], peer: str, workload: str, concurrency: int) -> Measurement | None:
    return next((m for m in ms if m.peer == peer and m.workload == workload and m.concurrency == concurrency
                 and m.completed > 0), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _goal(name: str, target: str, ratio: float | None, threshold: float, *, lower_is_better: bool = False,
          detail: str = "", **values: Any) -> dict[str, Any]:
    if ratio is None:
        met = None
    else:
        met = ratio <= threshold if lower_is_better else ratio >= threshold
    return {"goal": name, "target": target, "ratio": ratio, "met": met, "detail": detail, **values}


def goals(ms: Sequence[Measurement], ours_peer: str = "ours") -> list[dict[str, Any]]:
    """Each goal of issue 15 with the measured ratio; `met` is None when a peer it needs did not run.

    ``ours_peer`` names which of our configurations is judged (``ours``: the defaults)."""
    if ours_peer != "ours":  # that configuration's points stand in for the defaults'
        ms = [replace(m, peer="ours") if m.peer == ours_peer else m for m in ms if m.peer != "ours"]
    out = []
    for workload, what in (("embed-b1", "1 input of 256 tokens"), ("embed-q32", "1 short query (<= 32 tokens)")):
        small = [c for c in sorted({m.concurrency for m in ms if m.workload == workload}) if 8 <= c <= 64]
        per_c = {c: _ratio(getattr(_find(ms, "ours", workload, c), "req_per_s", None),
                           getattr(_find(ms, "vllm", workload, c), "req_per_s", None)) for c in small}
        known = [r for r in per_c.values() if r is not None]
        out.append(_goal(f"small requests ({workload}): {what}, concurrency 8-64, req/s", "ours / vllm serve >= 1.0",
                         min(known) if known and len(known) == len(per_c) else None, 1.0,
                         detail="worst concurrency", per_concurrency=per_c))

    b32 = sorted({m.concurrency for m in ms if m.workload == "embed-b32"})
    c32 = 32 if 32 in b32 else (b32[-1] if b32 else 32)
    ours = _find(ms, "ours", "embed-b32", c32)
    for peer, threshold, label in (("vllm", 1.0, "vllm serve"), ("inprocess", 0.95, "in-process EmbedEngine")):
        other = _find(ms, peer, "embed-b32", c32)
        out.append(_goal(f"batched requests: 32 inputs, concurrency {c32}, tok/s", f"ours / {label} >= {threshold}",
                         _ratio(getattr(ours, "tok_per_s", None), getattr(other, "tok_per_s", None)), threshold,
                         ours=getattr(ours, "tok_per_s", None), peer=getattr(other, "tok_per_s", None)))

    ours, vllm = _find(ms, "ours", "embed-short", 1), _find(ms, "vllm", "embed-short", 1)
    out.append(_goal("single short input, concurrency 1, p50 latency", "ours / vllm serve <= 1.1",
                     _ratio(getattr(ours, "p50_ms", None), getattr(vllm, "p50_ms", None)), 1.1,
                     lower_is_better=True, ours_ms=getattr(ours, "p50_ms", None),
                     vllm_ms=getattr(vllm, "p50_ms", None)))

    rc = sorted({m.concurrency for m in ms if m.workload == "rerank-50"})
    c4 = 4 if 4 in rc else (rc[-1] if rc else 4)
    ours, inproc = _find(ms, "ours", "rerank-50", c4), _find(ms, "inprocess", "rerank-50", c4)
    out.append(_goal(f"rerank: 1 query x N documents, concurrency {c4}, tok/s",
                     "ours / in-process RerankEngine >= 0.95",
                     _ratio(getattr(ours, "tok_per_s", None), getattr(inproc, "tok_per_s", None)), 0.95,
                     ours=getattr(ours, "tok_per_s", None), peer=getattr(inproc, "tok_per_s", None)))

    # The request path's CPU: every 1-input point where both ran, judged at the worst one.
    per_point = {}
    for m in ms:
        if m.peer == "ours" and m.workload in ("embed-b1", "embed-q32") and m.concurrency >= 8:
            other = _find(ms, "vllm", m.workload, m.concurrency)
            if other is not None:
                per_point[f"{m.workload}@c{m.concurrency}"] = _ratio(m.cpu_ms_per_request, other.cpu_ms_per_request)
    known = [r for r in per_point.values() if r is not None]
    out.append(_goal("request path CPU: ms per 1-input request outside the vLLM worker, concurrency 8-64",
                     "ours / vllm serve <= 1.0", max(known) if known and len(known) == len(per_point) else None,
                     1.0, lower_is_better=True, detail="worst point", per_point=per_point))

    # The two-replica peer runs the defaults: it is judged against `ours` only.
    for workload, unit in (("embed-b1", "req_per_s"), ("embed-b32", "tok_per_s")) if ours_peer == "ours" else ():
        cs = sorted({m.concurrency for m in ms if m.workload == workload and m.peer == "ours-2replicas"})
        best = {peer: max((getattr(_find(ms, peer, workload, c), unit, 0) or 0 for c in cs), default=0)
                for peer in ("ours", "ours-2replicas")}
        out.append(_goal(f"2 replicas: {workload}, best {unit} over the sweep", "ours 2 replicas / ours 1 replica > 1.0",
                         _ratio(best["ours-2replicas"] or None, best["ours"] or None), 1.0 + 1e-9,
                         detail="both replicas share the machine's 2 cores", one_replica=best["ours"],
                         two_replicas=best["ours-2replicas"]))
    return out


def token_agreement(ms: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Per point: does every peer report the prompt tokens the serving code's tokenizer counts?"""
    rows = []
    for key in sorted({(m.workload, m.concurrency) for m in ms}):
        group = [m for m in ms if (m.workload, m.concurrency) == key and m.failed == 0]
        if not group:
            continue
        rows.append({"workload": key[0], "concurrency": key[1], "expected": group[0].expected_tokens,
                     "reported": {m.peer: m.prompt_tokens for m in group},
                     "per_request_match": {m.peer: m.tokens_match_expected for m in group}})
    return rows


def table(ms: Sequence[Measurement]) -> str:
    head = (f"{'workload':<12} {'c':>3} {'peer':<15} {'ok':>5} {'fail':>4} {'req/s':>8} {'tok/s':>9} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'server cpu':>10} {'client cpu':>10} {'path ms/req':>11}")
    lines = [head, "-" * len(head)]
    for m in sorted(ms, key=lambda m: (m.workload, m.concurrency, m.peer)):
        server = sum(float(r["cpu_share"]) for r in m.cpu if r["tree"] in ("server", "in-process"))
        client = sum(float(r["cpu_share"]) for r in m.cpu if r["tree"] == "load generator")
        p50 = f"{m.p50_ms:.1f}" if m.p50_ms is not None else "-"
        p99 = f"{m.p99_ms:.1f}" if m.p99_ms is not None else "-"
        path = "-" if m.cpu_ms_per_request is None else f"{m.cpu_ms_per_request:.2f}"
        lines.append(f"{m.workload:<12} {m.concurrency:>3} {m.peer:<15} {m.completed:>5} {m.failed:>4} "
                     f"{m.req_per_s:>8.1f} {m.tok_per_s:>9.0f} {p50:>8} {p99:>8} {server:>10.2f} {client:>10.2f} "
                     f"{path:>11}")
    return "\n".join(lines)


def goals_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for g in rows:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        ratio = "n/a" if g["ratio"] is None else f"{g['ratio']:.2f}x"
        lines.append(f"{g['goal']:<58} {g['target']:<42} {ratio:>7}  {verdict}")
    return "\n".join(lines)
