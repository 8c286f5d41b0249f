"""The lane scheduler's decisions (serving.engines.lanes), on plain request records; the scheduler
itself runs on the real engine in tests/integration/test_embed_engine.py."""

from dataclasses import dataclass

import pytest

from serving.engines.lanes import MIN_STEP_TOKENS, Lanes, StepPlan, plan_step

FULL = 2048


@dataclass
class Req:
    priority: int
    num_tokens: int
    num_computed_tokens: int = 0


def test_one_lane_keeps_vllms_budget():
    running, waiting = [Req(5, 300, 100)], [Req(5, 200)]
    assert plan_step(running, waiting, urgent=None, paced=100, full=FULL) == StepPlan(FULL)
    # the urgent lane active but nothing less urgent queued: nothing to hold back
    assert plan_step([Req(0, 40)], [Req(0, 30)], urgent=0, paced=100, full=FULL) == StepPlan(FULL)


def test_urgent_input_waiting_gets_a_step_of_its_own():
    bulk_part_way, bulk_done_soon = Req(5, 300, 100), Req(5, 300, 250)
    urgent_running, urgent_new = Req(0, 500, 400), Req(0, 30)
    plan = plan_step([bulk_part_way, urgent_running, bulk_done_soon], [Req(5, 200), urgent_new],
                     urgent=0, paced=100, full=FULL)
    assert plan.budget == 100 + 30  # exactly the urgent tokens left: no queued work fills the step
    assert plan.sit_out == (bulk_part_way, bulk_done_soon)
    huge = plan_step([], [Req(0, 5000), Req(5, 10)], urgent=0, paced=100, full=FULL)
    assert huge.budget == FULL  # never above vLLM's budget


def test_less_urgent_work_is_paced_while_the_urgent_lane_is_active():
    plan = plan_step([Req(5, 300, 100)], [Req(9, 200)], urgent=0, paced=128, full=FULL)
    assert plan == StepPlan(128)
    # a middle lane is less urgent than the active one
    assert plan_step([Req(3, 40)], [Req(0, 10)], urgent=0, paced=128, full=FULL) == StepPlan(10, (Req(3, 40),))


def test_the_urgent_lane_is_the_lowest_priority_seen_within_the_hold():
    lanes = Lanes(hold_s=2.0)  # HOLD_S is a minute; the rule is the same
    assert lanes.urgent(now=0.0) is None
    lanes.saw(10, now=0.0)
    lanes.saw(0, now=1.0)
    assert lanes.urgent(now=2.5) == 0
    assert lanes.urgent(now=3.0) is None  # both quiet for 2 s
    lanes.saw(10, now=4.0)
    assert lanes.urgent(now=4.5) == 10


def test_paced_budget_follows_the_measured_rate():
    lanes = Lanes()
    assert lanes.paced_budget(0.05, FULL) == FULL  # nothing measured yet: vLLM's budget
    lanes.learn(tokens=MIN_STEP_TOKENS - 1, seconds=0.05)  # below a paced step's floor: not a rate
    assert lanes.tokens_per_s is None
    lanes.learn(tokens=2000, seconds=1.0)
    assert lanes.paced_budget(0.05, FULL) == 100
    lanes.learn(tokens=1000, seconds=0.25)  # 4,000/s, weighted in
    assert lanes.tokens_per_s == pytest.approx(0.3 * 4000 + 0.7 * 2000)
    assert lanes.paced_budget(10.0, FULL) == FULL
    lanes.tokens_per_s = 10.0
    assert lanes.paced_budget(0.05, FULL) == MIN_STEP_TOKENS


def test_paced_steps_settle_where_a_step_with_its_overhead_takes_the_target():
    """Steps cost 10 ms + 0.5 ms per token: a 50 ms step holds 80 tokens. Learning from the paced
    steps themselves converges there, from a budget far too big or far too small."""
    def seconds(tokens: int) -> float:
        return 0.010 + tokens / 2000

    for first in (FULL, MIN_STEP_TOKENS):
        lanes = Lanes()
        lanes.learn(first, seconds(first))
        for _ in range(40):
            budget = lanes.paced_budget(0.05, FULL)
            lanes.learn(budget, seconds(budget))
        assert abs(lanes.paced_budget(0.05, FULL) - 80) <= 2
