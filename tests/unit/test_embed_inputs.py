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
