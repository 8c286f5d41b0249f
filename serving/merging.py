"""Merging concurrent small calls into fewer, larger ones (the router's embed path).

A call goes out at once while fewer than `max_in_flight` merged calls are running. Calls that
arrive meanwhile wait, and leave together as one call when a running one finishes. There is no
timer: at low load nothing waits, and under load each call carries whatever queued behind the
last one. Every caller gets its own result or its own error; one caller's bad input never fails
the others (the callee returns per-item exceptions), and a failure of the whole call (a replica
that died) reaches every caller in it.

Waiting calls leave in priority order (lower first, then arrival), so an urgent call waits for at most
the merged calls already running, never for a queue of less urgent ones; and less urgent calls stop
short of `max_pending` by a reserve that only priority-0 calls may fill.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class QueueFull(Exception):
    """More calls are waiting than `max_pending` allows."""


class CallMerger(Generic[ItemT, ResultT]):
    def __init__(self, send: Callable[[list[ItemT]], Awaitable[list[ResultT | BaseException]]], *,
                 max_in_flight: int, max_batch: int, max_pending: int = -1, urgent_reserve: float = 0.0):
        """`send` makes one merged call and returns one result or exception per item, in order.
        `max_batch` bounds the summed `size` of the items in one call (one item may exceed it).
        A call submitted while `max_pending` wait raises QueueFull (-1: no bound); one with a priority
        above 0, while `max_pending` less `urgent_reserve` of it (rounded down) wait."""
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._send = send
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.lesser_pending = max_pending - math.floor(max_pending * urgent_reserve) if max_pending >= 0 else -1
        # (priority, arrival, item, size, future): a heap, most urgent and then oldest first
        self._pending: list[tuple[int, int, ItemT, int, asyncio.Future]] = []
        self._arrivals = itertools.count()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()  # strong references, so running calls are not collected

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, item: ItemT, size: int = 1, priority: int = 0) -> ResultT:
        bound = self.max_pending if priority <= 0 else self.lesser_pending
        if 0 <= bound <= len(self._pending) and self._in_flight >= self.max_in_flight:
            raise QueueFull(f"{len(self._pending)} calls are already waiting")
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._pending, (priority, next(self._arrivals), item, size, future))
        self._dispatch()
        return await future  # a cancelled caller cancels only its own future

    def _dispatch(self) -> None:
        while self._in_flight < self.max_in_flight:
            batch, total = [], 0
            while self._pending and (not batch or total + self._pending[0][3] <= self.max_batch):
                _, _, item, size, future = heapq.heappop(self._pending)
                if not future.done():  # its caller went away while it waited
                    batch.append((item, size, future))
                    total += size
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[ItemT, int, asyncio.Future]]) -> None:
        try:
            results = await self._send([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a merged call of {len(batch)} items returned {len(results)} results")
        except BaseException as exc:  # the whole call failed: every caller in it gets the error
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, _, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._dispatch()
