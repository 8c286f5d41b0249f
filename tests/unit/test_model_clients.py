"""The two model clients against fake models and handles: the same calls, wherever the model runs.
LocalModel: its in-flight bound, engine errors as API errors, and the replica leaving when an
engine dies. RemoteModel: small embed calls merged, large ones chunked in order, a merged call whose
replica died resent alone."""

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from serving.api.errors import Overloaded, RequestTooLarge, Unavailable
from serving.config import AppConfig
from serving.deployments import clients
from serving.deployments.clients import LocalModels, RemoteModel
from serving.engines.embed import EmbedResult
from serving.engines.errors import EngineDiedError, InputTooLongError


def app(queued: int = 1, **router) -> AppConfig:
    return AppConfig.model_validate({
        "models": [{"name": "e", "kind": "embed", "scaling": {"max_ongoing_requests": 1, "max_queued_requests": queued}},
                   {"name": "r", "kind": "rerank"}],
        "limits": {"embed_chunk_size": 4}, "router": router})


def vectors(inputs, first_index=0):
    """One row per input, holding its position in the whole request."""
    return EmbedResult(np.arange(first_index, first_index + len(inputs), dtype=np.float32)[:, None], len(inputs))


class FakeModel:
    def __init__(self):
        self.release = asyncio.Event()
        self.error: Exception | None = None
        self.calls = 0
        self.stopped = False

    async def embed(self, inputs, **options):
        self.calls += 1
        await self.release.wait()
        if self.error:
            raise self.error
        return vectors(inputs)

    def info(self):
        return {"kind": "embed", "max_model_len": 512}

    async def ready(self):
        return True

    def shutdown(self):
        self.stopped = True


def test_a_local_model_is_bounded_and_maps_engine_errors():
    async def scenario():
        model = FakeModel()
        client = LocalModels({"e": model}, app()).clients["e"]
        first = asyncio.ensure_future(client.embed(["a"]))
        second = asyncio.ensure_future(client.embed(["b"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as over:  # 1 running + 1 queued
            await client.embed(["c"])
        assert over.value.headers == {"Retry-After": "1"}
        model.release.set()
        assert [r.prompt_tokens for r in await asyncio.gather(first, second)] == [1, 1]
        model.error = InputTooLongError("too long")
        with pytest.raises(RequestTooLarge):
            await client.embed(["d"])
        assert client.limit.in_flight == 0 and await client.info() == model.info()

    asyncio.run(scenario())


def test_an_engine_death_makes_the_replica_leave_after_its_calls_finish(monkeypatch):
    exits = []
    monkeypatch.setattr(clients, "exit_replica", lambda why, shutdown: exits.append(why) or shutdown())
    monkeypatch.setattr(clients, "ANSWER_FLUSH_S", 0)

    async def scenario():
        dying, other = FakeModel(), FakeModel()
        replica = LocalModels({"e": dying, "r": other}, app())
        running = asyncio.ensure_future(replica.clients["r"].embed(["still running"]))
        await asyncio.sleep(0)
        dying.error = EngineDiedError("engine core died")
        dying.release.set()
        with pytest.raises(Unavailable):
            await replica.clients["e"].embed(["x"])
        assert replica.leaving
        with pytest.raises(Unavailable):  # no new call reaches any engine of a leaving replica
            await replica.clients["r"].embed(["y"])
        assert other.calls == 1
        with pytest.raises(EngineDiedError):
            await replica.check_health()
        await asyncio.sleep(0.2)
        assert not exits  # the other engine's call is still running
        other.release.set()
        assert (await running).prompt_tokens == 1
        await asyncio.sleep(0.2)
        assert exits and dying.stopped and other.stopped

    asyncio.run(scenario())


class FakeMethod:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


def fake_handle(embed_many):
    async def embed(inputs, first_index=0, **options):
        return vectors(inputs, first_index)

    async def info():
        return {"kind": "embed"}

    return SimpleNamespace(embed=FakeMethod(embed), embed_many=FakeMethod(embed_many), info=FakeMethod(info))


def test_a_remote_model_chunks_large_requests_in_order_and_merges_small_ones():
    async def embed_many(requests):
        return [vectors(inputs) for inputs, _ in requests]

    async def scenario():
        handle = fake_handle(embed_many)
        client = RemoteModel("e", handle, app(queued=10, merged_embed_calls_per_replica=1), lambda *a: None)
        result = await client.embed([f"t{i}" for i in range(10)], dimensions=8)
        assert result.embeddings[:, 0].tolist() == list(range(10)) and result.prompt_tokens == 10
        assert [(len(args[0]), kwargs["first_index"]) for args, kwargs in handle.embed.calls] == [(4, 0), (4, 4), (2, 8)]
        assert all(kwargs["dimensions"] == 8 for _, kwargs in handle.embed.calls)
        small = await asyncio.gather(*(client.embed([f"q{i}"]) for i in range(5)))
        assert [r.prompt_tokens for r in small] == [1] * 5
        # One call in flight at a time: the first goes alone, the four that waited meanwhile in one call.
        assert [len(args[0]) for args, _ in handle.embed_many.calls] == [1, 4] and len(handle.embed.calls) == 3
        assert await client.info() == await client.info() == {"kind": "embed"}
        assert len(handle.info.calls) == 1  # asked once

    asyncio.run(scenario())


def test_a_merged_call_whose_replica_died_is_resent_alone_and_counted():
    from ray.exceptions import RayActorError

    async def embed_many(requests):
        raise RayActorError()

    async def scenario():
        handle, retries = fake_handle(embed_many), []
        client = RemoteModel("e", handle, app(merged_embed_calls_per_replica=1), lambda *a: retries.append(a))
        result = await client.embed(["q"])
        assert result.prompt_tokens == 1 and len(handle.embed.calls) == 1
        assert retries == [("e", "replica_died")]

    asyncio.run(scenario())
