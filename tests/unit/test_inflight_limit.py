"""The queue bound of a model placed in the ingress: 429 with Retry-After beyond it, slots given back."""

import pytest

from serving.api.errors import Overloaded
from serving.config import ScalingConfig
from serving.deployments.clients import InFlightLimit


def test_calls_beyond_running_plus_queued_get_429_with_retry_after():
    limit = InFlightLimit(ScalingConfig(max_ongoing_requests=2, max_queued_requests=1, retry_after_s=2.5))
    with limit.slot(), limit.slot(), limit.slot():
        with pytest.raises(Overloaded) as refused:
            with limit.slot():
                pass
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "3"}
    assert limit.in_flight == 0
    with limit.slot():  # room again
        assert limit.in_flight == 1


def test_a_failing_call_gives_its_slot_back_and_minus_one_means_unbounded():
    limit = InFlightLimit(ScalingConfig(max_ongoing_requests=1, max_queued_requests=0))
    with pytest.raises(RuntimeError):
        with limit.slot():
            raise RuntimeError("engine died")
    assert limit.in_flight == 0
    unbounded = InFlightLimit(ScalingConfig(max_ongoing_requests=1, max_queued_requests=-1))
    slots = [unbounded.slot() for _ in range(100)]
    for s in slots:
        s.__enter__()
    assert unbounded.in_flight == 100


def test_less_urgent_calls_leave_the_reserve_to_priority_0():
    limit = InFlightLimit(ScalingConfig(max_ongoing_requests=8, max_queued_requests=12, urgent_reserve=0.25))
    held = [limit.slot(priority=5) for _ in range(15)]
    for slot in held:
        slot.__enter__()
    with pytest.raises(Overloaded):  # 20 - floor(20 x 0.25) = 15 for priority > 0
        with limit.slot(priority=1):
            pass
    urgent = [limit.slot(priority=0) for _ in range(5)]
    for slot in urgent:
        slot.__enter__()
    with pytest.raises(Overloaded):
        with limit.slot(priority=0):
            pass
    for slot in held + urgent:
        slot.__exit__(None, None, None)
    assert limit.in_flight == 0
    tiny = InFlightLimit(ScalingConfig(max_ongoing_requests=1, max_queued_requests=0))
    with tiny.slot(priority=9):  # a bound too small to reserve from is all anyone's
        pass
