"""The HTTP benchmark's verdicts: each of issue 15's goals judged from the measured points."""

from benchmarks.http_report import goals
from benchmarks.loadgen import Measurement


def point(peer: str, workload: str, c: int, *, req_per_s: float = 0, tok_per_s: float = 0,
          p50_ms: float | None = None, cpu: list | None = None) -> Measurement:
    return Measurement(peer, workload, "embed", c, 1, 10, completed=10, req_per_s=req_per_s, tok_per_s=tok_per_s,
                       p50_ms=p50_ms, cpu=cpu or [])


def verdicts(points: list[Measurement], ours_peer: str = "ours") -> dict[str, tuple[float | None, bool | None]]:
    return {g["goal"].split(":")[0] + " / " + g["target"]: (g["ratio"], g["met"]) for g in goals(points, ours_peer)}


def test_small_requests_are_judged_at_their_worst_concurrency():
    points = [point("ours", "embed-b1", 8, req_per_s=60), point("vllm", "embed-b1", 8, req_per_s=50),
              point("ours", "embed-b1", 64, req_per_s=45), point("vllm", "embed-b1", 64, req_per_s=50),
              point("ours", "embed-b1", 1, req_per_s=1), point("vllm", "embed-b1", 1, req_per_s=100)]
    assert verdicts(points)["small requests (embed-b1) / ours / vllm serve >= 1.0"] == (0.9, False)
    assert verdicts(points)["small requests (embed-q32) / ours / vllm serve >= 1.0"] == (None, None)


def test_latency_goal_is_met_when_ours_is_not_slower_and_missing_peers_are_not_judged():
    points = [point("ours", "embed-short", 1, p50_ms=15.0), point("vllm", "embed-short", 1, p50_ms=17.0),
              point("ours", "rerank-50", 4, tok_per_s=100)]
    v = verdicts(points)
    assert v["single short input, concurrency 1, p50 latency / ours / vllm serve <= 1.1"] == (0.882, True)
    assert v["rerank / ours / in-process RerankEngine >= 0.95"] == (None, None)


def test_another_configuration_of_ours_is_judged_in_its_place():
    points = [point("ours", "embed-short", 1, p50_ms=20.0), point("ours-routed", "embed-short", 1, p50_ms=15.0),
              point("vllm", "embed-short", 1, p50_ms=17.0)]
    latency = "single short input, concurrency 1, p50 latency / ours / vllm serve <= 1.1"
    assert verdicts(points)[latency] == (1.176, False)
    assert verdicts(points, "ours-routed")[latency] == (0.882, True)
    assert not any(goal.startswith("2 replicas") for goal in verdicts(points, "ours-routed"))


def rows(**cpu_s: float) -> list[dict]:
    return [{"tree": "server", "process": name.replace("_", "::"), "cpu_s": s, "cpu_share": 0.1}
            for name, s in cpu_s.items()]


def test_request_path_cpu_leaves_out_the_vllm_engine_processes_and_is_judged_at_the_worst_point():
    ours8 = point("ours", "embed-q32", 8, cpu=rows(VLLM_EngineCore=9.0, router=0.07))
    assert ours8.cpu_ms_per_request == 7.0  # 0.07 s over 10 requests
    points = [ours8, point("vllm", "embed-q32", 8, cpu=rows(VLLM_Worker=9.5, api=0.08, VLLM_EngineCore=0.03)),
              point("ours", "embed-b1", 16, cpu=rows(router=0.09)), point("vllm", "embed-b1", 16, cpu=rows(api=0.1))]
    goal = "request path CPU / ours / vllm serve <= 1.0"
    assert verdicts(points)[goal] == (0.9, True)  # worst of 0.875 and 0.9
