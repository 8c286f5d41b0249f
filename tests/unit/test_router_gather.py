"""The router's fan-out of chunk calls: one failing chunk cancels the others (fake handle responses)."""

import asyncio

import pytest

from serving.api.errors import ValidationFailed
from serving.deployments.router import _gather
from serving.engines.errors import EngineInputError


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


def test_a_failing_chunk_cancels_the_chunks_still_running():
    calls = [FakeResponse(0.0), FakeResponse(0.01, EngineInputError("input[17] holds -1")), FakeResponse(5),
             FakeResponse(5)]

    async def run():
        with pytest.raises(ValidationFailed, match=r"input\[17\]"):
            await _gather(calls)

    asyncio.run(asyncio.wait_for(run(), 2))
    assert calls[0].finished and not calls[0].cancelled
    assert calls[2].cancelled and calls[3].cancelled
    assert not calls[2].finished and not calls[3].finished


def test_all_chunks_succeeding_return_in_order():
    calls = [FakeResponse(0.02), FakeResponse(0.0), FakeResponse(0.01)]
    assert asyncio.run(_gather(calls)) == [0.02, 0.0, 0.01]
