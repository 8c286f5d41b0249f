"""Steps sized for the urgent lane: vLLM's scheduler, changed only while lanes mix.

vLLM's `priority` policy orders its queue, but a step it has begun is not interrupted, and it fills
an urgent request's own step with queued work up to the token budget (2,048 tokens by default: about
a second of a 0.6B model on two CPU cores). An urgent query then waits up to two full steps. While
a more urgent lane is active (one of its requests arrived in the last `HOLD_S`) and less urgent work
is queued or part-way through, `LaneScheduler`
- gives a step with urgent input to that input alone: less urgent requests part-way through their
  prefill sit the step out, and no queued work fills it;
- sizes every other step to take about `step_s`, from the engine's measured tokens per second
  (chunked prefill splits longer inputs), so an urgent arrival waits at most about that long.
With one lane, or once the urgent lane is quiet, it is vLLM's scheduler with vLLM's budget.

The scheduler runs in vLLM's engine-core process; `step_s` comes in the engine config's
`additional_config` (`ADDITIONAL_KEY`, milliseconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

ADDITIONAL_KEY = "qwen3_urgent_step_ms"
# The urgent lane counts as active this long after its last arrival. Long: the first urgent input after
# the lane went quiet waits for a whole unpaced step (a second or two of a 0.6B model on two CPU cores).
HOLD_S = 60.0
MIN_STEP_TOKENS = 16  # a paced step never holds fewer tokens (per-step overhead)
RATE_WEIGHT = 0.3  # weight of the newest step in the moving average of tokens/s


@dataclass
class Lanes:
    """When each priority last sent a request, and the engine's measured speed."""

    hold_s: float = HOLD_S
    last_seen: dict[int, float] = field(default_factory=dict)
    tokens_per_s: float | None = None

    def saw(self, priority: int, now: float) -> None:
        self.last_seen[priority] = now

    def urgent(self, now: float) -> int | None:
        """The most urgent priority that sent a request in the last ``hold_s``, if any."""
        for priority in [p for p, seen in self.last_seen.items() if now - seen >= self.hold_s]:
            del self.last_seen[priority]
        return min(self.last_seen, default=None)

    def learn(self, tokens: int, seconds: float) -> None:
        """A step of ``tokens`` took ``seconds``. Steps of every size count: a step's fixed overhead makes
        small steps slower per token, so the budget (rate x step_s) settles where a step, overhead
        included, takes step_s (n = rate(n) * step_s has one fixed point, reached while the overhead is
        under step_s). Urgent-only steps are not fed in: they are not the paced kind."""
        if tokens >= MIN_STEP_TOKENS and seconds > 0:
            rate = tokens / seconds
            self.tokens_per_s = rate if self.tokens_per_s is None else (
                RATE_WEIGHT * rate + (1 - RATE_WEIGHT) * self.tokens_per_s)

    def paced_budget(self, step_s: float, full: int) -> int:
        """Tokens for a step of about ``step_s``; vLLM's budget until a step has been measured."""
        if self.tokens_per_s is None:
            return full
        return max(MIN_STEP_TOKENS, min(full, int(self.tokens_per_s * step_s)))


@dataclass(frozen=True)
class StepPlan:
    budget: int  # tokens this step may schedule
    sit_out: tuple[Any, ...] = ()  # running requests left out of this step


def plan_step(running: list[Any], waiting: list[Any], urgent: int | None, paced: int, full: int) -> StepPlan:
    """What the next step may hold. ``running``/``waiting``: vLLM requests (``priority``,
    ``num_tokens``, ``num_computed_tokens``); ``urgent``: the active urgent lane or None; ``paced``:
    the budget of a step of the target length; ``full``: vLLM's budget."""
    if urgent is None or not any(r.priority > urgent for lane in (running, waiting) for r in lane):
        return StepPlan(full)
    urgent_tokens = sum(r.num_tokens - r.num_computed_tokens for lane in (running, waiting) for r in lane
                        if r.priority <= urgent)
    if urgent_tokens <= 0:
        return StepPlan(paced)
    return StepPlan(min(full, urgent_tokens), tuple(r for r in running if r.priority > urgent))


class LaneScheduler(Scheduler):
    """vLLM's (synchronous) scheduler with urgent-only steps and paced steps while lanes mix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        extra = self.vllm_config.additional_config
        step_ms = extra.get(ADDITIONAL_KEY) if isinstance(extra, dict) else None
        self.step_s = step_ms / 1000 if step_ms else None
        self.lanes = Lanes()
        self.full_budget = self.max_num_scheduled_tokens
        self.max_running = self.max_num_running_reqs
        # vLLM 0.32 admits from the waiting queue up to max_num_active_reqs and asserts max_num_running_reqs.
        self.max_active = getattr(self, "max_num_active_reqs", None)
        # Without chunked prefill an input longer than a paced budget could never be scheduled.
        self.pace = self.step_s is not None and self.scheduler_config.enable_chunked_prefill
        self._step: tuple[float, int] | None = None

    def add_request(self, request: Any) -> None:
        self.lanes.saw(request.priority, time.monotonic())
        super().add_request(request)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if self.step_s is None:
            return super().schedule(*args, **kwargs)
        now = time.monotonic()
        paced = self.lanes.paced_budget(self.step_s, self.full_budget) if self.pace else self.full_budget
        waiting = getattr(self.waiting, "_heap", None)
        plan = plan_step(self.running, list(self.waiting) if waiting is None else waiting,
                         self.lanes.urgent(now), paced, self.full_budget)
        if plan.sit_out and len(self.running) >= self.max_running:
            # No slot for urgent input until a running request finishes: let them run, paced.
            plan = StepPlan(paced)
        sit_out = set(map(id, plan.sit_out))
        if sit_out:
            self.running[:] = [r for r in self.running if id(r) not in sit_out]
        self.max_num_scheduled_tokens = plan.budget
        self._limit_running(len(plan.sit_out))  # room for them when they return
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            self.running[:0] = plan.sit_out
            self.max_num_scheduled_tokens = self.full_budget
            self._limit_running(0)
        self._step = None if plan.sit_out or plan.budget < paced else (
            time.monotonic(), output.total_num_scheduled_tokens)
        return output

    def _limit_running(self, held_back: int) -> None:
        """While ``held_back`` running requests sit a step out, the step may admit only as many new
        ones as leave a slot for each of them."""
        self.max_num_running_reqs = self.max_running - held_back
        if self.max_active is not None:
            self.max_num_active_reqs = self.max_active - held_back

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        if self._step is not None:
            started, tokens = self._step
            self._step = None
            self.lanes.learn(tokens, time.monotonic() - started)
        return super().update_from_output(scheduler_output, model_runner_output)
