"""TextEncoder gives the HF tokenizer's ids, with and without truncation, on both tiny tokenizers."""

import pytest

from serving.engines.base import TextEncoder

TEXTS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "Unicode: naïve café, 東京, emoji 🚀, combining é",
    "special tokens in text: <|endoftext|> <|im_start|>user\nhi<|im_end|>",
    "tabs\tand\nnewlines\r\n",
    "x",
    "def f(a, b):\n    return a ** b  # code\n" * 20,
    "word " * 300,
]


@pytest.fixture(params=["embed", "rerank"])
def tokenizer(request, embed_tokenizer, rerank_tokenizer):
    return {"embed": embed_tokenizer, "rerank": rerank_tokenizer}[request.param]


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_ids_equal_the_hf_call(tokenizer, add_special_tokens):
    expected = tokenizer(TEXTS, add_special_tokens=add_special_tokens, truncation=False)["input_ids"]
    assert TextEncoder(tokenizer)(TEXTS, add_special_tokens=add_special_tokens) == expected


@pytest.mark.parametrize("max_length", [1, 2, 5, 64, 10_000])
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_truncation_equals_the_hf_call(tokenizer, max_length, add_special_tokens):
    expected = tokenizer(TEXTS, add_special_tokens=add_special_tokens, truncation=True,
                         max_length=max_length)["input_ids"]
    assert TextEncoder(tokenizer)(TEXTS, add_special_tokens=add_special_tokens, max_length=max_length) == expected


def test_one_text_alone_gives_the_same_ids_as_in_a_batch(tokenizer):
    encoder = TextEncoder(tokenizer)
    assert [encoder([text], max_length=64)[0] for text in TEXTS] == encoder(TEXTS, max_length=64)


def test_the_hf_tokenizers_truncation_state_does_not_leak_in(embed_tokenizer):
    encoder = TextEncoder(embed_tokenizer)
    embed_tokenizer(["word " * 300], truncation=True, max_length=8)  # leaves truncation on in its backend
    ids = encoder(["word " * 300])
    assert len(ids[0]) > 300 and ids == embed_tokenizer(["word " * 300])["input_ids"]


def test_a_tokenizer_without_a_rust_core_is_called_as_is(embed_tokenizer):
    class Slow:  # no backend_tokenizer: what a slow (Python) tokenizer offers
        def __call__(self, texts, **kwargs):
            return embed_tokenizer(texts, **kwargs)

    encoder = TextEncoder(Slow())
    assert encoder.core is None
    assert encoder(TEXTS, max_length=16) == embed_tokenizer(TEXTS, truncation=True, max_length=16)["input_ids"]
