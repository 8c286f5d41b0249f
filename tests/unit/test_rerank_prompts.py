"""Reranker prompts as token ids: exactly the reference's tokens, suffix always intact."""

import pytest

from serving import prompts
from serving.config import RerankModelConfig
from serving.engines.errors import EngineInputError
from serving.engines.rerank import RerankPrompts
from tests.texts import DOCUMENTS, QUERIES


def make_prompts(tokenizer, max_model_len=512) -> RerankPrompts:
    return RerankPrompts(RerankModelConfig(model="tiny"), tokenizer, max_model_len)


def reference_ids(tokenizer, query, doc, max_length, instruction=prompts.DEFAULT_RERANK_INSTRUCTION):
    """The model card's process_inputs for one pair, without padding."""
    prefix = tokenizer.encode(prompts.RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(prompts.RERANK_SUFFIX, add_special_tokens=False)
    pair = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
    body = tokenizer([pair], padding=False, truncation="longest_first", return_attention_mask=False,
                     max_length=max_length - len(prefix) - len(suffix))["input_ids"][0]
    return prefix + body + suffix


def test_prompts_equal_the_reference_tokens(rerank_tokenizer):
    built = make_prompts(rerank_tokenizer).build(QUERIES[0], DOCUMENTS)
    # The engine leaves one position for the generated token: reference max_length = max_model_len - 1.
    assert built == [reference_ids(rerank_tokenizer, QUERIES[0], d, 511) for d in DOCUMENTS]


def test_long_document_is_truncated_and_keeps_the_suffix(rerank_tokenizer):
    p = make_prompts(rerank_tokenizer, max_model_len=256)
    [ids] = p.build("q", ["lorem ipsum dolor sit amet " * 500])
    assert len(ids) == 255
    assert ids[-len(p.suffix_ids):] == p.suffix_ids
    assert ids == reference_ids(rerank_tokenizer, "q", "lorem ipsum dolor sit amet " * 500, 255)


def test_documents_of_one_request_share_the_query_prefix(rerank_tokenizer):
    a, b = make_prompts(rerank_tokenizer).build("what is gravity?", ["apples", "Orbits"])
    shared = len(a) - len("apples")
    head = rerank_tokenizer.encode(prompts.RERANK_PREFIX + "<Instruct>: " + prompts.DEFAULT_RERANK_INSTRUCTION
                                   + "\n<Query>: what is gravity?\n<Document>:", add_special_tokens=False)
    assert a[: len(head)] == b[: len(head)] == head and shared > len(head) - 10


def test_yes_and_no_ids(rerank_tokenizer):
    p = make_prompts(rerank_tokenizer)
    assert (p.yes_id, p.no_id) == (9693, 2152)


def test_max_tokens_per_doc_cuts_documents_at_a_token_boundary(rerank_tokenizer):
    p = make_prompts(rerank_tokenizer)
    [short] = p.build("q", ["alpha beta gamma delta epsilon"], max_tokens_per_doc=2)
    assert short == reference_ids(rerank_tokenizer, "q", "alpha beta", 511)


def test_custom_instruction_is_used(rerank_tokenizer):
    [ids] = make_prompts(rerank_tokenizer).build("q", ["d"], instruction="Find code")
    assert "<Instruct>: Find code\n<Query>: q\n<Document>: d" in rerank_tokenizer.decode(ids)


@pytest.mark.parametrize("query,docs", [("", ["d"]), ("  ", ["d"]), (None, ["d"]), ("q", []), ("q", [""]),
                                        ("q", "doc"), ("q", [1]), ("q", None)])
def test_bad_rerank_inputs_get_a_clear_error(rerank_tokenizer, query, docs):
    with pytest.raises(EngineInputError):
        make_prompts(rerank_tokenizer).build(query, docs)


def test_too_small_a_context_is_a_config_error(rerank_tokenizer):
    with pytest.raises(ValueError, match="leaves no room"):
        make_prompts(rerank_tokenizer, max_model_len=64)


# --- per-request truncation (vLLM's truncate_prompt_tokens bounds the whole prompt; the frame is kept)


def test_truncate_prompt_tokens_bounds_the_prompt_like_the_card_with_that_max_length(rerank_tokenizer):
    from serving.engines.truncation import Truncation

    doc = "lorem ipsum dolor sit amet " * 50
    [ids] = make_prompts(rerank_tokenizer).build(QUERIES[0], [doc], truncation=Truncation(max_tokens=120))
    assert ids == reference_ids(rerank_tokenizer, QUERIES[0], doc, 120)
    assert len(ids) == 120


def test_rerank_truncation_limits(rerank_tokenizer):
    from serving.engines.errors import InputTooLongError
    from serving.engines.truncation import Truncation

    p = make_prompts(rerank_tokenizer)
    long_doc = "lorem ipsum dolor sit amet " * 500
    with pytest.raises(InputTooLongError):
        p.build("q", [long_doc], truncation=Truncation(enabled=False))
    assert p.build("q", ["short"], truncation=Truncation(enabled=False)) == p.build("q", ["short"])
    for bad in (Truncation(max_tokens=p.frame_tokens), Truncation(max_tokens=513), Truncation(-1, "left")):
        with pytest.raises(EngineInputError):
            p.build("q", ["d"], truncation=bad)
    [minus_one] = p.build("q", [long_doc], truncation=Truncation(-1))
    assert len(minus_one) == 511  # max_model_len - 1: one position is the generated yes/no


def test_max_tokens_per_query_cuts_the_query(rerank_tokenizer):
    p = make_prompts(rerank_tokenizer)
    assert p.build("alpha beta gamma delta", ["d"], max_tokens_per_query=2) == p.build("alpha beta", ["d"])
