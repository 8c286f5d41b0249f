"""CallMerger: concurrent calls share merged calls; each caller gets its own result or error."""

import asyncio

import pytest

from serving.merging import CallMerger, QueueFull


class Callee:
    """Records each merged call; answers after the test releases it."""

    def __init__(self):
        self.calls: list[list] = []
        self.release = asyncio.Event()

    async def send(self, items: list) -> list:
        self.calls.append(items)
        await self.release.wait()
        return [ValueError(f"bad {x}") if x < 0 else x * 10 for x in items]


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_nothing_waits_below_the_bound():
    callee = Callee()
    callee.release.set()
    merger = CallMerger(callee.send, max_in_flight=2, max_batch=8)
    assert await merger.submit(1) == 10
    assert await merger.submit(2) == 20
    assert callee.calls == [[1], [2]]


async def test_calls_queued_behind_a_full_bound_leave_together_and_keep_their_own_results():
    callee = Callee()
    merger = CallMerger(callee.send, max_in_flight=1, max_batch=8)
    first = asyncio.ensure_future(merger.submit(1))
    await settle()
    rest = [asyncio.ensure_future(merger.submit(x)) for x in (2, -3, 4)]
    await settle()
    assert callee.calls == [[1]] and merger.in_flight == 1
    callee.release.set()
    assert await first == 10
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert callee.calls == [[1], [2, -3, 4]]
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -3"  # only its caller sees it


async def test_max_batch_bounds_the_summed_size():
    callee = Callee()
    merger = CallMerger(callee.send, max_in_flight=1, max_batch=5)
    tasks = [asyncio.ensure_future(merger.submit(x, size=3)) for x in range(1, 5)]
    await settle()
    callee.release.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40]
    assert callee.calls == [[1], [2], [3], [4]]  # 3 + 3 > 5: one per call
    assert merger.in_flight == 0


async def test_a_failed_call_reaches_every_caller_in_it_and_the_merger_goes_on():
    async def send(items):
        if 0 in items:
            raise ConnectionError("replica died")
        return items

    merger = CallMerger(send, max_in_flight=1, max_batch=8)
    blocked = asyncio.Event()

    async def slow_send(items):
        await blocked.wait()
        return await send(items)

    merger._send = slow_send
    tasks = [asyncio.ensure_future(merger.submit(x)) for x in (5, 0, 6)]
    await settle()
    blocked.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 5
    assert all(isinstance(r, ConnectionError) for r in results[1:])
    assert await merger.submit(7) == 7


async def test_a_cancelled_caller_is_dropped_before_sending():
    callee = Callee()
    merger = CallMerger(callee.send, max_in_flight=1, max_batch=8)
    first = asyncio.ensure_future(merger.submit(1))
    await settle()
    gone = asyncio.ensure_future(merger.submit(2))
    kept = asyncio.ensure_future(merger.submit(3))
    await settle()
    gone.cancel()
    callee.release.set()
    assert await first == 10 and await kept == 30
    assert callee.calls == [[1], [3]]


async def test_queue_bound():
    callee = Callee()
    merger = CallMerger(callee.send, max_in_flight=1, max_batch=8, max_pending=1)
    tasks = [asyncio.ensure_future(merger.submit(x)) for x in (1, 2)]
    await settle()
    with pytest.raises(QueueFull):
        await merger.submit(3)
    callee.release.set()
    assert await asyncio.gather(*tasks) == [10, 20]


async def test_the_most_urgent_waiting_calls_leave_first_and_less_urgent_ones_leave_a_reserve():
    """Behind a running call, an urgent call leaves with the next merged call, ahead of less urgent
    calls queued before it; at the less urgent bound (10 less 20%) only priority 0 is admitted."""
    callee = Callee()
    merger = CallMerger(callee.send, max_in_flight=1, max_batch=4, max_pending=10, urgent_reserve=0.2)
    first = asyncio.ensure_future(merger.submit(1, priority=5))
    await settle()
    bulk = [asyncio.ensure_future(merger.submit(x, size=2, priority=5)) for x in range(2, 10)]
    await settle()
    with pytest.raises(QueueFull):  # 8 waiting: the bound of priority 5
        await merger.submit(99, priority=5)
    urgent = [asyncio.ensure_future(merger.submit(x, priority=0)) for x in (100, 101)]  # the reserve
    await settle()
    with pytest.raises(QueueFull):
        await merger.submit(102, priority=0)
    callee.release.set()
    assert await asyncio.gather(first, *bulk, *urgent) == [10 * x for x in range(1, 10)] + [1000, 1010]
    # Priority, then arrival; a call of 4 at most: 1 + 1 + 2, then the bulk in its own order.
    assert callee.calls == [[1], [100, 101, 2], [3, 4], [5, 6], [7, 8], [9]]


async def test_a_wrong_result_count_is_an_error_not_a_hang():
    async def send(items):
        return items[:-1]

    merger = CallMerger(send, max_in_flight=1, max_batch=8)
    with pytest.raises(RuntimeError, match="returned 0 results"):
        await merger.submit(1)


@pytest.mark.parametrize("scaling, per_replica, expected", [
    ({"num_replicas": 3}, 2, 6),
    ({"autoscaling": True, "max_replicas": 4, "target_ongoing_requests": 8}, 2, 32),  # replicas still see 8
    ({"autoscaling": True, "max_replicas": 2, "target_ongoing_requests": 1.5}, 4, 8),
])
def test_merged_calls_in_flight_leave_autoscaling_its_signal(scaling, per_replica, expected):
    from serving.config import EmbedDeploymentConfig, RouterConfig
    from serving.deployments.clients import merged_calls_in_flight

    model = EmbedDeploymentConfig(name="e", placement="deployment", scaling=scaling)
    assert merged_calls_in_flight(model, RouterConfig(merged_embed_calls_per_replica=per_replica)) == expected
