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
