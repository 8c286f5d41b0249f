"""Embed request validation and tokenization, before any engine."""

import pytest

from serving.config import EmbedModelConfig
from serving.engines.embed import EmbedInputs
from serving.engines.errors import EngineInputError, InputTooLongError

EOS = 151643


def make_inputs(tokenizer, **overrides) -> EmbedInputs:
    max_model_len = overrides.pop("max_model_len", 64)
    config = EmbedModelConfig(model="tiny", **overrides)
    return EmbedInputs(config, tokenizer, hidden_size=128, vocab_size=151936, max_model_len=max_model_len)


def test_documents_are_tokenized_as_is_with_eos(embed_tokenizer):
    ids = make_inputs(embed_tokenizer).tokenize(["Hello world"])
    assert ids == [[9707, 1879, EOS]]


def test_queries_get_the_instruction_format(embed_tokenizer):
    inputs = make_inputs(embed_tokenizer)
    ids = inputs.tokenize(["Explain gravity"], input_type="query", instruction="Find physics answers")
    assert embed_tokenizer.decode(ids[0]) == "Instruct: Find physics answers\nQuery:Explain gravity<|endoftext|>"


def test_queries_without_instruction_use_the_configured_default(embed_tokenizer):
    inputs = make_inputs(embed_tokenizer, default_instruction="Default task")
    ids = inputs.tokenize(["q"], input_type="query")
    assert embed_tokenizer.decode(ids[0]).startswith("Instruct: Default task\nQuery:q")


def test_truncation_keeps_the_eos_last(embed_tokenizer):
    ids = make_inputs(embed_tokenizer, max_model_len=32).tokenize(["word " * 200])
    assert len(ids[0]) == 32 and ids[0][-1] == EOS


def test_reject_mode_refuses_long_inputs_with_the_limit_in_the_message(embed_tokenizer):
    with pytest.raises(InputTooLongError, match="at most 32"):
        make_inputs(embed_tokenizer, max_model_len=32, truncate=False).tokenize(["word " * 200])


def test_token_id_inputs_are_taken_verbatim(embed_tokenizer):
    assert make_inputs(embed_tokenizer).tokenize([[1, 2, 3], [4]]) == [[1, 2, 3], [4]]


@pytest.mark.parametrize("bad", [[], [""], "a string", None, 7, [1, 2], ["ok", 3], [[]], [[-1]], [[151936]],
                                 [[1.5]], [[True]]])
def test_bad_inputs_get_a_clear_error(embed_tokenizer, bad):
    with pytest.raises(EngineInputError):
        make_inputs(embed_tokenizer).tokenize(bad)


@pytest.mark.parametrize("dims", [31, 129, 0, -32, True, "64", 64.0])
def test_dimensions_outside_the_mrl_range_are_rejected(embed_tokenizer, dims):
    with pytest.raises(EngineInputError, match="between 32 and 128"):
        make_inputs(embed_tokenizer).check_dimensions(dims)


@pytest.mark.parametrize("dims", [None, 32, 100, 128])
def test_dimensions_inside_the_mrl_range_are_accepted(embed_tokenizer, dims):
    make_inputs(embed_tokenizer).check_dimensions(dims)


def test_bad_input_type_and_instruction_are_rejected(embed_tokenizer):
    inputs = make_inputs(embed_tokenizer)
    with pytest.raises(EngineInputError, match="input_type"):
        inputs.tokenize(["x"], input_type="passage")
    with pytest.raises(EngineInputError, match="instruction"):
        inputs.tokenize(["x"], input_type="query", instruction="  ")


# --- per-request truncation: vLLM's truncate_prompt_tokens / truncation_side, TEI's and Cohere's truncate

LONG = "word " * 200


def test_truncate_prompt_tokens_without_a_side_keeps_the_first_tokens_and_the_eos(embed_tokenizer):
    from serving.engines.truncation import Truncation

    [ids] = make_inputs(embed_tokenizer).tokenize([LONG], truncation=Truncation(max_tokens=10))
    # vLLM with no truncation_side lets the tokenizer truncate: max_length=N, the EOS kept.
    assert ids == embed_tokenizer([LONG], truncation=True, max_length=10)["input_ids"][0]
    assert len(ids) == 10 and ids[-1] == EOS


def test_truncation_side_slices_the_full_sequence_as_vllm_does(embed_tokenizer):
    from serving.engines.truncation import Truncation

    full = embed_tokenizer([LONG])["input_ids"][0]
    inputs = make_inputs(embed_tokenizer, max_model_len=512)
    assert inputs.tokenize([LONG], truncation=Truncation(10, "right")) == [full[:10]]
    assert inputs.tokenize([LONG], truncation=Truncation(10, "left")) == [full[-10:]]
    assert inputs.tokenize([[5, 6, 7, 8]], truncation=Truncation(2, "left")) == [[7, 8]]
    assert inputs.tokenize([[5, 6, 7, 8]], truncation=Truncation(2)) == [[5, 6]]


def test_minus_one_truncates_to_the_engine_limit_even_when_the_config_rejects(embed_tokenizer):
    from serving.engines.truncation import Truncation

    inputs = make_inputs(embed_tokenizer, max_model_len=32, truncate=False)
    [ids] = inputs.tokenize([LONG], truncation=Truncation(-1))
    assert len(ids) == 32 and ids[-1] == EOS
    [left] = inputs.tokenize([LONG], truncation=Truncation(side="left", enabled=True))
    assert left == embed_tokenizer([LONG])["input_ids"][0][-32:]


def test_truncate_false_rejects_even_when_the_config_truncates(embed_tokenizer):
    from serving.engines.truncation import Truncation

    with pytest.raises(InputTooLongError, match="at most 32"):
        make_inputs(embed_tokenizer, max_model_len=32).tokenize([LONG], truncation=Truncation(enabled=False))


@pytest.mark.parametrize("truncation", [dict(max_tokens=65), dict(max_tokens=0), dict(max_tokens=5, enabled=False)])
def test_truncation_out_of_range_or_contradictory_is_an_input_error(embed_tokenizer, truncation):
    from serving.engines.truncation import Truncation

    with pytest.raises(EngineInputError):
        make_inputs(embed_tokenizer, max_model_len=64).tokenize(["a"], truncation=Truncation(**truncation))
