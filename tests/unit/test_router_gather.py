"""The remote model client's fan-out of chunk calls: one failing chunk cancels the others, a chunk whose replica
or engine died is sent once more and nothing else is (fake handle responses)."""

import asyncio

import pytest

from serving.api.errors import ApiError, Overloaded, Unavailable, ValidationFailed
from serving.deployments.clients import gather
from serving.engines.errors import EngineDiedError, EngineInputError, EngineUnavailableError, InputTooLongError


class FakeResponse:
    """Awaitable like Ray Serve's DeploymentResponse, with its cancel()."""

    def __init__(self, delay_s: float, error: Exception | None = None):
        self.delay_s, self.error = delay_s, error
        self.cancelled = self.finished = False
        self._task = None

    async def _run(self):
        await asyncio.sleep(self.delay_s)
        if self.error:
            raise self.error
        self.finished = True
        return self.delay_s

    def __await__(self):
        self._task = asyncio.ensure_future(self._run())
        return self._task.__await__()

    def cancel(self):
        if self._task is not None and not self._task.done():
            self.cancelled = True
            self._task.cancel()


def senders(calls):
    return [lambda call=call: call for call in calls]


class Resend:
    """A chunk's sender: each call to it returns the next response."""

    def __init__(self, *responses):
        self.responses, self.sent = list(responses), 0

    def __call__(self):
        self.sent += 1
        return self.responses.pop(0)


def test_a_failing_chunk_cancels_the_chunks_still_running():
    calls = [FakeResponse(0.0), FakeResponse(0.01, EngineInputError("input[17] holds -1")), FakeResponse(5),
             FakeResponse(5)]

    async def run():
        with pytest.raises(ValidationFailed, match=r"input\[17\]"):
            await gather(senders(calls))

    asyncio.run(asyncio.wait_for(run(), 2))
    assert calls[0].finished and not calls[0].cancelled
    assert calls[2].cancelled and calls[3].cancelled
    assert not calls[2].finished and not calls[3].finished


def test_all_chunks_succeeding_return_in_order():
    calls = [FakeResponse(0.02), FakeResponse(0.0), FakeResponse(0.01)]
    assert asyncio.run(gather(senders(calls))) == [0.02, 0.0, 0.01]


def actor_died():
    from ray.exceptions import ActorDiedError

    return ActorDiedError()


@pytest.mark.parametrize("error, reason", [
    (actor_died, "replica_died"),
    (lambda: __import__("ray.serve.exceptions").serve.exceptions.ReplicaUnavailableError("r"), "replica_unavailable"),
    (lambda: EngineDiedError("engine core gone"), "engine_died"),
])
def test_a_chunk_whose_replica_died_is_sent_once_more_and_counted(error, reason):
    retried = []
    healthy, dying = Resend(FakeResponse(0.01)), Resend(FakeResponse(0.0, error()), FakeResponse(0.01))
    results = asyncio.run(gather([healthy, dying], on_retry=retried.append))
    assert results == [0.01, 0.01]
    assert (healthy.sent, dying.sent) == (1, 2) and retried == [reason]


def test_a_chunk_is_sent_at_most_twice():
    dying = Resend(FakeResponse(0.0, actor_died()), FakeResponse(0.0, actor_died()), FakeResponse(0.0))
    with pytest.raises(Unavailable):
        asyncio.run(gather([dying]))
    assert dying.sent == 2


def test_a_call_that_was_already_resent_is_not_resent_again():
    dying = Resend(FakeResponse(0.0, actor_died()), FakeResponse(0.0))
    with pytest.raises(Unavailable):
        asyncio.run(gather([dying], resend=False))
    assert dying.sent == 1


@pytest.mark.parametrize("error", [EngineInputError("bad"), InputTooLongError("long"),
                                   EngineUnavailableError("shutting down"), RuntimeError("bug")])
def test_the_requests_own_errors_are_not_resent(error):
    failing = Resend(FakeResponse(0.0, error), FakeResponse(0.0))
    with pytest.raises(ApiError):
        asyncio.run(gather([failing]))
    assert failing.sent == 1


def test_backpressure_is_not_resent():
    from ray.serve.exceptions import BackPressureError

    failing = Resend(FakeResponse(0.0, BackPressureError(num_queued_requests=1, max_queued_requests=1)),
                     FakeResponse(0.0))
    with pytest.raises(Overloaded):
        asyncio.run(gather([failing]))
    assert failing.sent == 1
