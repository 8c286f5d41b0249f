"""The engines' tokenize/decode (TEI's `/tokenize`, `/decode`) on the real tiny tokenizers, no vLLM."""

import pytest

from serving.engines.base import OwnsEngine
from serving.engines.errors import EngineInputError


class Model(OwnsEngine):
    def __init__(self, tokenizer, query_template=None):
        self.tokenizer, self.query_template = tokenizer, query_template

    def format_query(self, text):
        return self.query_template.format(text) if self.query_template else super().format_query(text)


def test_tokenize_gives_ids_pieces_and_character_spans(embed_tokenizer):
    [tokens] = Model(embed_tokenizer).tokenize(["Hello world"])
    assert tokens.ids == [9707, 1879, 151643] and tokens.pieces[-1] == "<|endoftext|>"
    assert tokens.spans == [(0, 5), (5, 11), None]


def test_tokenize_query_builds_the_prompt_and_other_models_refuse_it(embed_tokenizer, rerank_tokenizer):
    [tokens] = Model(embed_tokenizer, "Q:{}").tokenize(["hi"], input_type="query", add_special_tokens=False)
    assert tokens.text == "Q:hi" and tokens.ids == embed_tokenizer("Q:hi", add_special_tokens=False)["input_ids"]
    with pytest.raises(EngineInputError, match="embedding models only"):
        Model(rerank_tokenizer).tokenize(["hi"], input_type="query")


def test_decode_checks_ids_against_the_vocabulary(embed_tokenizer):
    model = Model(embed_tokenizer)
    assert model.decode([[9707, 1879, 151643]]) == ["Hello world"]
    assert model.decode([[9707, 151643]], skip_special_tokens=False) == ["Hello<|endoftext|>"]
    with pytest.raises(EngineInputError, match="not a token id"):
        model.decode([[-1]])
