"""The tiny models carry the real Qwen3 tokenizer: ids must match the real models'."""

from serving.models.tiny import QWEN3_ADDED_TOKENS


def test_yes_and_no_have_the_real_reranker_ids(rerank_tokenizer):
    assert rerank_tokenizer.encode("yes", add_special_tokens=False) == [9693]
    assert rerank_tokenizer.encode("no", add_special_tokens=False) == [2152]


def test_special_tokens_run_from_endoftext_to_end_think(rerank_tokenizer):
    ids = [rerank_tokenizer.convert_tokens_to_ids(t) for t in QWEN3_ADDED_TOKENS]
    assert ids == list(range(151643, 151669))
    assert len(rerank_tokenizer) == 151669


def test_known_qwen_token_ids(rerank_tokenizer):
    # Qwen2/Qwen3 ids of well-known strings; digits are split one by one.
    assert rerank_tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert rerank_tokenizer.encode("\n\n", add_special_tokens=False) == [271]
    assert rerank_tokenizer.encode("2024", add_special_tokens=False) == [17, 15, 17, 19]


def test_chat_markup_tokenizes_to_special_ids(rerank_tokenizer):
    ids = rerank_tokenizer.encode("<|im_start|>system\n<think>\n\n</think>\n\n", add_special_tokens=False)
    assert ids == [151644, 8948, 198, 151667, 271, 151668, 271]


def test_embedding_tokenizer_appends_endoftext(embed_tokenizer):
    assert embed_tokenizer("Hello world")["input_ids"] == [9707, 1879, 151643]


def test_reranker_tokenizer_appends_nothing(rerank_tokenizer):
    assert rerank_tokenizer("Hello world")["input_ids"] == [9707, 1879]


def test_round_trip_of_mixed_scripts(rerank_tokenizer):
    text = "北京 café 🚀 def f(x):\n\treturn x"
    assert rerank_tokenizer.decode(rerank_tokenizer.encode(text, add_special_tokens=False)) == text
